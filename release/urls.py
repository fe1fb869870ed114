"""URLs that may carry credentials: masked in messages, split into a clean URL and its Basic authorization."""

from __future__ import annotations

import re
from dataclasses import dataclass

from release.errors import UsageError


def _mask_url(value: str) -> str:
    """One URL with everything between its scheme and its last `@` replaced by `***` (white space included)."""
    if "@" not in value:
        return value
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?://)?", value)
    return (scheme.group(0) if scheme else "") + "***@" + value.rpartition("@")[2]


@dataclass(frozen=True)
class SinkURL:
    """An events sink: the URL to POST to (credentials removed), its Authorization header, and a printable form."""

    url: str
    authorization: str | None
    shown: str


def events_url(variable: str, value: str) -> SinkURL:
    """Parse the events sink URL: http(s) with a host; `user:password@` becomes Basic auth and is never shown."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value.strip()):
        shown = _mask_url(value)
        raise UsageError(f"{variable}={shown!r}: want an http:// or https:// URL with a host")
    if "@" in value.strip().partition("//")[2].partition(parts.netloc)[2]:
        # `user:pa/ss@host` reads as host `user`, port `pa` and a path: whatever follows is ambiguous.
        raise UsageError(
            f"{variable}={_mask_url(value)!r}: an '@' after the host; percent-encode '/', '?', '#' and '@' "
            "in the user name and password (%2F, %3F, %23, %40)"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return SinkURL(clean, authorization, urlunsplit((parts.scheme, netloc, parts.path or "/", "", "")))
