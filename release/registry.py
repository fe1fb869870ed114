"""A minimal OCI distribution (V2) client: ping, manifest HEAD, config labels. Stdlib only."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from release.errors import RegistryError
from release.imageref import ImageRef

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


@dataclass(frozen=True)
class Probe:
    """The outcome of a `/v2/` ping: reachable or not, why, and how long it took."""

    reachable: bool
    detail: str
    seconds: float


def _is_local(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry.split("]")[0] + "]"
    return host in {"localhost", "[::1]"} or host.startswith("127.")


def _docker_auth(registry: str) -> str | None:
    """A Basic auth header from the docker CLI config (`auths.<registry>.auth`), if present."""
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    try:
        with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as handle:
            auths = json.load(handle).get("auths", {})
    except (OSError, ValueError):
        return None
    entry = auths.get(registry) or auths.get(f"http://{registry}") or auths.get(f"https://{registry}")
    if entry and entry.get("auth"):
        return f"Basic {entry['auth']}"
    return None


class RegistryClient:
    """Talks the V2 API to one registry host; plain HTTP for loopback and listed hosts."""

    def __init__(self, registry: str, *, plain_http: bool | None = None, timeout: float = 10.0) -> None:
        """Pick the scheme (plain HTTP on loopback unless told) and the request timeout."""
        self.registry = registry
        self.scheme = "http" if (plain_http if plain_http is not None else _is_local(registry)) else "https"
        self.timeout = timeout
        self._auth = _docker_auth(registry)
        self._retrying = False

    def _request(
        self, method: str, path: str, headers: dict[str, str] | None = None, timeout: float | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; return status, headers and body (errors as statuses)."""
        request = urllib.request.Request(f"{self.scheme}://{self.registry}{path}", method=method)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "")
            if err.code == 401 and challenge.lower().startswith("bearer") and not self._retrying:
                self._auth = self._bearer_token(challenge)
                self._retrying = True
                try:
                    return self._request(method, path, headers, timeout)
                finally:
                    self._retrying = False
            return err.code, dict(err.headers.items()), err.read()

    def _bearer_token(self, challenge: str) -> str | None:
        """Exchange the configured credentials for a bearer token (the registry token flow)."""
        import re
        import urllib.parse

        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("http://", "https://")):
            return None
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(params)}")
        basic = _docker_auth(self.registry)
        if basic:
            request.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        token = body.get("token") or body.get("access_token")
        return f"Bearer {token}" if token else None

    def _timed(self, method: str, path: str, deadline: float, headers: dict[str, str] | None = None) -> int:
        """One request that must finish by `deadline` (time.monotonic); its status. Raises OSError/HTTPException."""
        import http.client

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        host, _, port = self.registry.rpartition(":") if ":" in self.registry else (self.registry, "", "")
        connection_type = http.client.HTTPConnection if self.scheme == "http" else http.client.HTTPSConnection
        connection = connection_type(host, int(port) if port else None, timeout=remaining)
        try:
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(max(0.05, deadline - time.monotonic()))
            connection.request(
                method, path, headers={**(headers or {}), **({"Authorization": self._auth} if self._auth else {})}
            )
            return connection.getresponse().status
        finally:
            connection.close()

    def ping(self, budget: float = 2.0, manifest: tuple[str, str] | None = None) -> Probe:
        """GET /v2/, then HEAD `manifest` (repository path, tag) if given, all within `budget` seconds.

        The manifest request catches a host that answers the ping and then hangs: BuildKit has no timeout
        for registry cache calls, and such a host would stall the build (and the engine) indefinitely.
        """
        import http.client

        started = time.monotonic()
        deadline = started + budget
        requests = [("GET", "/v2/", {"200", "401"})]
        if manifest is not None:
            requests.append(("HEAD", f"/v2/{manifest[0]}/manifests/{manifest[1]}", {"200", "401", "404"}))
        for method, path, fine in requests:
            try:
                status = self._timed(method, path, deadline, {"Accept": MANIFEST_TYPES})
            except (OSError, http.client.HTTPException) as err:
                reason = "timed out" if isinstance(err, TimeoutError) else str(err) or type(err).__name__
                return Probe(False, f"{self.registry}: {method} {path}: {reason}", time.monotonic() - started)
            if str(status) not in fine:
                return Probe(
                    False, f"{self.registry}: {method} {path} answered HTTP {status}", time.monotonic() - started
                )
        return Probe(True, f"{self.registry}: answered", time.monotonic() - started)

    def manifest_digest(self, ref: ImageRef) -> str | None:
        """HEAD the manifest of `ref` (by digest or tag); its Docker-Content-Digest, or None if unknown."""
        reference = ref.digest or ref.tag or "latest"
        try:
            status, headers, _ = self._request(
                "HEAD", f"/v2/{ref.path}/manifests/{reference}", {"Accept": MANIFEST_TYPES}
            )
        except (urllib.error.URLError, OSError) as err:
            raise RegistryError(f"{self.registry}: cannot reach the registry: {getattr(err, 'reason', err)}") from None
        if status == 404:
            return None
        if status != 200:
            raise RegistryError(f"{ref}: registry answered HTTP {status} to a manifest HEAD")
        lowered = {k.lower(): v for k, v in headers.items()}
        return lowered.get("docker-content-digest") or ref.digest

    def _get_json(self, path: str, accept: str) -> tuple[dict[str, Any], str]:
        try:
            status, headers, body = self._request("GET", path, {"Accept": accept})
        except (urllib.error.URLError, OSError) as err:
            raise RegistryError(f"{self.registry}: cannot reach the registry: {getattr(err, 'reason', err)}") from None
        if status != 200:
            raise RegistryError(f"{self.registry}{path}: HTTP {status}")
        lowered = {k.lower(): v for k, v in headers.items()}
        return json.loads(body), lowered.get("content-type", "")

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """The config labels of the image `ref` names (the first non-attestation manifest of an index)."""
        reference = ref.digest or ref.tag or "latest"
        manifest, media_type = self._get_json(f"/v2/{ref.path}/manifests/{reference}", MANIFEST_TYPES)
        if manifest.get("mediaType", media_type) in INDEX_TYPES or "manifests" in manifest:
            images = [
                m
                for m in manifest.get("manifests", [])
                if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"
            ]
            if not images:
                return {}
            manifest, _ = self._get_json(f"/v2/{ref.path}/manifests/{images[0]['digest']}", MANIFEST_TYPES)
        config_digest = manifest.get("config", {}).get("digest")
        if not config_digest:
            return {}
        config, _ = self._get_json(f"/v2/{ref.path}/blobs/{config_digest}", "application/json, */*")
        labels = (config.get("config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}


def basic_auth(username: str, password: str) -> str:
    """An HTTP Basic header value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
