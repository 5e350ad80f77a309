"""CurveZMQ between components: known keys work end to end, unknown keys are refused."""

from __future__ import annotations

import time
from pathlib import Path

import zmq.auth

from router.curve import make_keys
from tests.helpers import System, wait_for


def _client_env(keys: Path, name: str) -> dict[str, str]:
    return {"TILEROUTER_CURVE_SECRET_KEY": str(keys / f"{name}.key_secret"),
            "TILEROUTER_CURVE_SERVER_KEY": str(keys / "router.key")}


def test_curve_admits_known_keys_and_refuses_unknown(slide_root: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    make_keys(str(keys))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    zmq.auth.create_certificates(str(stranger), "intruder")
    sysm = System(slide_root, workers=1)
    sysm.component_env = {
        "router": {"TILEROUTER_CURVE_SECRET_KEY": str(keys / "router.key_secret"),
                   "TILEROUTER_CURVE_AUTHORIZED_KEYS": str(keys / "authorized")},
        "workers": _client_env(keys, "worker"),
        "gateway": _client_env(keys, "gateway"),
    }
    try:
        sysm.start()
        ws = sysm.ws()
        try:
            assert ws.tile("c.tiff", 8, 0, 0)[0]["ok"] is True
        finally:
            ws.close()
        # a worker with a key the router does not know never registers
        sysm.spawn("intruder", "workers.cli",
                   TILEROUTER_CURVE_SECRET_KEY=str(stranger / "intruder.key_secret"),
                   TILEROUTER_CURVE_SERVER_KEY=str(keys / "router.key"))
        wait_for(lambda: "connected" in (sysm.rundir / "intruder.log").read_text(), 10,
                 what="intruder started")
        counts = set()
        for _ in range(20):  # observe ~2 s (two heartbeat expiries): it is never admitted
            counts.add(len(sysm.stats()["workers"]))
            time.sleep(0.1)
        assert counts == {1}
        # and a worker with no CURVE at all cannot talk to a CURVE router either
        sysm.spawn("plain", "workers.cli", TILEROUTER_CURVE_SECRET_KEY="",
                   TILEROUTER_CURVE_SERVER_KEY="")
        assert len(sysm.stats()["workers"]) == 1
    finally:
        sysm.stop()
