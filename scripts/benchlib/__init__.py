"""Helpers of the benchmark scripts: slide sets, traces, server and other child processes,
load generation, /proc CPU accounting, reports; ``peers_*`` for bench_peers.py, ``soak_*``
for soak.py, ``system`` (router, workers and gateway as separate processes) for soak.py and
the tests."""
