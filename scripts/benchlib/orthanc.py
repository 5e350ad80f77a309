"""A real PACS on this machine: Debian's Orthanc with its DICOMweb plugin, and DICOM WSI
slides to fill it with.

The DICOMweb store is tested and benchmarked against a real server (QIDO-RS, WADO-RS
multipart frames, transcoding on request, basic auth), not a mock of dicomweb-client.
Orthanc runs from a generated JSON config in a temporary folder (its database and
storage too) on HTTP and DICOM ports the kernel picked, loading the plugin the
``orthanc-dicomweb`` package installed; the system's own Orthanc service is never
touched. Slides are the generated demo slide (``readers/demo_slide.py``) converted to
DICOM by wsidicomizer through OpenSlide, so nothing is downloaded.

Shared by the tests (``tests/dicom_servers.py``) and ``scripts/bench_dicomweb.py``.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from .procs import die_with_parent, free_port
from .remote_servers import START_TIMEOUT, STOP_TIMEOUT, port_open, wait_until

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_PACKAGE = "orthanc-dicomweb"
BIND_ATTEMPTS = 5


def dicomweb_plugin() -> str | None:
    """The DICOMweb plugin's .so, as the package lists it (``dpkg -L``), else None."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listed = subprocess.run(["dpkg", "-L", PLUGIN_PACKAGE], capture_output=True,
                                text=True, timeout=10, check=False).stdout.split()
        found = [p for p in listed if "/plugins/" in p and p.endswith(".so")]
        if found and os.path.exists(found[0]):
            return found[0]
    found = glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*")
    return found[0] if found else None


def missing() -> str | None:
    """Why Orthanc cannot run here (None when it can)."""
    if not os.access(ORTHANC, os.X_OK):
        return f"{ORTHANC} missing (./scripts/setup installs Debian's orthanc when root)"
    if dicomweb_plugin() is None:
        return f"the {PLUGIN_PACKAGE} plugin is missing (apt-get install {PLUGIN_PACKAGE})"
    return None


class OrthancServer:
    """Orthanc on 127.0.0.1 (remote access off) with DICOMweb at ``/dicom-web``; basic
    auth on when ``user`` is given."""

    def __init__(self, *, user: str = "", password: str = "", host: str = "127.0.0.1"
                 ) -> None:
        self.user, self.password, self.host = user, password, host
        self.port = 0
        self.dicom_port = 0
        self.tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """What ``--store NAME=...`` takes."""
        return f"dicomweb+http://{self.host}:{self.port}/dicom-web"

    def start(self) -> OrthancServer:
        why = missing()
        if why:
            raise FileNotFoundError(why)
        self.tmp = Path(tempfile.mkdtemp(prefix="tilerouter-orthanc-"))
        try:
            for _ in range(BIND_ATTEMPTS):  # a free port can be taken before Orthanc binds
                if self._try_start(free_port(self.host), free_port(self.host)):
                    return self
            raise RuntimeError(f"Orthanc: no free ports after {BIND_ATTEMPTS} attempts")
        except BaseException:
            self.stop()
            raise

    def _try_start(self, port: int, dicom_port: int) -> bool:
        assert self.tmp is not None
        storage = self.tmp / "db"
        storage.mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "Name": "tilerouter-test", "StorageDirectory": str(storage),
            "IndexDirectory": str(storage), "HttpPort": port, "DicomPort": dicom_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(self.user),
            "RegisteredUsers": {self.user: self.password} if self.user else {},
            "Plugins": [dicomweb_plugin()], "StorageCompression": False,
            "HttpCompressionEnabled": False, "ConcurrentJobs": 1,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        conf = self.tmp / "orthanc.json"
        conf.write_text(json.dumps(config, indent=1))
        with open(self.tmp / "orthanc.log", "wb") as out:
            self._proc = subprocess.Popen(
                [ORTHANC, str(conf)], cwd=self.tmp, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM))
        proc = self._proc
        wait_until(lambda: proc.poll() is not None or port_open(self.host, port),
                   START_TIMEOUT, "Orthanc to listen")
        if proc.poll() is None:
            self.port, self.dicom_port = port, dicom_port
            return True
        self._proc = None
        if "address already in use" in self.logs().lower():
            return False
        raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        if self.tmp is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.tmp / "orthanc.log").read_text(errors="replace")[-4000:]
        return ""

    def _request(self, method: str, path: str, data: bytes | None = None) -> Any:
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self.user:
            pair = f"{self.user}:{self.password}".encode()
            req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def upload(self, paths: list[str] | list[Path]) -> int:
        """``POST /instances`` every file; returns how many Orthanc stored."""
        for path in paths:
            self._request("POST", "/instances", Path(path).read_bytes())
        return len(paths)

    def instances(self) -> list[str]:
        return list(self._request("GET", "/instances"))

    def stop(self) -> None:
        """SIGTERM (Orthanc closes its database), then SIGKILL; the temp dir goes too."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(STOP_TIMEOUT)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
