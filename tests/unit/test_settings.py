"""Settings: defaults, file < env < CLI precedence, validation naming the setting, to_env."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.lists import parse_cpu_list
from config.settings import ENV_PREFIX, Settings, load_settings, parse_cli


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tilerouter.toml"
    path.write_text(text)
    return str(path)


def _names(setting: str) -> str:
    return re.escape(f"'{setting}'")


def test_defaults_are_valid() -> None:
    """The defaults must run the demo as-is, and loading with nothing set gives them."""
    s = Settings()
    assert s.policy == "cache-aware" and s.tile_size == 254 and s.limit_bounds is True
    assert load_settings(args={}, env={}) == s


def test_precedence_file_then_env_then_cli(tmp_path: Path) -> None:
    """Later sources win per setting; settings a later source omits keep the earlier value."""
    cfg = _toml(tmp_path, 'workers = 1\ntile_size = 300\npolicy = "round-robin"\n'
                          "limit_bounds = false\n")
    env = {"TILEROUTER_WORKERS": "2", "TILEROUTER_TILE_SIZE": "400"}
    s = load_settings(args={"workers": "3"}, env=env, config_file=cfg)
    assert s.workers == 3  # CLI beats env and file
    assert s.tile_size == 400  # env beats file
    assert s.policy == "round-robin"  # file only
    assert s.limit_bounds is False  # TOML bool
    assert s.overlap == Settings().overlap  # default


@pytest.mark.parametrize("how", ["param", "env", "args"])
def test_config_file_can_be_named_three_ways(tmp_path: Path, how: str) -> None:
    """--config, TILEROUTER_CONFIG and the config_file argument all load the file."""
    cfg = _toml(tmp_path, "tile_quality = 55\n")
    kwargs: dict = {"param": {"config_file": cfg, "env": {}},
                    "env": {"env": {"TILEROUTER_CONFIG": cfg}},
                    "args": {"args": {"config": cfg}, "env": {}}}[how]
    assert load_settings(**kwargs).tile_quality == 55


def test_tilerouter_table_and_dashed_keys(tmp_path: Path) -> None:
    """A [tilerouter] table is read in place of top-level keys; dashes map to underscores."""
    cfg = _toml(tmp_path, '[tilerouter]\ntile-size = 512\nreader-cache-size = 3\n'
                          'log_level = "debug"\n')
    s = load_settings(env={}, config_file=cfg)
    assert (s.tile_size, s.reader_cache_size, s.log_level) == (512, 3, "debug")


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"TILEROUTER_WORKERS": "four"}, "workers"),
        ({"TILEROUTER_TILE_SIZE": "1.5"}, "tile_size"),
        ({"TILEROUTER_LIMIT_BOUNDS": "maybe"}, "limit_bounds"),
        ({"TILEROUTER_REQUEST_TIMEOUT": "soon"}, "request_timeout"),
        ({"TILEROUTER_POLICY": "random"}, "policy"),
        ({"TILEROUTER_WORKERS": "-1"}, "workers"),
        ({"TILEROUTER_TILE_FORMAT": "gif"}, "tile_format"),
        ({"TILEROUTER_FRONTEND": "http://127.0.0.1:5555"}, "frontend"),
        ({"TILEROUTER_BACKEND": "udp://127.0.0.1:5556"}, "backend"),
        ({"TILEROUTER_PORT": "70000"}, "port"),
        ({"TILEROUTER_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"TILEROUTER_TLS_CERT": "cert.pem"}, "tls_key"),
    ],
)
def test_bad_env_value_names_the_setting(env: dict[str, str], setting: str) -> None:
    """Every bad value fails at load with a ConfigError that names the setting."""
    with pytest.raises(ConfigError, match=_names(setting)) as info:
        load_settings(args={}, env=env)
    assert info.value.code == "config"


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ('tile_size = "big"\n', "tile_size"),
        ("tile_size = 300.5\n", "tile_size"),
        ("workers = true\n", "workers"),
        ('limit_bounds = "perhaps"\n', "limit_bounds"),
        ("slides = [1, 2]\n", "slides"),
        ("request_timeout = true\n", "request_timeout"),
        ("no_such_setting = 1\n", "no_such_setting"),
        ("[tilerouter]\nbogus-key = 1\n", "bogus-key"),
    ],
)
def test_bad_file_value_names_the_setting(tmp_path: Path, toml: str, setting: str) -> None:
    """Wrong types and unknown keys in the TOML file are refused, naming the key."""
    with pytest.raises(ConfigError, match=_names(setting)):
        load_settings(env={}, config_file=_toml(tmp_path, toml))


def test_bad_cli_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=_names("worker_capacity")):
        load_settings(args={"worker_capacity": "0"}, env={})


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError naming the file, not a traceback."""
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=re.escape(missing)):
        load_settings(env={}, config_file=missing)
    with pytest.raises(ConfigError, match="config file"):
        load_settings(env={}, config_file=_toml(tmp_path, "workers = = 1\n"))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"slides": "/data/my slides", "tile_size": 256, "overlap": 0, "limit_bounds": False,
         "passthrough": False, "tile_format": "png", "request_timeout": 0.25,
         "policy": "least-loaded", "workers": 7, "allowed_origins": "https://a,https://b",
         "frontend": "ipc:///tmp/tr/front", "log_level": "debug", "open_latency": 0.5},
    ],
)
def test_to_env_round_trips(changes: dict) -> None:
    """A child process started with to_env() must load exactly the parent's settings."""
    s = Settings(**changes)
    env = s.to_env()
    assert all(k.startswith(ENV_PREFIX) and isinstance(v, str) for k, v in env.items())
    assert load_settings(args={}, env=env) == s


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_cli reads os.environ: make sure no TILEROUTER_* of the caller leaks in."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_environ")
def test_parse_cli_flags_and_extra() -> None:
    """Flags use dashes, values are coerced, and extra arguments land in the namespace."""
    s, ns = parse_cli("t", ["--tile-size", "300", "--limit-bounds", "no", "--name", "x"],
                      extra=lambda p: p.add_argument("--name"))
    assert (s.tile_size, s.limit_bounds, ns.name) == (300, False, "x")


