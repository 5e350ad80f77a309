"""Router endpoints named by DNS (config/endpoints.py), resolved for real: literal
addresses and localhost here; a name whose addresses change, and then stops resolving,
through a hosts file bind-mounted in a private mount namespace
(scripts/benchlib/hosts_file.py, root only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zmq

from config.endpoints import (
    RouterEndpoints,
    changes,
    parse_dns_endpoint,
    resolve_name,
    uses_dns,
    wants_ipv6,
)
from config.errors import ConfigError
from config.settings import Settings
from scripts.benchlib.hosts_file import HostsFile, unavailable_reason
from tests.helpers import REPO


def test_parse() -> None:
    assert parse_dns_endpoint("dns+tcp://routers.ns.svc:5555") == ("routers.ns.svc", 5555)
    assert parse_dns_endpoint("dns+tcp://[::1]:7") == ("::1", 7)
    assert parse_dns_endpoint("tcp://routers:5555") is None
    for bad in ("dns+tcp://routers", "dns+tcp://:5555", "dns+tcp://r:0", "dns+tcp://r:x",
                "dns+tcp://r:70000"):
        with pytest.raises(ValueError):
            parse_dns_endpoint(bad)
    assert uses_dns("tcp://a:1, dns+tcp://b:2") and not uses_dns("tcp://a:1,ipc:///x")


def test_literal_addresses_ipv6_in_brackets() -> None:
    assert resolve_name("127.0.0.1", 5555) == ["tcp://127.0.0.1:5555"]
    assert resolve_name("::1", 5555) == ["tcp://[::1]:5555"]
    assert wants_ipv6("tcp://[::1]:5555") and not wants_ipv6("tcp://127.0.0.1:5555")


def test_list_mixes_forms_sorted_and_deduplicated() -> None:
    # localhost resolves to 127.0.0.1 (and ::1 where the hosts file says so): it and the
    # literal entries collapse to one router each, IPv4 first, in setting order
    eps = RouterEndpoints("tcp://10.0.0.9:5555, dns+tcp://[::1]:5555, dns+tcp://localhost:5555,"
                          "dns+tcp://127.0.0.1:5555, ipc:///tmp/r.ipc")
    assert eps.dynamic
    assert eps.current() == ["tcp://10.0.0.9:5555", "ipc:///tmp/r.ipc"]  # before resolving
    got = eps.resolve()
    assert got[:2] == ["tcp://10.0.0.9:5555", "tcp://[::1]:5555"]
    assert "tcp://127.0.0.1:5555" in got and got[-1] == "ipc:///tmp/r.ipc"
    assert len(got) == len(set(got))
    assert resolve_name("localhost", 1) == ["tcp://127.0.0.1:1"]  # not also [::1]
    assert not RouterEndpoints("tcp://a:1,tcp://b:2").dynamic
    assert RouterEndpoints("tcp://a:1,tcp://b:2").resolve() == ["tcp://a:1", "tcp://b:2"]


def test_changes() -> None:
    assert changes(["a", "b"], ["b", "c"]) == (["c"], ["a"])
    assert changes(["a"], ["a"]) == ([], [])


def test_settings_check_mixes_forms() -> None:
    # a name's router count varies: no "as many frontends as backends" check then
    Settings(frontend="dns+tcp://routers:5555", backend="tcp://a:1,tcp://b:1")
    Settings(frontend="tcp://a:1,dns+tcp://routers:5555", backend="dns+tcp://routers:5556",
             router_dns_interval=0.5)
    with pytest.raises(ConfigError, match="as many routers"):
        Settings(frontend="tcp://a:1,tcp://b:1", backend="tcp://a:2,tcp://b:2,tcp://c:2")
    # a worker given only its backend list (frontend left at the one-entry default)
    Settings(backend="tcp://r1:5556,tcp://r2:5556,tcp://r3:5556")
    Settings(frontend="tcp://r1:5555,tcp://r2:5555")  # and a gateway its frontend list
    with pytest.raises(ConfigError, match="frontend"):
        Settings(frontend="dns+tcp://routers")
    with pytest.raises(ConfigError, match="router_dns_interval"):
        Settings(router_dns_interval=0)


def test_router_refuses_to_bind_a_name() -> None:
    from router.sockets import bind_endpoint

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        with pytest.raises(ConfigError, match="binds tcp://"):
            bind_endpoint(sock, "dns+tcp://routers:5555")
        assert bind_endpoint(sock, "tcp://[::1]:*").startswith("tcp://[::1]:")
    finally:
        sock.close(linger=0)
        ctx.term()


# run in a mount namespace whose /etc/hosts is the test's file: prints each round's set
_PROBE = textwrap.dedent("""
    import json, sys
    from config.endpoints import RouterEndpoints
    eps = RouterEndpoints("dns+tcp://routers.tilerouter.test:5555")
    for line in sys.stdin:
        print(json.dumps(eps.resolve()), flush=True)
""")


def test_a_name_that_changes_then_fails_keeps_its_last_set(tmp_path: Path) -> None:
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    hosts = HostsFile(tmp_path, "routers.tilerouter.test")
    hosts.set("127.0.0.3", "127.0.0.2", "::1", "127.0.0.2")
    proc = subprocess.Popen(hosts.wrap([sys.executable, "-c", _PROBE]), cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def round_() -> list[str]:
        proc.stdin.write("\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    try:
        # one family: a dual-stack router is one router (IPv4 kept), not two
        assert round_() == ["tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555"]
        hosts.set("::1")
        assert round_() == ["tcp://[::1]:5555"]  # IPv6 only: its IPv6 address
        hosts.set("127.0.0.3")
        assert round_() == ["tcp://127.0.0.3:5555"]
        hosts.set()  # the name no longer resolves: the last set stays
        assert round_() == ["tcp://127.0.0.3:5555"]
        assert round_() == ["tcp://127.0.0.3:5555"]
        hosts.set("127.0.0.4")
        assert round_() == ["tcp://127.0.0.4:5555"]
    finally:
        proc.stdin.close()
        proc.wait(10)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err
    assert err.count("cannot resolve") == 1, err  # logged once for the whole outage


def test_a_join_or_leave_moves_only_that_routers_slides() -> None:
    from wsgateway.router_pool import rendezvous_order

    def first(endpoints: list[str]) -> dict[str, str]:
        return {s: endpoints[rendezvous_order(s, endpoints)[0]] for s in slides}

    slides = [f"folder/slide-{i}.svs" for i in range(2000)]
    three = ["tcp://10.0.0.1:5555", "tcp://10.0.0.3:5555", "tcp://10.0.0.4:5555"]
    four = sorted([*three, "tcp://10.0.0.2:5555"])  # joins in the middle of the sorted set
    before, after = first(three), first(four)
    moved = [s for s in slides if before[s] != after[s]]
    assert all(after[s] == "tcp://10.0.0.2:5555" for s in moved)
    assert 0.15 < len(moved) / len(slides) < 0.35  # about its fair quarter
    left = first([e for e in four if e != "tcp://10.0.0.3:5555"])
    assert all(left[s] == after[s] for s in slides if after[s] != "tcp://10.0.0.3:5555")
