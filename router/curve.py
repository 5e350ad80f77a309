"""CurveZMQ between gateways, router and workers on different hosts (off by default).

The router is the CURVE server on both its sockets, with a ZAP authenticator that
admits only client public keys found in ``curve_authorized_keys``; gateways and
workers are CURVE clients that know the router's public key. Key files are pyzmq's
``zmq.auth`` certificates (``tilerouter keys DIR`` makes a set).
"""

from __future__ import annotations

import logging
import os
import shutil

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from config.errors import ConfigError
from config.settings import Settings

log = logging.getLogger(__name__)


def _load(path: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CURVE certificate {path!r}: {exc}") from None
    if need_secret and not secret:
        raise ConfigError(f"{path!r} holds no secret key (use the .key_secret file)")
    return public, secret


def start_authenticator(context: zmq.Context, settings: Settings) -> ThreadAuthenticator | None:
    """Start the router's ZAP handler when CURVE is configured."""
    if not settings.curve_secret_key:
        return None
    if not os.path.isdir(settings.curve_authorized_keys):
        raise ConfigError("setting 'curve_authorized_keys': must name a directory of public keys")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=settings.curve_authorized_keys)
    log.info("CURVE on: clients must hold a key in %s", settings.curve_authorized_keys)
    return auth


def secure_server(sock: zmq.Socket, settings: Settings) -> None:
    if not settings.curve_secret_key:
        return
    public, secret = _load(settings.curve_secret_key, need_secret=True)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True


def secure_client(sock: zmq.Socket, settings: Settings) -> None:
    if not settings.curve_server_key:
        return
    if not settings.curve_secret_key:
        raise ConfigError("setting 'curve_secret_key': a CURVE client needs its own key pair")
    public, secret = _load(settings.curve_secret_key, need_secret=True)
    server_public, _ = _load(settings.curve_server_key, need_secret=False)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public


def make_keys(directory: str, clients: tuple[str, ...] = ("worker", "gateway")) -> None:
    """Key pairs for the router and each client name; clients' public keys authorised."""
    authorized = os.path.join(directory, "authorized")
    os.makedirs(authorized, exist_ok=True)
    zmq.auth.create_certificates(directory, "router")
    for name in clients:
        public, _ = zmq.auth.create_certificates(directory, name)
        shutil.copy(public, authorized)
