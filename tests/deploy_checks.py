"""Shared by the deployment-example tests (systemd units, Kubernetes manifests): run a
command line from an example through tilerouter's real settings parser, so an example
with a misspelt flag, a bad value or mismatched router lists fails a test, not a rollout.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import Settings, add_arguments, load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "scripts" / "deploy"
DNS_SCHEME = "dns+tcp://"


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: command name -> ``module:function``."""
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["scripts"]


# the component commands: each parses exactly the settings flags (config.settings.parse_cli)
COMPONENTS = ("tilerouter-router", "tilerouter-worker", "tilerouter-workers",
              "tilerouter-gateway")


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    """The flags of ``argv[1:]`` as the component's parser reads them (no validation)."""
    parser = argparse.ArgumentParser(prog=argv[0], exit_on_error=False)
    add_arguments(parser)
    try:
        return parser.parse_args(list(argv[1:]))
    except (argparse.ArgumentError, SystemExit) as exc:  # unknown flag: argparse exits
        pytest.fail(f"{' '.join(argv)}: flags rejected by the settings parser ({exc})")


def dns_endpoints_supported() -> bool:
    """Whether this checkout's settings accept ``dns+tcp://NAME:PORT`` router endpoints."""
    try:
        Settings(frontend=DNS_SCHEME + "tilerouter-router:5555",
                 backend=DNS_SCHEME + "tilerouter-router:5556")
    except ConfigError:
        return False
    return True


def check_command(argv: Sequence[str], env: Mapping[str, str],
                  config_file: str | None = None) -> Settings:
    """``argv`` (an example's command line) must name a component console command of this
    package and load into valid Settings with ``env`` (the example's environment, not
    this process') and ``config_file`` (the example's TOML): what the command would do."""
    command = Path(argv[0]).name
    assert command in console_scripts(), f"{command}: not a console command of tilerouter"
    assert command in COMPONENTS, f"{command}: not a component command"
    args = parse_flags(argv)
    text = " ".join(argv)
    if DNS_SCHEME in text and not dns_endpoints_supported():
        pytest.skip("dns+tcp:// router endpoints are not accepted by config.settings_check "
                    "in this checkout yet")
    try:
        return load_settings(args, env=dict(env), config_file=config_file)
    except ConfigError as exc:
        pytest.fail(f"{text}: {exc}")


def endpoint_port(endpoint: str) -> int:
    """The port of ``tcp://HOST:PORT`` or ``dns+tcp://NAME:PORT``."""
    return int(endpoint.rsplit(":", 1)[1])


def endpoint_host(endpoint: str) -> str:
    return endpoint.partition("://")[2].rsplit(":", 1)[0]
