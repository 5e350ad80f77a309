"""Logging set-up, called only by entry points (library code just uses getLogger)."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO", component: str = "tilerouter") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {component}[%(process)d] %(name)s: %(message)s",
    )
