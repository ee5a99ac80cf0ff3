"""Whether the Hugging Face hub answers, asked once per process before the first hub access. Without
``HF_HUB_OFFLINE`` set, a machine that cannot reach the hub would retry every file for minutes: instead it
reads the local cache only, as ``HF_HUB_OFFLINE=1`` does, and says so in one line.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger(__name__)
PROBE_SECONDS = 3.0
ON = ("1", "true", "yes", "on")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ON


@functools.cache
def hub_reachable() -> bool:
    """One TCP connection to the hub's host (``HF_ENDPOINT``, else huggingface.co), a few seconds at most."""
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def offline_unless_reachable() -> None:
    """Switch this process to the local cache when the hub cannot be reached (said once)."""
    if is_offline() or hub_reachable():
        return
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    log.warning(
        "the Hugging Face hub cannot be reached: reading only what is cached here, as HF_HUB_OFFLINE=1 does "
        "(set HF_HUB_OFFLINE=1 to skip this check)"
    )
