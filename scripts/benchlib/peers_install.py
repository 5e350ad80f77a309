"""Installing the peers: Debian packages (IIPImage, lighttpd, memcached, wrk), the
openslide-python sdist with its DeepZoom example server, and a venv with Flask for it."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator

from .peers_common import BenchError, say

OPENSLIDE_SDIST = "openslide-python==1.4.7"
SDIST_DIR = "openslide_python-1.4.7"
MULTISERVER = os.path.join("examples", "deepzoom", "deepzoom_multiserver.py")
APT_PACKAGES = ("lighttpd", "memcached", "wrk", "iipimage-server")  # lighttpd before iip


def _dpkg_installed(pkg: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                         text=True, check=False).stdout
    return out.strip() == "install ok installed"


def _apt_candidate(pkg: str) -> bool:
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True,
                         check=False).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return bool(m) and m.group(1) != "(none)"


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Debian maintainer scripts must not start lighttpd/memcached daemons of their own."""
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if not os.path.exists(policy):
        with open(policy, "w") as fh:
            fh.write("#!/bin/sh\n# temporary, bench_peers.py: no daemon starts\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.remove(policy)


def ensure_apt() -> None:
    missing = [p for p in APT_PACKAGES if not _dpkg_installed(p)]
    if not missing:
        say("apt: " + ", ".join(APT_PACKAGES) + " already installed")
        return
    if os.geteuid() != 0:
        raise BenchError(f"need root to apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    updated = False
    if not all(_apt_candidate(p) for p in missing):
        say("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        updated = True
    # lighttpd first: iipimage-server depends on "libapache2-mod-fcgid | lighttpd"
    groups = [[p for p in missing if p != "iipimage-server"],
              [p for p in missing if p == "iipimage-server"]]
    with _no_service_starts():
        for group in filter(None, groups):
            say("apt-get install " + " ".join(group))
            cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *group]
            if subprocess.run(cmd, env=env, check=False).returncode != 0:
                if updated:
                    raise BenchError(f"apt-get install {' '.join(group)} failed")
                subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
                updated = True
                subprocess.run(cmd, env=env, check=True)


def iipsrv_path() -> str:
    out = subprocess.run(["dpkg", "-L", "iipimage-server"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if line.endswith("/iipsrv.fcgi") and os.access(line, os.X_OK):
            return line
    raise BenchError("iipimage-server is installed but has no executable iipsrv.fcgi")


def ensure_multiserver(workdir: str) -> str:
    """The openslide-python sdist, unpacked; returns deepzoom_multiserver.py's path."""
    cache = os.path.join(workdir, "cache")
    os.makedirs(cache, exist_ok=True)
    script = os.path.join(cache, SDIST_DIR, MULTISERVER)
    if os.path.isfile(script):
        say(f"openslide-python sdist already unpacked ({script})")
        return script
    sdists = [f for f in os.listdir(cache) if f.startswith(SDIST_DIR) and f.endswith(".tar.gz")]
    if not sdists:
        say(f"pip download --no-deps --no-binary :all: {OPENSLIDE_SDIST}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", OPENSLIDE_SDIST, "-d", cache], check=True)
        sdists = [f for f in os.listdir(cache)
                  if f.startswith(SDIST_DIR) and f.endswith(".tar.gz")]
    if not sdists:
        raise BenchError(f"pip download of {OPENSLIDE_SDIST} left no sdist in {cache}")
    with tarfile.open(os.path.join(cache, sdists[0])) as tar:
        names = tar.getnames()
        if f"{SDIST_DIR}/{MULTISERVER}" not in names:
            raise BenchError(f"the {OPENSLIDE_SDIST} sdist has no {MULTISERVER} "
                             f"(examples: {[n for n in names if '/examples/' in n][:10]})")
        tar.extractall(cache, filter="data")
    return script


def ensure_flask_venv(workdir: str) -> str:
    """A venv with Flask and the project venv's own OpenSlide and Pillow versions."""
    venv = os.path.join(workdir, "flask-venv")
    python = os.path.join(venv, "bin", "python")
    pins = [f"{dist}=={importlib.metadata.version(dist)}"
            for dist in ("openslide-python", "openslide-bin", "pillow")]
    wanted = " ".join(["flask", *pins])
    marker = os.path.join(venv, ".bench-peers")
    with contextlib.suppress(OSError), open(marker) as fh:
        if fh.read() == wanted and os.access(python, os.X_OK):
            say(f"Flask venv already set up ({venv}: {wanted})")
            return python
    say(f"creating {venv} with {wanted}")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "flask", *pins], check=True)
    subprocess.run([python, "-c", "import flask, openslide, PIL"], check=True)
    with open(marker, "w") as fh:
        fh.write(wanted)
    return python