@pytest.mark.usefixtures("clean_environ")
@pytest.mark.parametrize(
    ("argv", "setting"),
    [(["--workers=-1"], "workers"), (["--policy", "fastest"], "policy"),
     (["--tile-quality", "high"], "tile_quality")],
)
def test_parse_cli_exits_2_naming_the_setting(
    argv: list[str], setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_cli("t", argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"'{setting}'" in err and "error:" in err


def test_endpoint_without_scheme_separator_is_refused() -> None:
    with pytest.raises(ConfigError, match=_names("frontend")):
        Settings(frontend="tcp")


def test_worker_cpus_parse_and_validate() -> None:
    """The kernel's list format; a bad list or a CPU this machine lacks fails at start."""
    assert parse_cpu_list("") == frozenset()
    assert parse_cpu_list("0-2, 5") == {0, 1, 2, 5}
    assert Settings(worker_cpus="0").worker_cpu_set == {0}
    assert Settings(worker_cpus="0").worker_count == 1  # workers=0: one per pinned CPU
    assert Settings(worker_cpus="0", workers=3).worker_count == 3
    for bad in ("x", "3-1", "-1", "1-", f"{os.cpu_count()}"):
        with pytest.raises(ConfigError, match=_names("worker_cpus")):
            Settings(worker_cpus=bad)


def test_auto_gateways_use_the_cores_workers_leave() -> None:
    """Passthrough geometry: one gateway per core, minus the cores pinned to workers."""
    cores = os.cpu_count() or 1
    base = Settings(tile_size=256, overlap=0)
    assert base.gateway_count == max(1, min(cores, 4))
    assert Settings(tile_size=256, overlap=0, worker_cpus="0").gateway_count == \
        max(1, min(cores - 1, 4))
    assert Settings(tile_size=256, overlap=0, worker_cpus=f"0-{cores - 1}").gateway_count == 1
    assert Settings(worker_cpus="0").gateway_count == 1  # rendering geometry: always one
