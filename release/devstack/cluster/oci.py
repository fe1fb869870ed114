"""Seed a registry without an engine: a one-layer image from files, pushed over the Registry V2 API (plain HTTP)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import platform
import tarfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.errors import RegistryError

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
# Every manifest kind a registry may hold under a tag or digest (an image index included).
ACCEPTED = ", ".join(
    (
        MANIFEST_TYPE,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    """An image ready to push: its config and layer blobs (base first) and the manifest naming them."""

    config: bytes
    layers: tuple[bytes, ...]
    manifest: bytes

    @property
    def digest(self) -> str:
        """Return the manifest's digest (what a registry answers for the tag)."""
        return sha256(self.manifest)


def sha256(data: bytes) -> str:
    """Return the OCI digest of bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: Mapping[str, bytes], symlinks: Mapping[str, str], executable: Sequence[str] = ()) -> bytes:
    """Return a reproducible tar (sorted, mtime 0, root-owned) of files and symlinks, parent folders included."""
    folders = sorted({"/".join(p.split("/")[:i]) for p in (*files, *symlinks) for i in range(1, p.count("/") + 1)})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in sorted({*files, *symlinks}):
            info = tarfile.TarInfo(name)
            if name in symlinks:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, symlinks[name], 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(files[name]), 0o755 if name in executable else 0o644
                tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def one_layer_image(tar: bytes, cmd: Sequence[str], env: Sequence[str] = (DEFAULT_PATH,)) -> Image:
    """Return an image of one gzip layer (the tar) for this machine's architecture."""
    return gzip_layer_image(gzip.compress(tar, compresslevel=6, mtime=0), sha256(tar), cmd, env)


def gunzipped_sha256(path: Path) -> str:
    """Return the OCI digest of a gzip file's uncompressed bytes (a layer's diff_id), read in chunks."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Layer:
    """One gzip layer of an image: its bytes, the digest of its uncompressed tar, and the history line naming it."""

    blob: bytes
    diff_id: str
    created_by: str


def gzip_layer_image(
    layer: bytes, diff_id: str, cmd: Sequence[str], env: Sequence[str] = (DEFAULT_PATH,), created_by: str = ""
) -> Image:
    """Return an image of one layer already gzipped (`diff_id`: the digest of its uncompressed tar)."""
    made = Layer(layer, diff_id, created_by or "fractalops devstack seed (one layer from files)")
    return layered_image([made], {"Cmd": list(cmd), "Env": list(env)})


def layered_image(layers: Sequence[Layer], container_config: Mapping[str, Any]) -> Image:
    """Return an image of gzip layers (base first) with a container config (Cmd, Entrypoint, Env, Volumes…)."""
    config = json.dumps(
        {
            "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": dict(container_config),
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created_by": layer.created_by} for layer in layers],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": sha256(config)},
            "layers": [
                {"mediaType": LAYER_TYPE, "size": len(layer.blob), "digest": sha256(layer.blob)} for layer in layers
            ],
        },
        sort_keys=True,
    ).encode()
    return Image(config=config, layers=tuple(layer.blob for layer in layers), manifest=manifest)


@dataclass(frozen=True)
class Reply:
    """A registry's reply: status, reason, headers (lower-case names) and body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class PlainRegistry:
    """A minimal V2 client for plain-HTTP registries: catalog, tags, blob upload, manifest put and head."""

    def __init__(
        self, registry: str, username: str | None = None, password: str | None = None, timeout: float = 60.0
    ) -> None:
        """Keep where the registry is (`host:port`) and the Basic credentials, if any."""
        self.registry = registry
        self.timeout = timeout
        self._auth = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if username and password else ""
        )

    def _request(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """Send one request (a fresh connection each time) and return its reply."""
        conn = http.client.HTTPConnection(self.registry, timeout=self.timeout)
        sent = dict(headers or {})
        if self._auth:
            sent["Authorization"] = self._auth
        try:
            conn.request(method, path, body=body or None, headers=sent)
            response = conn.getresponse()
            body = response.read()
            headers = {key.lower(): value for key, value in response.getheaders()}
            return Reply(response.status, response.reason, headers, body)
        except OSError as err:
            raise RegistryError(f"registry {self.registry}: {method} {path.split('?')[0]}: {err}") from None
        finally:
            conn.close()

    def _expect(self, response: Reply, wanted: int, what: str) -> None:
        """Raise a one-line error when a response is not the wanted status."""
        if response.status != wanted:
            raise RegistryError(f"registry {self.registry}: {what} answered {response.status} {response.reason}")

    def answers(self) -> int:
        """Return the status of `GET /v2/` (200, or 401 when it asks for credentials), 0 when nothing answers."""
        try:
            return self._request("GET", "/v2/").status
        except RegistryError:
            return 0

    def _json(self, path: str) -> dict[str, Any]:
        """GET a JSON document; anything but 200 is a one-line error."""
        response = self._request("GET", path)
        self._expect(response, 200, f"GET {path.split('?')[0]}")
        data = json.loads(response.body)
        return data if isinstance(data, dict) else {}

    def catalog(self) -> list[str]:
        """Return the repositories the registry lists."""
        return [str(name) for name in self._json("/v2/_catalog?n=1000").get("repositories") or []]

    def tags(self, repository: str) -> list[str]:
        """Return the tags of a repository."""
        return [str(tag) for tag in self._json(f"/v2/{repository}/tags/list").get("tags") or []]

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Return the digest the registry serves for repository:tag (or @digest), or None."""
        response = self._request("HEAD", f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPTED})
        if response.status != 200:
            return None
        return response.headers.get("docker-content-digest", "")

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        """Return the manifest (or index) the registry serves for repository:tag or @digest."""
        response = self._request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPTED})
        self._expect(response, 200, f"GET manifest {repository}:{reference}")
        data = json.loads(response.body)
        return data if isinstance(data, dict) else {}

    def blob(self, repository: str, digest: str) -> bytes:
        """Return a blob's bytes."""
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}")
        self._expect(response, 200, f"GET blob {digest}")
        return response.body

    def push_blob(self, repository: str, data: bytes) -> None:
        """Upload a blob monolithically unless the registry already has it."""
        digest = sha256(data)
        if self._request("HEAD", f"/v2/{repository}/blobs/{digest}").status == 200:
            return
        started = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        self._expect(started, 202, f"starting the upload of {digest}")
        location = urllib.parse.urlsplit(started.headers.get("location", ""))
        query = [*urllib.parse.parse_qsl(location.query), ("digest", digest)]
        target = f"{location.path}?{urllib.parse.urlencode(query)}"
        done = self._request("PUT", target, data, {"Content-Type": "application/octet-stream"})
        self._expect(done, 201, f"uploading {digest}")

    def push(self, repository: str, tag: str, image: Image) -> str:
        """Push an image's blobs and its manifest under a tag; return the manifest digest."""
        for blob in (image.config, *image.layers):
            self.push_blob(repository, blob)
        put = self._request("PUT", f"/v2/{repository}/manifests/{tag}", image.manifest, {"Content-Type": MANIFEST_TYPE})
        self._expect(put, 201, f"putting the manifest {repository}:{tag}")
        return image.digest
