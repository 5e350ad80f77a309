"""The checks every Settings passes at construction (kept apart so the field list can grow)."""

from __future__ import annotations

import os
from typing import Any

from config.endpoints import parse_dns_endpoint, uses_dns
from config.errors import ConfigError
from config.lists import STORE_NAME, endpoint_list, parse_cpu_list, store_entries

POLICIES = ("cache-aware", "round-robin", "least-loaded")
FORMATS = ("jpeg", "png")


def validate(s: Any) -> None:
    """Fail at start, naming the setting, on any value the components cannot run with."""
    def need(ok: bool, name: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"setting '{name}': {why} (got {getattr(s, name)!r})")

    need(s.tile_size >= 16 and s.tile_size <= 4096, "tile_size", "must be 16..4096")
    need(0 <= s.overlap <= 64, "overlap", "must be 0..64")
    need(s.tile_format in FORMATS, "tile_format", f"must be one of {FORMATS}")
    need(1 <= s.tile_quality <= 100, "tile_quality", "must be 1..100")
    need(0 <= s.port <= 65535, "port", "must be 0..65535")
    need(0 <= s.stats_port <= 65535, "stats_port", "must be 0..65535")
    need(s.workers >= 0, "workers", "must be >= 0")
    need(s.workers_max == 0 or s.workers_max >= max(1, s.workers), "workers_max",
         "must be 0 (fixed pool) or >= workers (MIN:MAX)")
    need(0 < s.scale_up_wait <= 60, "scale_up_wait", "must be in (0, 60]")
    need(0 < s.worker_idle_exit <= 86400, "worker_idle_exit", "must be in (0, 86400]")
    need(0 <= s.gateways <= 64, "gateways", "must be 0..64")
    need(s.worker_capacity >= 1, "worker_capacity", "must be >= 1")
    try:
        cpus = parse_cpu_list(s.worker_cpus)
    except ValueError:
        cpus = None
    need(cpus is not None, "worker_cpus", "must be a CPU list like '1' or '0-3,6'")
    need(cpus is None or cpus <= frozenset(range(os.cpu_count() or 1)), "worker_cpus",
         f"this machine has CPUs 0..{(os.cpu_count() or 1) - 1}")
    need(s.reader_cache_size >= 1, "reader_cache_size", "must be >= 1")
    need(s.tile_cache_bytes >= 0, "tile_cache_bytes", "must be >= 0")
    need(s.openslide_cache_bytes >= 0, "openslide_cache_bytes", "must be >= 0")
    need(s.decoded_cache_bytes >= 0, "decoded_cache_bytes", "must be >= 0")
    need(0 <= s.open_latency <= 60, "open_latency", "must be 0..60")
    need(not s.bench_tiles_by_position or s.tile_cache_bytes > 0, "bench_tiles_by_position",
         "needs a tile cache (tile_cache_bytes > 0)")
    need(s.remote_cache_bytes > 0, "remote_cache_bytes", "must be > 0")
    need(0 < s.remote_timeout <= 600, "remote_timeout", "must be in (0, 600]")
    need(0 <= s.remote_retries <= 10, "remote_retries", "must be 0..10")
    need(s.remote_mirror_bytes > 0, "remote_mirror_bytes", "must be > 0")
    need(s.remote_revalidate >= 0, "remote_revalidate", "must be >= 0")
    need(s.dicomweb_frame_cache_bytes >= 0, "dicomweb_frame_cache_bytes", "must be >= 0")
    for entry in store_entries(s.stores):
        name, sep, url = entry.partition("=")
        need(bool(sep) and STORE_NAME.fullmatch(name) is not None and bool(url), "stores",
             f"{entry!r} is not NAME=URL (NAME: letters, digits, '-', '_')")
    need(s.policy in POLICIES, "policy", f"must be one of {POLICIES}")
    need(s.request_timeout > 0, "request_timeout", "must be > 0")
    need(s.heartbeat_interval > 0, "heartbeat_interval", "must be > 0")
    need(s.heartbeat_liveness >= 1, "heartbeat_liveness", "must be >= 1")
    need(s.max_queue >= 1, "max_queue", "must be >= 1")
    need(s.max_retries >= 0, "max_retries", "must be >= 0")
    need(0 <= s.drain_timeout <= 300, "drain_timeout", "must be 0..300")
    need(0 <= s.max_affinity_wait <= 60, "max_affinity_wait", "must be 0..60")
    need(s.max_inflight_per_connection >= 1, "max_inflight_per_connection", "must be >= 1")
    need(s.max_message_bytes >= 256, "max_message_bytes", "must be >= 256")
    need(s.max_associated_size >= 16, "max_associated_size", "must be >= 16")
    need(s.tile_size ** 2 <= s.iiif_max_area <= 1 << 31, "iiif_max_area",
         "must be tile_size squared .. 2**31")
    need(s.gateway_cache_bytes >= 0, "gateway_cache_bytes", "must be >= 0")
    need(s.max_requests_per_second >= 0, "max_requests_per_second", "must be >= 0")
    need(bool(s.tls_cert) == bool(s.tls_key), "tls_key", "tls_cert and tls_key go together")
    for name in ("frontend", "backend"):
        eps = endpoint_list(getattr(s, name))
        need(bool(eps), name, "must name at least one endpoint")
        for ep in eps:
            scheme, sep, rest = ep.partition("://")
            need(bool(sep and rest) and scheme in ("tcp", "ipc", "inproc", "dns+tcp"), name,
                 "must be tcp://HOST:PORT, ipc://PATH or dns+tcp://NAME:PORT "
                 "(comma-separated for several)")
            try:
                parse_dns_endpoint(ep)
            except ValueError as exc:
                need(False, name, str(exc))
    # gateways read only frontend and workers only backend, so one side may be left at
    # its one-entry default; two lists given (a shared config file) must pair up
    fronts, backs = len(endpoint_list(s.frontend)), len(endpoint_list(s.backend))
    if not uses_dns(s.frontend) and not uses_dns(s.backend) and min(fronts, backs) > 1:
        need(fronts == backs, "backend", "must list as many routers as frontend")
    need(0 < s.router_dns_interval <= 3600, "router_dns_interval", "must be in (0, 3600]")
    need(1 <= s.routers <= 16, "routers", "must be 1..16")
    need(s.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "log_level", "bad level")
    need(s.log_format in ("text", "json"), "log_format", "must be text or json")
