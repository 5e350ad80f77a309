"""``tilerouter demo --s3``: the demo slides served from a local S3 endpoint.

A newcomer sees the remote path (ranged reads through a sparse mirror, /stats' remote
counters) with one command: moto's S3 server runs in the ``serve`` process, the demo
slides are uploaded to a bucket, and the system is started on ``s3://`` instead of the
folder. moto comes with the test extras that ``./scripts/setup`` installs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from config.errors import ConfigError
from readers.slide_ids import is_slide_name

log = logging.getLogger(__name__)

BUCKET = "tilerouter-demo"
DEMO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                    "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def demo_bucket(directory: str) -> Iterator[tuple[str, str]]:
    """Serve ``directory``'s slides from a local S3 server: yields (store URL, endpoint)."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise ConfigError("demo --s3 needs moto[server] and boto3 (./scripts/setup "
                          "installs them)") from None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        for key, value in DEMO_CREDENTIALS.items():  # moto takes any; children inherit them
            os.environ.setdefault(key, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        for dirpath, _, files in os.walk(directory):
            for name in sorted(files):
                if is_slide_name(name):
                    path = os.path.join(dirpath, name)
                    key = os.path.relpath(path, directory).replace(os.sep, "/")
                    client.upload_file(path, BUCKET, key)
        log.info("demo slides in s3://%s on a local S3 server", BUCKET)
        yield f"s3://{BUCKET}", endpoint
    finally:
        server.stop()
