"""Typed settings: one source of truth read from defaults, a TOML file, env, then CLI.

Precedence (later wins): field defaults < ``--config FILE`` (TOML, flat keys or a
``[tilerouter]`` table) < ``TILEROUTER_<NAME>`` environment variables < command-line
flags ``--<name-with-dashes>``. A bad value fails at start naming the setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from config.errors import ConfigError
from config.lists import parse_cpu_list, parse_worker_range
from config.settings_check import FORMATS, POLICIES, validate  # noqa: F401  (re-exported)

ENV_PREFIX = "TILEROUTER_"


MAX_AUTO_GATEWAYS = 4


@dataclass(frozen=True)
class Settings:
    """Every knob of every component, with defaults that run the demo as-is."""

    # Slides
    slides: str = field(default="slides", metadata={
        "help": "slide root: a directory, s3://bucket/prefix or an http(s):// base URL"})
    stores: str = field(default="", metadata={
        "help": "named slide stores NAME=URL (repeat --store; ids become NAME/path; they "
                "replace --slides)", "flag": "--store", "repeat": True})
    s3_endpoint_url: str = field(default="", metadata={
        "help": "S3 endpoint ('' = AWS_ENDPOINT_URL or AWS's own)"})
    remote_cache_dir: str = field(default="", metadata={
        "help": "local folder for slides fetched whole from remote stores ('' = a folder "
                "in the system temp dir)"})
    remote_cache_bytes: int = field(default=20 * 1024 ** 3, metadata={
        "help": "bytes of fetched remote slides kept on disk (LRU)"})
    remote_timeout: float = field(default=10.0, metadata={
        "help": "seconds one remote call may take before it is retried"})
    remote_retries: int = field(default=3, metadata={
        "help": "retries of a failed remote call (with backoff) before 'unavailable'"})
    remote_mirror_bytes: int = field(default=512 * 1024 ** 2, metadata={
        "help": "bytes one remote slide read by ranges may hold on local disk before its "
                "fetched tiles are dropped (per open slide, per worker)"})
    remote_revalidate: float = field(default=30.0, metadata={
        "help": "seconds an open remote slide is trusted before its ETag is checked again"})
    dicomweb_token: str = field(default="", metadata={
        "help": "bearer token tilerouter sends to DICOMweb stores (a PACS); never logged"})
    dicomweb_user: str = field(default="", metadata={
        "help": "user for HTTP basic auth at DICOMweb stores (when no token is set)"})
    dicomweb_password: str = field(default="", metadata={
        "help": "password for dicomweb_user; never logged"})
    dicomweb_frame_cache_bytes: int = field(default=128 * 1024 ** 2, metadata={
        "help": "encoded DICOM frames fetched from DICOMweb stores kept per worker (LRU)"})
    tile_size: int = field(default=254, metadata={"help": "DeepZoom tile size (px)"})
    overlap: int = field(default=1, metadata={"help": "DeepZoom tile overlap (px)"})
    limit_bounds: bool = field(default=True, metadata={"help": "DeepZoom limit_bounds"})
    passthrough: bool = field(
        default=True, metadata={"help": "serve stored JPEG tiles as-is when geometry matches"}
    )
    tile_format: str = field(default="jpeg", metadata={"help": "default tile format"})
    tile_quality: int = field(default=75, metadata={"help": "JPEG quality 1-100"})
    # Endpoints
    frontend: str = field(
        default="tcp://127.0.0.1:5555", metadata={
            "help": "router endpoint for gateways (a router binds one; gateways connect to "
                    "every one of a comma-separated list; dns+tcp://NAME:PORT = every "
                    "address NAME resolves to)"})
    backend: str = field(
        default="tcp://127.0.0.1:5556", metadata={
            "help": "router endpoint for workers (comma-separated: a worker serves every "
                    "router listed; dns+tcp://NAME:PORT = every address NAME resolves to)"})
    router_dns_interval: float = field(default=5.0, metadata={
        "help": "seconds between re-resolving dns+tcp://NAME:PORT router endpoints"})
    routers: int = field(default=1, metadata={
        "help": "routers 'serve' starts; slides are sharded over them, any one may die"})
    host: str = field(default="127.0.0.1", metadata={"help": "gateway bind address"})
    gateways: int = field(
        default=0, metadata={"help": "gateway processes sharing the port (serve; 0 = one "
                                     "per core up to 4 with passthrough, else 1)"}
    )
    port: int = field(default=8080, metadata={"help": "gateway HTTP/websocket port"})
    stats_host: str = field(default="127.0.0.1", metadata={"help": "router stats bind address"})
    stats_port: int = field(default=8089, metadata={"help": "router stats HTTP port (0=off)"})
    # Workers
    workers: int = field(default=0, metadata={"help": "worker processes (0 = one per CPU of "
                                                       "worker_cpus, else per CPU); MIN:MAX "
                                                       "= an elastic pool"})
    workers_max: int = field(default=0, metadata={"help": "elastic pool's most workers (set "
                                                           "by --workers MIN:MAX; 0 = fixed)"})
    scale_up_wait: float = field(default=0.2, metadata={
        "help": "elastic pool: seconds a request may wait in a router before a worker starts"})
    worker_idle_exit: float = field(default=30.0, metadata={
        "help": "elastic pool: seconds a worker beyond MIN stays idle before it exits"})
    worker_capacity: int = field(default=2, metadata={"help": "requests in flight per worker"})
    worker_cpus: str = field(
        default="", metadata={"help": "CPUs the workers run on, e.g. '1' or '2-3,5' ('' = any); "
                                      "serve keeps the router and gateways off them"}
    )
    reader_cache_size: int = field(default=16, metadata={"help": "open slides per worker"})
    tile_cache_bytes: int = field(
        default=256 * 1024 * 1024, metadata={"help": "encoded-tile cache per worker (bytes)"}
    )
    openslide_cache_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "shared OpenSlide cache per worker"}
    )
    decoded_cache_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "decoded stored JPEG tiles per worker, "
                                                    "cut into tiles by Pillow (0 = render "
                                                    "every tile through OpenSlide)"}
    )
    open_latency: float = field(
        default=0.0, metadata={"help": "extra seconds per slide open (benchmarks: slow storage)"}
    )
    bench_tiles_by_position: bool = field(
        default=False, metadata={"help": "benchmarks only: the tile cache keys tiles by "
                                         "level/col/row/format alone, so every slide id (copies "
                                         "of one slide) shares them and a render is rare"}
    )
    # Routing and liveness
    policy: str = field(default="cache-aware", metadata={"help": "routing policy"})
    request_timeout: float = field(default=15.0, metadata={"help": "request deadline (s)"})
    heartbeat_interval: float = field(default=1.0, metadata={"help": "heartbeat period (s)"})
    heartbeat_liveness: int = field(default=3, metadata={"help": "missed beats before dead"})
    max_queue: int = field(default=10000, metadata={"help": "requests waiting in the router"})
    max_retries: int = field(default=1, metadata={"help": "re-sends after a worker dies"})
    max_affinity_wait: float = field(
        default=0.1, metadata={"help": "cache-aware: seconds a request may wait longer than "
                                     "the freed worker's own oldest, for affinity"}
    )
    prefetch: bool = field(
        default=True, metadata={"help": "idle workers render neighbours of requested tiles"}
    )
    drain_timeout: float = field(
        default=5.0, metadata={"help": "seconds to finish in-flight work on SIGTERM"}
    )
    # Gateway limits
    max_inflight_per_connection: int = field(
        default=64, metadata={"help": "requests in flight per websocket"}
    )
    max_message_bytes: int = field(
        default=4096, metadata={"help": "largest accepted websocket message"}
    )
    max_associated_size: int = field(
        default=1024, metadata={"help": "largest thumbnail/associated edge (px)"}
    )
    iiif_max_area: int = field(
        default=4096 * 4096, metadata={"help": "largest IIIF output (width x height pixels)"}
    )
    gateway_stored_tiles: bool = field(
        default=True, metadata={"help": "gateway reads passthrough tiles itself when it can "
                                        "see the slide root"}
    )
    gateway_cache_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "hot-tile cache in the gateway (0=off)"}
    )
    max_requests_per_second: float = field(
        default=2000.0, metadata={"help": "per websocket request rate limit (0 = off)"}
    )
    allowed_origins: str = field(
        default="", metadata={"help": "extra websocket Origins allowed, comma-separated"}
    )
    auth_token: str = field(default="", metadata={"help": "static bearer token ('' = off)"})
    auth_secret: str = field(
        default="", metadata={"help": "HMAC secret for signed tokens ('' = off)"}
    )
    tls_cert: str = field(default="", metadata={"help": "gateway TLS certificate (PEM)"})
    tls_key: str = field(default="", metadata={"help": "gateway TLS private key (PEM)"})
    curve_secret_key: str = field(
        default="", metadata={"help": "own CURVE .key_secret file ('' = no encryption)"}
    )
    curve_server_key: str = field(
        default="", metadata={"help": "router's CURVE public .key file (workers, gateways)"}
    )
    curve_authorized_keys: str = field(
        default="", metadata={"help": "directory of client public keys the router admits"}
    )
    viewer_assets: str = field(
        default="", metadata={"help": "OpenSeadragon build dir ('' = ./node_modules)"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})
    log_format: str = field(default="text", metadata={"help": "text or json (one per line)"})
    metrics_dir: str = field(default="", metadata={"help": "gateways' shared /metrics folder"})

    def __post_init__(self) -> None:
        validate(self)

    @property
    def worker_count(self) -> int:
        return self.workers or len(self.worker_cpu_set) or os.cpu_count() or 1

    @property
    def worker_max(self) -> int:
        """Most workers a launcher runs: ``worker_count`` unless the pool is elastic."""
        return max(self.workers_max, self.worker_count)

    @property
    def gateway_count(self) -> int:
        """Gateway processes for ``serve`` when not configured.

        With stored-tile passthrough (overlap 0) the gateways read most tiles themselves,
        so their processes set the ceiling: one per core, up to 4 (2 cores: 9.9k -> 16k
        distinct tiles/s). When workers render (overlap > 0) one gateway leaves them the
        cores: a second cost 10% of the render throughput (760 -> 680 tiles/s).
        """
        if self.gateways:
            return self.gateways
        if self.passthrough and self.gateway_stored_tiles and self.overlap == 0:
            # the cores left to them when the workers have their own (worker_cpus)
            cores = (os.cpu_count() or 1) - len(self.worker_cpu_set)
            return max(1, min(cores, MAX_AUTO_GATEWAYS))
        return 1

    @property
    def worker_cpu_set(self) -> frozenset[int]:
        """The CPUs of ``worker_cpus`` (empty: the kernel places workers anywhere)."""
        return parse_cpu_list(self.worker_cpus)

    @property
    def heartbeat_expiry(self) -> float:
        return self.heartbeat_interval * self.heartbeat_liveness

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """Environment that makes a child process load exactly these settings."""
        return {ENV_PREFIX + f.name.upper(): _format(getattr(self, f.name)) for f in fields(self)}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _coerce(name: str, kind: type, raw: Any) -> Any:
    """Turn a TOML/env/CLI value into the field's type, or fail naming the setting."""
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if isinstance(raw, list) and name == "stores":  # --store repeated, or a TOML list
            return ",".join(str(item) for item in raw)
        if isinstance(raw, (dict, list)):
            raise ValueError(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting '{name}': expected {kind.__name__}, got {raw!r}"
        ) from None


