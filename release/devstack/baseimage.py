"""Push the offline debian:<suite>-slim (a mmdebstrap rootfs) to the upstream registry, as docker.io would serve it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from release.devstack.commands import run
from release.devstack.install import Binaries
from release.devstack.packages import Seed, link_tree_file
from release.devstack.paths import StackPaths
from release.devstack.ports import HOST
from release.devstack.seed import catalog, manifest_digest, warm_pull_through
from release.errors import EngineError

Log = Callable[[str], None]


def render_base_dockerfile() -> str:
    """Return the Dockerfile that turns the rootfs tarball into an image (one layer, like docker.io's)."""
    return (
        "# Offline stand-in for docker.io/library/debian:<suite>-slim: a mmdebstrap minbase rootfs.\n"
        "FROM scratch\n"
        "ADD rootfs.tar.gz /\n"
        'CMD ["bash"]\n'
    )


def seed_debian_image(
    paths: StackPaths, upstream_port: int, binaries: Binaries, env: Mapping[str, str], seed: Seed, log: Log
) -> bool:
    """Push library/debian:<suite>-slim built from the seeded rootfs if the upstream registry lacks this rootfs."""
    repository, tag = seed.spec.base_repository, seed.spec.base_tag
    record = paths.root / "seed-debian.json"
    try:
        pushed = json.loads(record.read_text()).get("rootfs")
    except (OSError, ValueError, AttributeError):
        pushed = None
    if pushed == seed.rootfs.name and manifest_digest(upstream_port, repository, tag) is not None:
        return False
    context = paths.root / "seed-debian"
    context.mkdir(parents=True, exist_ok=True)
    (context / "rootfs.tar.gz").unlink(missing_ok=True)
    link_tree_file(seed.rootfs, context / "rootfs.tar.gz")
    (context / "Dockerfile").write_text(render_base_dockerfile())
    ref = f"{HOST}:{upstream_port}/{repository}:{tag}"
    log(f"devstack: seeding {repository}:{tag} (mmdebstrap rootfs) into the upstream registry")
    hint = f"read {paths.logfile('dockerd')} and `devstack status`; then `devstack down` and `devstack up`"
    run(
        [binaries.docker, "buildx", "build", "--progress=plain", "--provenance=false", "--push", "-t", ref, context],
        step=f"building and pushing the offline base image {repository}:{tag}",
        hint=hint,
        error=EngineError,
        env=env,
        timeout=600.0,
    )
    # Drop the engine's own copy so that `FROM debian:<suite>-slim` really pulls through the mirror.
    run(
        [binaries.docker, "image", "rm", ref],
        step="removing the seed image from the engine",
        hint=hint,
        error=EngineError,
        env=env,
        timeout=60.0,
    )
    (context / "rootfs.tar.gz").unlink(missing_ok=True)
    record.write_text(json.dumps({"rootfs": seed.rootfs.name, "image": f"{repository}:{tag}"}) + "\n")
    return True


def ensure_debian_mirrored(port: int, seed: Seed, log: Log, refresh: bool = False) -> bool:
    """Make the pull-through registry hold the base image; return whether it had to fetch it."""
    repository = seed.spec.base_repository
    if repository in catalog(port) and not refresh:
        return False
    log(f"devstack: warming the pull-through registry with {repository}:{seed.spec.base_tag}")
    warm_pull_through(port, repository, seed.spec.base_tag)
    return True
