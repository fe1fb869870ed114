"""Image references: parse and validate `registry/repo[:tag][@sha256:digest]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from release.errors import ConfigError

# The grammar of distribution/reference, reduced to what a release needs.
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF = re.compile(
    rf"(?:(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?/)?"
    rf"(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # use with fullmatch


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference."""

    registry: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """`registry/path`, without tag or digest."""
        return f"{self.registry}/{self.path}"

    def with_digest(self, digest: str) -> ImageRef:
        """The same repository pinned by `digest` (tag dropped)."""
        return ImageRef(self.registry, self.path, None, digest)

    def __str__(self) -> str:
        """The canonical text form."""
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_ref(text: str, *, what: str = "image reference") -> ImageRef:
    """Parse `text`, which must name an explicit registry host; raise ConfigError naming it otherwise."""
    from release.yamlfile import shown

    match = _REF.fullmatch(text)
    if not match or not match.group("host"):
        raise ConfigError(
            f"{what} {shown(text)} is not a valid image reference (want host[:port]/repo[:tag][@sha256:…])"
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {shown(text)} has port {port} out of range 1-65535")
    host = match.group("host") + (f":{port}" if port else "")
    if "." not in host and ":" not in host and host != "localhost":
        raise ConfigError(f"{what} {shown(text)} does not start with a registry host (e.g. ghcr.io/…)")
    return ImageRef(host, match.group("path"), match.group("tag"), match.group("digest"))


def parse_pinned_ref(text: str, *, what: str = "image_ref") -> ImageRef:
    """Parse an image reference that must be pinned by a sha256 digest."""
    from release.yamlfile import shown

    ref = parse_image_ref(text, what=what)
    if ref.digest is None:
        raise ConfigError(f"{what} {shown(text)} is not pinned by digest (want <repository>@sha256:<64 hex>)")
    return ref


DOCKER_HUB = "docker.io"


def parse_base_ref(text: str, *, what: str = "base image") -> ImageRef:
    """Parse a reference as docker and a Dockerfile's FROM read it: no host means docker.io (`library/` for one name)."""
    first, _, rest = text.partition("/")
    has_host = bool(rest) and ("." in first or ":" in first or first == "localhost")
    if has_host:
        return parse_image_ref(text, what=what)
    path = text if rest else f"library/{text}"
    return parse_image_ref(f"{DOCKER_HUB}/{path}", what=what)
