"""The systemd examples (scripts/deploy/systemd): every unit, router instance and
several-router drop-in runs a real tilerouter command with flags its settings parser
accepts, stops by SIGTERM within a bound above the drain, restarts on failure, runs
unprivileged and hardened; and ``systemd-analyze verify`` finds nothing to say about
them where that binary exists. (Not run under a real systemd here.)"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.lists import endpoint_list
from tests.deploy_checks import (
    DEPLOY,
    DNS_SCHEME,
    check_command,
    endpoint_host,
    endpoint_port,
    parse_flags,
)

SYSTEMD = DEPLOY / "systemd"
INSTALLED = "/opt/tilerouter/.venv/bin/"  # where the units expect the virtualenv
ETC = "/etc/tilerouter/"
VARIANTS = ("routers-list", "routers-dns")
TEMPLATE = "tilerouter-router@.service"
INSTANCES = sorted(int(p.stem.split("-")[1]) for p in SYSTEMD.glob("router-*.env"))

Unit = dict[str, list[tuple[str, str]]]  # section -> (key, value) in file order


def read_unit(*paths: Path) -> Unit:
    """A unit file and its drop-ins, merged in order (systemd's own rule for lists)."""
    unit: Unit = {}
    for path in paths:
        section = ""
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            assert sep and section, f"{path}: not KEY=VALUE in a section: {line!r}"
            unit.setdefault(section, []).append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    """Every value of ``key``; an empty assignment resets the list (ExecStart=)."""
    found: list[str] = []
    for k, v in unit.get(section, []):
        if k == key:
            found = [] if v == "" else [*found, v]
    return found


def one(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= missing"
    return found[-1]


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def specifiers(text: str, instance: str) -> str:
    table = {"i": instance, "I": instance, "C": "/var/cache", "%": "%"}
    return re.sub(r"%(.)", lambda m: table[m.group(1)], text)


def unit_command(unit: Unit, instance: str = "") -> tuple[list[str], dict[str, str], str]:
    """The effective ExecStart as argv, its environment, and its TOML config in the repo."""
    env: dict[str, str] = {}
    for value in values(unit, "Service", "Environment"):
        for item in shlex.split(specifiers(value, instance)):
            key, _, val = item.partition("=")
            env[key] = val
    for value in values(unit, "Service", "EnvironmentFile"):
        path = specifiers(value, instance).lstrip("-")
        assert path.startswith(ETC), path
        env.update(read_env_file(SYSTEMD / path.removeprefix(ETC)))
    execs = values(unit, "Service", "ExecStart")
    assert len(execs) == 1, f"one effective ExecStart, got {execs}"
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], specifiers(execs[0], instance))
    argv = shlex.split(line)
    assert argv[0].startswith(INSTALLED), argv[0]
    config = env.pop("TILEROUTER_CONFIG")
    assert config == ETC + "tilerouter.toml"
    return argv, env, str(DEPLOY / "tilerouter.toml")


def cases() -> list[tuple[str, list[Path], str]]:
    """(name, unit file + drop-ins, instance) for every way the examples are installed."""
    out = [(p.name, [p], "") for p in sorted(SYSTEMD.glob("*.service")) if p.name != TEMPLATE]
    out += [(f"tilerouter-router@{i}", [SYSTEMD / TEMPLATE], str(i)) for i in INSTANCES]
    for variant in VARIANTS:
        for dropin in sorted((SYSTEMD / variant).glob("*.service.d/*.conf")):
            base = SYSTEMD / dropin.parent.name.removesuffix(".d")
            out.append((f"{variant}/{base.name}", [base, dropin], ""))
    return out


CASES = cases()


def test_the_examples_are_all_there() -> None:
    """Guards the discovery above: a renamed folder must not silently test nothing."""
    names = {name for name, _, _ in CASES}
    assert len(INSTANCES) >= 2 and (SYSTEMD / TEMPLATE).is_file()
    for variant in VARIANTS:
        for base in ("tilerouter-workers.service", "tilerouter-gateway.service"):
            assert f"{variant}/{base}" in names


