"""The OCI registry boundary: a minimal distribution (V2) client (ping, manifest HEAD, config labels), stdlib HTTP.

The scheme is the caller's (from `Topology.registry_scheme`, never guessed from the address); credentials are
read the way docker reads them, from the docker config folder the caller names (credential helpers run through
the process adapter); 429 and 5xx answers are retried with a bounded backoff inside each call's budget.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from release.adapters import process
from release.errors import RegistryError
from release.imageref import ImageRef

if TYPE_CHECKING:
    from release.topology.model import Scheme, Topology

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
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
NOT_FOUND = "credentials not found"
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Probe:
    """The outcome of a `/v2/` ping: reachable or not, why, and how long it took."""

    reachable: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class Retry:
    """How 429 and 5xx answers are retried: attempts, the first backoff (doubling), the longest single wait."""

    attempts: int = 4
    backoff: float = 0.25
    max_wait: float = 5.0

    def wait(self, attempt: int, headers: dict[str, str]) -> float | None:
        """Seconds to wait before the next attempt (Retry-After if given, else the backoff); None: do not retry.

        A Retry-After longer than `max_wait` is honoured by not asking again rather than by asking early.
        """
        if attempt >= self.attempts:
            return None
        told = _retry_after(headers.get("retry-after", ""))
        if told is not None and told > self.max_wait:
            return None
        wanted = told if told is not None else self.backoff * 2 ** (attempt - 1)
        return min(max(wanted, 0.0), self.max_wait)


def _retry_after(value: str) -> float | None:
    """Retry-After as seconds (it is either a number of seconds or an HTTP date); None when absent or unreadable."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _retryable(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True)
class Credentials:
    """A registry login: a username and password, or an identity (refresh) token. Never printed."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:
        """No secret in a repr, a traceback or a log."""
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"

    def basic(self) -> str | None:
        """An HTTP Basic header value, when there is a username and password."""
        return basic_auth(self.username, self.password) if self.username and self.password else None


def _hostname(key: str) -> str:
    """The registry host of a config.json key, as docker reads it (`https://host/v1/` → `host`)."""
    return key.split("://", 1)[-1].split("/", 1)[0]


def _from_helper(helper: str, registry: str, config_file: Path, timeout: float) -> Credentials:
    """Ask `docker-credential-<helper> get` for the registry's login; a failure is one line without the secret."""
    program = f"docker-credential-{helper}"
    server = DOCKER_HUB_SERVER if registry in DOCKER_HUB else registry
    where = f"{registry}: credential helper {program} (from {config_file})"
    executable = shutil.which(program)
    if executable is None:
        raise RegistryError(f"{where}: not found on PATH")
    try:
        done = process.run([executable, "get"], stdin=server, timeout=max(timeout, 0.1), check=False)
    except process.ProcessError as err:
        if isinstance(err.__cause__, subprocess.TimeoutExpired):
            raise RegistryError(f"{where}: no answer within {timeout:.1f} s") from None
        raise RegistryError(f"{where}: cannot run: {err.stderr_tail or 'not found'}") from None
    except OSError as err:
        raise RegistryError(f"{where}: cannot run: {err.strerror}") from None
    if done.returncode != 0:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if said and NOT_FOUND in said[0].lower():
            return Credentials()  # docker goes on without credentials
        # The helper's own words help, unless they look like a document that might hold the secret.
        reason = said[0][:160] if said and not said[0].lstrip().startswith("{") else "no message"
        raise RegistryError(f"{where}: get failed with exit status {done.returncode}: {reason}")
    try:
        answer = json.loads(done.stdout)
        username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        raise RegistryError(f"{where}: get answered something that is not JSON with Username and Secret") from None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def docker_credentials(registry: str, docker_config: Path | None, timeout: float = 10.0) -> Credentials:
    """The login docker would use for `registry`: credHelpers, then credsStore, then `auths` in config.json.

    `docker_config` is the folder holding config.json (`$DOCKER_CONFIG`, else ~/.docker); None: no credentials.
    """
    if docker_config is None:
        return Credentials()
    path = docker_config / "config.json"
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return Credentials()
    except (OSError, ValueError) as err:
        raise RegistryError(f"{path}: cannot read the docker config: {getattr(err, 'strerror', None) or err}") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: the docker config is not a JSON object")
    helpers = config.get("credHelpers") or {}
    helper = next((str(v) for k, v in helpers.items() if _hostname(str(k)) == registry), None)
    helper = helper or (str(config["credsStore"]) if config.get("credsStore") else None)
    if helper:
        return _from_helper(helper, registry, path, timeout)
    wanted = DOCKER_HUB if registry in DOCKER_HUB else {registry}
    entry = next((v for k, v in (config.get("auths") or {}).items() if _hostname(str(k)) in wanted), None)
    if not isinstance(entry, dict):
        return Credentials()
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{path}: auths.{registry}.auth is not base64 of user:password") from None
    return Credentials(username, password, str(entry.get("identitytoken") or ""))


