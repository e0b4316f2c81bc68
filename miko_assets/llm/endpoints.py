"""Where an OpenAI-compatible provider sends its calls, as one normalised URL.

The endpoint is part of a request's cache key: two servers that serve different weights under
the same model name must not share answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

OPENAI_BASE_URL = "https://api.openai.com/v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def openai_base_url(env: Mapping[str, str]) -> str:
    """The configured base URL: `MIKO_OPENAI_BASE_URL`, else `OPENAI_BASE_URL`, else OpenAI's."""
    return env.get("MIKO_OPENAI_BASE_URL") or env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL


def normalize_endpoint(url: str) -> str:
    """Scheme and host lowercased, default port and trailing slashes dropped, no query or fragment.

    `HTTP://LocalHost:80/v1/` and `http://localhost/v1` name the same server and give the same
    string; the path is kept as it is (servers may route on its case).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def provider_endpoint(provider: str, env: Mapping[str, str]) -> str | None:
    """The normalised endpoint a provider named `provider` calls, or None where it is fixed by
    the provider's name (the embedded model, Anthropic)."""
    return normalize_endpoint(openai_base_url(env)) if provider == "openai" else None