@pytest.mark.parametrize(("name", "paths", "instance"), CASES, ids=[c[0] for c in CASES])
def test_unit_runs_a_real_command_and_stops_cleanly(name: str, paths: list[Path],
                                                    instance: str) -> None:
    unit = read_unit(*paths)
    argv, env, config = unit_command(unit, instance)
    settings = check_command(argv, env, config)
    service = dict(unit["Service"])  # last value of each key
    assert service["User"] not in ("", "root", "0") and service["Group"]
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    # the drain (drain_timeout) ends, with a second to spare, before systemd's SIGKILL
    assert float(service["TimeoutStopSec"]) > settings.drain_timeout + 1
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process; it stops its own
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                      ("CapabilityBoundingSet", ""), ("SystemCallFilter", "@system-service")):
        assert service.get(key) == want, (name, key)


def test_router_instances_do_not_collide() -> None:
    seen: set[int] = set()
    for i in INSTANCES:
        argv, env, config = unit_command(read_unit(SYSTEMD / TEMPLATE), str(i))
        s = check_command(argv, env, config)
        ports = {endpoint_port(s.frontend), endpoint_port(s.backend), s.stats_port}
        assert len(ports) == 3 and not ports & seen, f"router@{i} reuses a port"
        seen |= ports


def _router_ports(instance: int) -> tuple[int, int]:
    env = read_env_file(SYSTEMD / f"router-{instance}.env")
    return endpoint_port(env["ROUTER_FRONTEND"]), endpoint_port(env["ROUTER_BACKEND"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_dropins_name_the_routers_of_the_examples(variant: str) -> None:
    """Workers and gateways list the same routers, router i's frontend and backend
    together at the ports a tilerouter-router@ instance binds."""
    lists = []
    for base in ("tilerouter-workers.service", "tilerouter-gateway.service"):
        dropin = SYSTEMD / variant / f"{base}.d" / "routers.conf"
        argv, _, _ = unit_command(read_unit(SYSTEMD / base, dropin))
        ns = parse_flags(argv)
        lists.append((endpoint_list(ns.frontend), endpoint_list(ns.backend)))
    assert lists[0] == lists[1]
    frontends, backends = lists[0]
    assert len(frontends) == len(backends)
    known = {_router_ports(i) for i in INSTANCES}
    for front, back in zip(frontends, backends, strict=True):
        assert endpoint_host(front) == endpoint_host(back)
        assert (endpoint_port(front), endpoint_port(back)) in known
        assert front.startswith(DNS_SCHEME) == (variant == "routers-dns")
    assert len(frontends) == (1 if variant == "routers-dns" else 3)


def _installable_copy(paths: list[Path], into: Path, name: str) -> Path:
    """A unit (and its drop-ins) as it would be installed, the ExecStart pointing at this
    checkout's virtualenv so that verify finds the command; returns the unit's path."""
    unit = into / name
    for path in paths:
        target = unit if path.suffix == ".service" else into / f"{name}.d" / path.name
        target.parent.mkdir(exist_ok=True)
        target.write_text(path.read_text().replace(INSTALLED, str(Path(sys.prefix) / "bin") + "/"))
    return unit


def _verify(unit: Path) -> str:
    """systemd-analyze's complaints: it exits 0 on unknown keys and bad values, so any
    output on stderr counts."""
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60, cwd=unit.parent)
    return f"exit {run.returncode}: {run.stderr}" if run.returncode or run.stderr else ""


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian: package systemd); the parser checks "
           "above still ran")


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    failures = []
    for n, (name, paths, instance) in enumerate(CASES):
        folder = tmp_path / str(n)
        folder.mkdir()
        unit_name = paths[0].name.replace("@.", f"@{instance}.") if instance else paths[0].name
        complaint = _verify(_installable_copy(paths, folder, unit_name))
        if complaint:
            failures.append(f"{name}: {complaint}")
    assert not failures, "\n".join(failures)


@needs_analyze
def test_systemd_analyze_catches_a_misspelt_key(tmp_path: Path) -> None:
    """The control for the test above: a broken copy must be reported."""
    unit = _installable_copy([SYSTEMD / TEMPLATE], tmp_path, "tilerouter-router@1.service")
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restrat=on-failure"))
    assert "Restrat" in _verify(unit)
