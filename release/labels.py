"""The labels of a release image: set by the build, read by GitOps (neither imports the other for them)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

REVISION_LABEL = "org.opencontainers.image.revision"
SOURCE_LABEL = "org.opencontainers.image.source"
DIRTY_LABEL = "io.fractalops.source.dirty"
# The digest of what the image was built from (release.build.fingerprint): a release with the same inputs reuses it.
INPUTS_LABEL = "io.fractalops.build.inputs"


def web_url(remote: str) -> str | None:
    """The web (https) address of a repository from its git remote URL, credentials and `.git` dropped.

    `git@host:owner/repo.git` and `ssh://git@host:22/owner/repo.git` become `https://host/owner/repo`; an http(s)
    URL keeps its scheme and port. A local path, `file://` or anything else unknown is None.
    """
    text = remote.strip()
    scp = re.fullmatch(r"(?:[^@/\s]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>[^\s]+)", text)
    if scp is not None and "://" not in text:
        scheme, netloc, path = "https", scp["host"], scp["path"]
    else:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh", "ssh+git") or not parts.hostname:
            return None
        web = parts.scheme in ("http", "https")
        scheme = parts.scheme if web else "https"
        netloc = parts.hostname + (f":{port}" if web and port else "")
        path = parts.path
    path = path.strip("/").removesuffix(".git").strip("/")
    url = f"{scheme}://{netloc}/{path}"
    return url if path and re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?/[\w.~%+/-]+", url) else None


def github_url(server_url: str | None, repository: str | None) -> str | None:
    """`$GITHUB_SERVER_URL/$GITHUB_REPOSITORY` in Actions (an `owner/name` repository), else None."""
    if not server_url or not repository or not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        return None
    return web_url(server_url.rstrip("/") + "/" + repository)
