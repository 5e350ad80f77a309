"""``tilerouter serve`` / ``tilerouter demo``: the whole system on this machine.

Starts router + N workers + gateway as supervised child processes (router
endpoints on private ipc:// paths unless given), prints the viewer URL, and stops
everything on Ctrl-C/SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
import webbrowser
from collections.abc import Sequence

from config.errors import ConfigError
from config.lists import endpoint_list
from config.logs import setup_logging
from config.settings import Settings, add_arguments, load_settings
from readers.mounts import missing_local_roots
from workers import oneshot
from workers.launcher import (
    Child,
    Supervisor,
    component_argv,
    other_cpus,
    worker_children,
    worker_cpus_usable,
    worker_pool,
)

log = logging.getLogger(__name__)

DEMO_DIR = "demo-slides"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def system_children(settings: Settings) -> list[Child]:
    count = settings.gateway_count
    # children get the resolved count: a gateway shares its port only when told to
    env = {**os.environ, **settings.replace(gateways=count).to_env()}
    rest = other_cpus(settings)
    gateways = [Child(f"gateway-{i}" if count > 1 else "gateway",
                      component_argv("wsgateway.cli"), env, cpus=rest) for i in range(count)]
    fronts, backs = endpoint_list(settings.frontend), endpoint_list(settings.backend)
    routers = []
    for i, (front, back) in enumerate(zip(fronts, backs, strict=True)):
        stats = settings.stats_port + i if settings.stats_port else 0
        routers.append(Child(
            f"router-{i}" if len(fronts) > 1 else "router", component_argv("router.cli"),
            {**env, **settings.replace(frontend=front, backend=back, stats_port=stats).to_env()},
            cpus=rest))
    return [*routers, *worker_children(settings), *gateways]


def wait_ready(url: str, timeout: float = 60.0, supervisor: Supervisor | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor is not None and supervisor.stop_event.is_set():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        if supervisor is not None:
            supervisor.poll()
        time.sleep(0.1)
    return False


def serve(settings: Settings, open_browser: bool = False) -> int:
    missing = missing_local_roots(settings)
    if missing:
        log.error("slide directory %r does not exist", missing[0])
        return 2
    if not worker_cpus_usable(settings):
        return 2
    rundir = None
    defaults = Settings()
    if settings.frontend == defaults.frontend and settings.backend == defaults.backend:
        rundir = tempfile.mkdtemp(prefix="tilerouter-")
        n = range(settings.routers)
        settings = settings.replace(
            frontend=",".join(f"ipc://{rundir}/frontend-{i}.ipc" for i in n),
            backend=",".join(f"ipc://{rundir}/backend-{i}.ipc" for i in n))
    if settings.port == 0:
        settings = settings.replace(port=free_port(settings.host))
    metrics_dir = None
    if not settings.metrics_dir:  # gateways sharing the port sum their metrics through it
        metrics_dir = tempfile.mkdtemp(prefix="tilerouter-metrics-")
        settings = settings.replace(metrics_dir=metrics_dir)
    supervisor = Supervisor(system_children(settings), pool=worker_pool(settings))
    supervisor.install_signal_handlers()
    supervisor.start()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/"
    try:
        if wait_ready(url + "healthz", supervisor=supervisor):
            log.info("tilerouter is serving %s with %d workers", settings.slides,
                     settings.worker_count)
            sys.stdout.write(f"\n  tilerouter viewer: {url}\n\n")
            sys.stdout.flush()
            if open_browser and (os.environ.get("DISPLAY") or sys.platform == "darwin"):
                webbrowser.open(url)
        while not supervisor.stop_event.wait(0.1):
            supervisor.poll()
    finally:
        supervisor.stop()
        if rundir:
            shutil.rmtree(rundir, ignore_errors=True)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def ensure_demo_slides(directory: str) -> None:
    from readers.demo_slide import write_demo_slide

    os.makedirs(os.path.join(directory, "more"), exist_ok=True)
    wanted = [("demo.svs", 20000, 15000, 0, True),
              (os.path.join("more", "small.tiff"), 6000, 4500, 7, False)]
    for name, width, height, seed, aperio in wanted:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            log.info("generating demo slide %s (%dx%d)...", path, width, height)
            write_demo_slide(path, width, height, seed=seed, aperio=aperio)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilerouter", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="make CURVE key pairs for router, worker, gateway")
    keys.add_argument("directory")
    oneshot.add_subcommands(sub)  # tile, info: no server
    for name, help_text in (("serve", "serve a slide directory"),
                            ("demo", "generate the demo slide if missing, then serve it")):
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.add_argument("--no-browser", action="store_true", help="do not open a browser")
        if name == "demo":
            p.add_argument("--s3", action="store_true",
                           help="serve the demo slides from a local S3 server (moto)")
    ns = parser.parse_args(argv)
    if ns.command in oneshot.COMMANDS:
        return oneshot.run(ns)
    if ns.command == "keys":
        from router.curve import make_keys

        make_keys(ns.directory)
        sys.stdout.write(f"CURVE keys written to {ns.directory} (clients authorised in "
                         f"{os.path.join(ns.directory, 'authorized')})\n")
        return 0
    values = {k: v for k, v in vars(ns).items() if k not in ("command", "no_browser", "s3")}
    if ns.command == "demo" and values.get("slides") is None:
        values["slides"] = DEMO_DIR
    try:
        settings = load_settings(values)
    except ConfigError as exc:
        parser.exit(2, f"tilerouter: error: {exc}\n")
    setup_logging(settings.log_level, "tilerouter", settings.log_format)
    open_browser = ns.command == "demo" and not ns.no_browser
    if ns.command == "demo":
        ensure_demo_slides(settings.slides)
    if ns.command == "demo" and ns.s3:
        from workers.demo_s3 import demo_bucket

        try:
            with demo_bucket(settings.slides) as (url, endpoint):
                return serve(settings.replace(slides=url, s3_endpoint_url=endpoint),
                             open_browser=open_browser)
        except ConfigError as exc:
            parser.exit(2, f"tilerouter: error: {exc}\n")
    return serve(settings, open_browser=open_browser)


if __name__ == "__main__":
    raise SystemExit(main())
