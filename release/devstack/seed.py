"""The stack's registries seen from outside: V2 API checks, catalog, and seeding the base image."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping

from release.devstack.commands import run
from release.devstack.configs import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAGS, render_seed_dockerfile
from release.devstack.install import Binaries
from release.devstack.paths import StackPaths
from release.devstack.ports import HOST
from release.devstack.probes import http_request
from release.errors import EngineError, RegistryError

Log = Callable[[str], None]

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def registry_answers(port: int, timeout: float = 2.0) -> bool:
    """Return True if the registry on the port answers the V2 API base endpoint."""
    return http_request(f"http://{HOST}:{port}/v2/", timeout=timeout).status == 200


def catalog(port: int) -> list[str]:
    """Return the repositories a registry lists in /v2/_catalog."""
    reply = http_request(f"http://{HOST}:{port}/v2/_catalog?n=1000", timeout=5.0)
    if reply.status != 200:
        raise RegistryError(
            f"registry 127.0.0.1:{port}: /v2/_catalog answered {reply.status or reply.error}. "
            "What to do: run `devstack status` and `devstack up`."
        )
    repositories = json.loads(reply.body).get("repositories") or []
    return [str(name) for name in repositories]


def manifest_digest(port: int, repository: str, tag: str) -> str | None:
    """Return the digest a registry serves for repository:tag, or None if it has none."""
    reply = http_request(
        f"http://{HOST}:{port}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
        timeout=5.0,
    )
    if reply.status != 200:
        return None
    return next((v for k, v in reply.headers.items() if k.lower() == "docker-content-digest"), "")


def seed_base_image(
    paths: StackPaths, upstream_port: int, binaries: Binaries, env: Mapping[str, str], log: Log
) -> list[str]:
    """Push library/busybox:<tag> built offline from busybox-static to the upstream registry if missing."""
    missing = [t for t in BASE_IMAGE_TAGS if manifest_digest(upstream_port, BASE_IMAGE_REPOSITORY, t) is None]
    if not missing:
        return []
    context = paths.seed_context
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binaries.busybox, context / "busybox")
    (context / "Dockerfile").write_text(render_seed_dockerfile())
    tags: list[str] = []
    for tag in missing:
        tags += ["-t", f"{HOST}:{upstream_port}/{BASE_IMAGE_REPOSITORY}:{tag}"]
    refs = tags[1::2]
    log(f"devstack: seeding {BASE_IMAGE_REPOSITORY}:{','.join(missing)} into the upstream registry")
    run(
        [
            binaries.docker,
            "buildx",
            "build",
            "--progress=plain",
            "--provenance=false",
            "--push",
            *tags,
            context,
        ],
        step=f"building and pushing the offline base image {BASE_IMAGE_REPOSITORY}",
        hint=f"read {paths.logfile('dockerd')} and `devstack status`; then `devstack down` and `devstack up`",
        error=EngineError,
        env=env,
        timeout=300.0,
    )
    # Drop the engine's own copy so that `FROM busybox` really pulls through the mirror.
    run(
        [binaries.docker, "image", "rm", *refs],
        step="removing the seed image from the engine",
        hint="remove it by hand with `docker image rm`; then `devstack up`",
        error=EngineError,
        env=env,
        timeout=60.0,
    )
    return missing


def fetch(port: int, repository: str, kind: str, reference: str) -> bytes:
    """GET a manifest or blob from a registry (through a pull-through registry this caches it)."""
    reply = http_request(
        f"http://{HOST}:{port}/v2/{repository}/{kind}/{reference}", headers={"Accept": MANIFEST_TYPES}, timeout=60.0
    )
    if reply.status != 200:
        raise RegistryError(
            f"warming 127.0.0.1:{port}/{repository}: {kind}/{reference} answered {reply.status or reply.error}. "
            "What to do: check the upstream registry with `devstack status`, then `devstack up`."
        )
    return reply.body


def warm_pull_through(port: int, repository: str, tag: str) -> None:
    """Pull a whole image (index, manifests, config, layers) through a pull-through registry so it keeps it."""
    pending = [tag]
    while pending:
        document = json.loads(fetch(port, repository, "manifests", pending.pop()))
        pending += [str(child["digest"]) for child in document.get("manifests") or []]
        blobs = [document["config"], *document.get("layers", [])] if "config" in document else []
        for blob in blobs:
            fetch(port, repository, "blobs", str(blob["digest"]))


def ensure_mirrored(port: int, log: Log) -> bool:
    """Make the pull-through registry hold the base image tags; return whether it had to fetch them."""
    if BASE_IMAGE_REPOSITORY in catalog(port):
        return False
    log(f"devstack: warming the pull-through registry with {BASE_IMAGE_REPOSITORY}")
    for tag in BASE_IMAGE_TAGS:
        warm_pull_through(port, BASE_IMAGE_REPOSITORY, tag)
    return True