def _put(values: dict[str, Any], name: str, kind: type, raw: Any) -> None:
    """One source's value; ``workers`` may be ``MIN:MAX`` (an elastic pool: both fields),
    and a plain ``N`` from a later source means a fixed pool again."""
    if name == "workers" and isinstance(raw, str) and ":" in raw:
        try:
            values["workers"], values["workers_max"] = parse_worker_range(raw)
        except ValueError:
            raise ConfigError(f"setting 'workers': expected N or MIN:MAX with 1 <= MIN <= "
                              f"MAX, got {raw!r}") from None
        return
    values[name] = _coerce(name, kind, raw)
    if name == "workers":
        values["workers_max"] = 0


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _field_types() -> dict[str, type]:
    return {f.name: _TYPES[f.type] if isinstance(f.type, str) else f.type for f in fields(Settings)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one ``--<name>`` flag per setting (default: unset)."""
    parser.add_argument("--config", help="TOML settings file")
    for f in fields(Settings):
        flags = ["--" + f.name.replace("_", "-")]
        if "flag" in f.metadata:
            flags.insert(0, f.metadata["flag"])
        parser.add_argument(*flags, dest=f.name, default=None, help=f.metadata.get("help"),
                            action="append" if f.metadata.get("repeat") else "store")


def load_settings(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge file < env < args into a validated Settings."""
    env = os.environ if env is None else env
    arg_map: dict[str, Any] = dict(
        vars(args) if isinstance(args, argparse.Namespace) else args or {})
    config_file = arg_map.pop("config", None) or config_file or env.get(ENV_PREFIX + "CONFIG")
    types = _field_types()
    values: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_file!r}: {exc}") from None
        data = data.get("tilerouter", data)
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in types:
                raise ConfigError(f"config file {config_file!r}: unknown setting '{key}'")
            _put(values, name, types[name], raw)
    for name, kind in types.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            _put(values, name, kind, raw)
    for name, raw in arg_map.items():
        if raw is not None and name in types:
            _put(values, name, types[name], raw)
    return Settings(**values)


def parse_cli(
    description: str, argv: Sequence[str] | None = None, extra: Any = None
) -> tuple[Settings, argparse.Namespace]:
    """Standard entry-point parsing: settings flags plus ``extra(parser)`` additions."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    if extra is not None:
        extra(parser)
    ns = parser.parse_args(argv)
    known = {f.name for f in fields(Settings)} | {"config"}
    try:
        settings = load_settings({k: v for k, v in vars(ns).items() if k in known})
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return settings, ns