@dataclass
class _Answer:
    """One HTTP answer: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class RegistryClient:
    """Talks the V2 API to one registry host, in the scheme its caller gives (see `Topology.registry_scheme`)."""

    def __init__(
        self,
        registry: str,
        *,
        scheme: Scheme,
        docker_config: Path | None = None,
        timeout: float = 10.0,
        retry: Retry | None = None,
    ) -> None:
        """The registry `host[:port]`, its scheme, the docker config folder (None: anonymous), budget and retries."""
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {scheme!r}")
        self.registry = registry
        self.scheme = scheme
        self.docker_config = docker_config
        self.timeout = timeout
        self.retry = retry or Retry()
        self._auth: str | None = None
        self._credentials: Credentials | None = None

    @classmethod
    def for_topology(
        cls, topology: Topology, registry: str, *, docker_config: Path | None = None, **options: Any
    ) -> RegistryClient:
        """A client of `registry` in the scheme the topology gives it (HTTPS for a registry it does not describe)."""
        return cls(registry, scheme=topology.registry_scheme(registry), docker_config=docker_config, **options)

    def _exchange(
        self, method: str, url: str, headers: dict[str, str], deadline: float, body: bytes | None = None
    ) -> _Answer:
        """One request (following GET/HEAD redirects, without credentials to another host), done by `deadline`."""
        for _ in range(MAX_REDIRECTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            parts = urllib.parse.urlsplit(url)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            connection = kind(parts.netloc, timeout=remaining)
            try:
                connection.connect()
                assert connection.sock is not None
                connection.sock.settimeout(max(0.05, deadline - time.monotonic()))
                target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
                answer = _Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
            finally:
                connection.close()
            location = answer.headers.get("location")
            if answer.status not in (301, 302, 303, 307, 308) or not location or method not in ("GET", "HEAD"):
                return answer
            moved = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(moved).netloc != parts.netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = moved
        raise http.client.HTTPException(f"more than {MAX_REDIRECTS} redirects")

    def _login(self, challenge: str, deadline: float) -> str | None:
        """The Authorization value that answers a 401 challenge (Basic, or a Bearer token), or None."""
        if self._credentials is None:
            self._credentials = docker_credentials(
                self.registry, self.docker_config, max(0.1, deadline - time.monotonic())
            )
        credentials = self._credentials
        if challenge.lower().startswith("basic"):
            return credentials.basic()
        if not challenge.lower().startswith("bearer"):
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("http://", "https://")):
            return None
        if credentials.identity_token:
            form = {**params, "grant_type": "refresh_token", "refresh_token": credentials.identity_token}
            form.setdefault("client_id", "fractalops-release")
            answer = self._exchange(
                "POST",
                realm,
                {"Content-Type": "application/x-www-form-urlencoded"},
                deadline,
                urllib.parse.urlencode(form).encode(),
            )
        else:
            basic = credentials.basic()
            headers = {"Authorization": basic} if basic else {}
            answer = self._exchange("GET", f"{realm}?{urllib.parse.urlencode(params)}", headers, deadline)
        if answer.status != 200:
            raise RegistryError(f"{self.registry}: the token service {realm} answered HTTP {answer.status}")
        try:
            document = json.loads(answer.body)
        except ValueError:
            return None
        token = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        return f"Bearer {token}" if token else None

    def _request(
        self, method: str, path: str, headers: dict[str, str], deadline: float, *, login: bool = True
    ) -> tuple[_Answer, int]:
        """Send a request with credentials on a challenge and retries on 429/5xx; (the last answer, attempts made)."""
        attempt = 0
        challenged = False
        while True:
            attempt += 1
            sent = {**headers, **({"Authorization": self._auth} if self._auth else {})}
            answer = self._exchange(method, f"{self.scheme}://{self.registry}{path}", sent, deadline)
            challenge = answer.headers.get("www-authenticate", "")
            if answer.status == 401 and login and challenge and not challenged:
                challenged = True
                self._auth = self._login(challenge, deadline)
                if self._auth:
                    attempt -= 1  # answering a challenge is not a retry
                    continue
            pause = self.retry.wait(attempt, answer.headers) if _retryable(answer.status) else None
            if pause is None or time.monotonic() + pause >= deadline:
                return answer, attempt
            time.sleep(pause)

    def ping(self, budget: float = 2.0, manifest: tuple[str, str] | None = None) -> Probe:
        """GET /v2/, then HEAD `manifest` (repository path, tag) if given, all within `budget` seconds.

        The manifest request catches a host that answers the ping and then hangs: BuildKit has no timeout
        for registry cache calls, and such a host would stall the build (and the engine) indefinitely.
        A 429 or 5xx answer is retried while the budget lasts.
        """
        started = time.monotonic()
        deadline = started + budget
        requests = [("GET", "/v2/", {200, 401})]
        if manifest is not None:
            requests.append(("HEAD", f"/v2/{manifest[0]}/manifests/{manifest[1]}", {200, 401, 404}))
        for method, path, fine in requests:
            try:
                answer, attempts = self._request(method, path, {"Accept": MANIFEST_TYPES}, deadline, login=False)
            except (OSError, http.client.HTTPException, RegistryError) as err:
                reason = "timed out" if isinstance(err, TimeoutError) else str(err) or type(err).__name__
                return Probe(False, f"{self.registry}: {method} {path}: {reason}", time.monotonic() - started)
            if answer.status not in fine:
                tries = f" after {attempts} attempts" if attempts > 1 else ""
                return Probe(
                    False,
                    f"{self.registry}: {method} {path} answered HTTP {answer.status}{tries}",
                    time.monotonic() - started,
                )
        return Probe(True, f"{self.registry}: answered", time.monotonic() - started)

    def _call(self, method: str, path: str, accept: str, deadline: float) -> tuple[_Answer, int]:
        """A request whose transport failure is a RegistryError naming the registry."""
        try:
            return self._request(method, path, {"Accept": accept}, deadline)
        except (OSError, http.client.HTTPException) as err:
            reason = "timed out" if isinstance(err, TimeoutError) else str(err) or type(err).__name__
            raise RegistryError(f"{self.registry}: cannot reach the registry ({self.scheme}): {reason}") from None

    def manifest_digest(self, ref: ImageRef) -> str | None:
        """HEAD the manifest of `ref` (by digest or tag); its Docker-Content-Digest, or None if unknown."""
        reference = ref.digest or ref.tag or "latest"
        deadline = time.monotonic() + self.timeout
        answer, attempts = self._call("HEAD", f"/v2/{ref.path}/manifests/{reference}", MANIFEST_TYPES, deadline)
        if answer.status == 404:
            return None
        if answer.status != 200:
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise RegistryError(f"{ref}: registry answered HTTP {answer.status} to a manifest HEAD{tries}")
        return answer.headers.get("docker-content-digest") or ref.digest

    def _get_json(self, path: str, accept: str, deadline: float) -> tuple[dict[str, Any], str]:
        answer, attempts = self._call("GET", path, accept, deadline)
        if answer.status != 200:
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise RegistryError(f"{self.registry}{path}: HTTP {answer.status}{tries}")
        return self._json_object(answer, path), answer.headers.get("content-type", "")

    def _json_object(self, answer: _Answer, path: str) -> dict[str, Any]:
        """The answer's body as a JSON object; a RegistryError naming the request otherwise."""
        try:
            document = json.loads(answer.body)
        except ValueError:
            raise RegistryError(f"{self.registry}{path}: the answer is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError(f"{self.registry}{path}: the answer is not a JSON object")
        return document

    def image_manifest(self, ref: ImageRef, deadline: float | None = None) -> dict[str, Any]:
        """The manifest of the image `ref` names (the first non-attestation manifest of an index; {} if none)."""
        reference = ref.digest or ref.tag or "latest"
        deadline = deadline if deadline is not None else time.monotonic() + 2 * self.timeout  # index, manifest
        manifest, media_type = self._get_json(f"/v2/{ref.path}/manifests/{reference}", MANIFEST_TYPES, deadline)
        return self._image_of(ref, manifest, media_type, deadline)

    def _image_of(self, ref: ImageRef, manifest: dict[str, Any], media_type: str, deadline: float) -> dict[str, Any]:
        """`manifest` itself, or for an index the first non-attestation manifest it lists ({} if none)."""
        if manifest.get("mediaType", media_type) in INDEX_TYPES or "manifests" in manifest:
            images = [
                m
                for m in manifest.get("manifests", [])
                if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"
            ]
            if not images:
                return {}
            manifest, _ = self._get_json(f"/v2/{ref.path}/manifests/{images[0]['digest']}", MANIFEST_TYPES, deadline)
        return manifest

    def layer_bytes(self, ref: ImageRef) -> int:
        """The bytes of the image's layers as the registry stores them (compressed)."""
        return sum(int(layer.get("size", 0)) for layer in self.image_manifest(ref).get("layers", []))

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """The config labels of the image `ref` names (the first non-attestation manifest of an index)."""
        deadline = time.monotonic() + 3 * self.timeout  # up to three documents: index, manifest, config
        return self._labels(ref, self.image_manifest(ref, deadline), deadline)

    def tagged_image(self, ref: ImageRef) -> TaggedImage | None:
        """The image the tag of `ref` names now (digest, config labels, platform), read as one snapshot; None if none.

        The digest is that of the manifest bytes read, so the labels are those of the image with that digest even
        when the tag moves meanwhile.
        """
        deadline = time.monotonic() + 3 * self.timeout
        path = f"/v2/{ref.path}/manifests/{ref.tag or 'latest'}"
        answer, attempts = self._call("GET", path, MANIFEST_TYPES, deadline)
        if answer.status == 404:
            return None
        if answer.status != 200:
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise RegistryError(f"{ref}: registry answered HTTP {answer.status} to a manifest GET{tries}")
        manifest = self._json_object(answer, path)
        digest = "sha256:" + hashlib.sha256(answer.body).hexdigest()
        image = self._image_of(ref, manifest, answer.headers.get("content-type", ""), deadline)
        config = self._config(ref, image, deadline)
        return TaggedImage(digest, _labels_of(config), _platform_of(config))

    def _labels(self, ref: ImageRef, manifest: dict[str, Any], deadline: float) -> dict[str, str]:
        """The config labels of the image whose manifest this is."""
        return _labels_of(self._config(ref, manifest, deadline))

    def _config(self, ref: ImageRef, manifest: dict[str, Any], deadline: float) -> dict[str, Any]:
        """The config document of the image whose manifest this is ({} without one)."""
        config_digest = manifest.get("config", {}).get("digest")
        if not config_digest:
            return {}
        config, _ = self._get_json(f"/v2/{ref.path}/blobs/{config_digest}", "application/json, */*", deadline)
        return config


@dataclass(frozen=True)
class TaggedImage:
    """The image a tag names: its manifest digest, its config labels, its platform (`os/arch[/variant]`, or None)."""

    digest: str
    labels: dict[str, str]
    platform: str | None


def _labels_of(config: dict[str, Any]) -> dict[str, str]:
    """The labels of an image config document."""
    labels = (config.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _platform_of(config: dict[str, Any]) -> str | None:
    """`os/architecture[/variant]` of an image config document; None when it names none."""
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        return None
    variant = config.get("variant")
    return f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")


def basic_auth(username: str, password: str) -> str:
    """An HTTP Basic header value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
