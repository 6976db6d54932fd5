"""Whether the Hugging Face hub (or another download host) can be reached, asked once before any download.

Without this, huggingface_hub retries every request five times with back-off (about 25 s each, 80 s for one SAE)
and open_clip's download retries again before failing with a generic message; one 3-second connection attempt per
host and process tells the same, so loaders can say at once what is missing and how to get it.
"""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlparse

from huggingface_hub import constants


def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be used now (None when it can)."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return url_unreachable_reason(constants.ENDPOINT)


def url_unreachable_reason(url: str) -> str | None:
    """Why the host of `url` cannot be reached now (None when it can)."""
    endpoint = urlparse(url)
    scheme_port = 443 if endpoint.scheme == "https" else 80
    return connection_problem(endpoint.hostname or "huggingface.co", endpoint.port or scheme_port)


@functools.lru_cache(maxsize=8)
def connection_problem(host: str, port: int, timeout: float = 3.0) -> str | None:
    """One TCP connection attempt per host and process."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host} cannot be reached from this machine ({err.strerror or err})"
    return None
