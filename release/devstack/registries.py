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
    return missing
