"""The BuildKit image a `docker-container` builder runs, made offline and seeded as docker.io's `moby/buildkit`.

buildx's docker-container driver has the runner's engine pull `moby/buildkit:buildx-stable-1` and runs it
privileged, its state volume on /var/lib/buildkit, the rendered buildkitd.toml copied to /etc/buildkit; it talks
to buildkitd through `docker exec buildctl dial-stdio` and waits with `buildctl debug workers`. The stand-in holds
what that needs: the Debian base rootfs (the images' debian:<suite>-slim, the same layer), then one layer with the
project's own buildkitd and buildctl (release/devstack/buildkit.py) and Debian's runc of the base's suite (its
libseccomp is in the base). No CNI: buildkitd picks the host network, i.e. the container's, so RUN steps resolve
through the resolv.conf the runner's engine gave the container (the cluster DNS). The tools layer is kept in the
state folder, runc's package in the machine cache: a second `up` makes nothing and fetches nothing.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.buildersetup import BUILDKIT_IMAGE
from release.devstack.buildkit import BuildkitBinaries, deb_version
from release.devstack.cluster.hosts import Host
from release.devstack.cluster.oci import (
    DEFAULT_PATH,
    Image,
    Layer,
    PlainRegistry,
    gunzipped_sha256,
    layer_tar,
    layered_image,
    sha256,
)
from release.devstack.cluster.topology import UPSTREAM_PORT
from release.devstack.install import download_packages, os_codename, unpack
from release.devstack.packages import MACHINE_CACHE, Seed, digest_of, file_sha256
from release.devstack.paths import StackPaths
from release.errors import OperationError
from release.fsutil import file_lock

Log = Callable[[str], None]

REPOSITORY, TAG = BUILDKIT_IMAGE.rsplit(":", 1)  # a docker.io path with its namespace: moby/buildkit
STATE_VOLUME = "/var/lib/buildkit"  # buildx mounts the builder's state volume here
RUNC_PACKAGE = "runc"
# Bump when the image's shape changes in a way its inputs' bytes do not show (paths, config, layer order).
RECIPE = "1: base rootfs; usr/bin/buildkitd, usr/bin/buildctl, usr/sbin/runc; ENTRYPOINT buildkitd; VOLUME state"
TOOLS = {"buildkitd": "usr/bin/buildkitd", "buildctl": "usr/bin/buildctl", "runc": "usr/sbin/runc"}


def container_config() -> dict[str, Any]:
    """Return the image's container config: buildkitd as the entrypoint (buildx adds its flags), its state volume."""
    return {"Entrypoint": ["buildkitd"], "Env": [DEFAULT_PATH], "Volumes": {STATE_VOLUME: {}}}


def tools_tar(buildkitd: bytes, buildctl: bytes, runc: bytes) -> bytes:
    """Return the tools layer's tar: buildkitd and buildctl in /usr/bin, runc in /usr/sbin (merged-/usr paths)."""
    files = {TOOLS["buildkitd"]: buildkitd, TOOLS["buildctl"]: buildctl, TOOLS["runc"]: runc}
    return layer_tar(files, {}, executable=tuple(files))


def buildkit_image(base: Layer, tools: Layer) -> Image:
    """Return the image: the base rootfs layer, then the tools layer, with `container_config`."""
    return layered_image([base, tools], container_config())


def image_key(buildkit: BuildkitBinaries, rootfs: Path) -> str:
    """Return what the cached image was made from: the recipe, the buildkit binaries' digests, the base rootfs."""
    binaries = buildkit.info()["binaries"]
    return digest_of(
        "buildkit-image", RECIPE, {n: binaries[n]["sha256"] for n in ("buildkitd", "buildctl")}, rootfs.name
    )


@dataclass(frozen=True)
class BuildkitImage:
    """The image's parts in the state folder: the base rootfs, the tools layer, their diff_ids and the digest."""

    base: Path
    base_diff_id: str
    tools: Path
    tools_diff_id: str
    digest: str
    runc_version: str

    def image(self) -> Image:
        """Return the image, its blobs read from the files."""
        return buildkit_image(
            Layer(self.base.read_bytes(), self.base_diff_id, f"fractalops devstack seed (base {self.base.name})"),
            Layer(
                self.tools.read_bytes(),
                self.tools_diff_id,
                f"fractalops devstack seed (buildkitd, runc {self.runc_version})",
            ),
        )


def image_dir(stack: StackPaths) -> Path:
    """Return the state folder's copy of the image's tools layer and its record."""
    return stack.root / "buildkit-image"


def read_image(stack: StackPaths, key: str, rootfs: Path) -> BuildkitImage | None:
    """Return the cached image if its record has this key and the tools layer is there with the recorded digest."""
    folder = image_dir(stack)
    try:
        record = json.loads((folder / "image.json").read_text())
        tools = folder / "tools.tar.gz"
        if record["key"] != key or record["tools_sha256"] != file_sha256(tools):
            return None
        return BuildkitImage(
            rootfs, str(record["base_diff_id"]), tools, str(record["tools_diff_id"]), str(record["digest"]),
            str(record["runc"]),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_runc(suite: str, log: Log, cache: Path = MACHINE_CACHE) -> tuple[Path, str]:
    """Return Debian's runc of `suite` (its binary and version) from the machine cache, downloaded once."""
    folder = cache / "runc" / suite
    with file_lock(cache / "runc.lock"):
        try:
            record = json.loads((folder / "runc.json").read_text())
            binary = folder / "runc"
            if file_sha256(binary) == record["sha256"]:
                return binary, str(record["version"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        work = StackPaths(cache / "runc-work")
        if work.root.exists():
            shutil.rmtree(work.root)
        debs = download_packages(work, os_codename(), suite, (RUNC_PACKAGE,), log)
        unpacked = work.root / "unpacked"
        unpack(debs, unpacked, log)
        found = unpacked / TOOLS["runc"]
        if not found.is_file():
            raise OperationError(
                f"{debs[RUNC_PACKAGE].name} has no /{TOOLS['runc']}. What to do: check the package's contents with "
                "`dpkg -c`; the BuildKit image needs runc there."
            )
        version = deb_version(debs[RUNC_PACKAGE])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found, folder / "runc")
        (folder / "runc.json").write_text(
            json.dumps({"version": version, "sha256": file_sha256(folder / "runc"), "deb": debs[RUNC_PACKAGE].name})
            + "\n"
        )
        shutil.rmtree(work.root)
        return folder / "runc", version


def ensure_image(stack: StackPaths, seed: Seed, buildkit: BuildkitBinaries, log: Log) -> BuildkitImage:
    """Return the image's parts: from the state folder when made from the same inputs, else made now (~10 s)."""
    key = image_key(buildkit, seed.rootfs)
    cached = read_image(stack, key, seed.rootfs)
    if cached is not None:
        return cached
    runc, runc_version = ensure_runc(seed.spec.suite, log)
    log(f"devstack: making the BuildKit image {BUILDKIT_IMAGE} (buildkitd {buildkit.version}, runc {runc_version})")
    tar = tools_tar(buildkit.buildkitd.read_bytes(), buildkit.buildctl.read_bytes(), runc.read_bytes())
    folder = image_dir(stack)
    folder.mkdir(parents=True, exist_ok=True)
    tools = folder / "tools.tar.gz"
    partial = tools.with_name("tools.tar.gz.partial")
    partial.write_bytes(gzip.compress(tar, compresslevel=6, mtime=0))
    partial.replace(tools)
    made = BuildkitImage(seed.rootfs, gunzipped_sha256(seed.rootfs), tools, sha256(tar), "", runc_version)
    digest = made.image().digest
    record = {
        "key": key,
        "image": BUILDKIT_IMAGE,
        "digest": digest,
        "base": seed.rootfs.name,
        "base_diff_id": made.base_diff_id,
        "tools_diff_id": made.tools_diff_id,
        "tools_sha256": file_sha256(tools),
        "buildkit": buildkit.version,
        "runc": runc_version,
    }
    (folder / "image.json").write_text(json.dumps(record, indent=2) + "\n")
    return BuildkitImage(seed.rootfs, made.base_diff_id, tools, made.tools_diff_id, digest, runc_version)


def seed_upstream(host: Host, image: BuildkitImage, log: Log) -> bool:
    """Push the image to the nexus host's upstream (docker.io's stand-in) unless it serves this digest; whether it did."""
    upstream = PlainRegistry(f"{host.address}:{UPSTREAM_PORT}", timeout=300.0)
    if upstream.manifest_digest(REPOSITORY, TAG) == image.digest:
        return False
    log(f"devstack: seeding {REPOSITORY}:{TAG} (buildkitd, runc {image.runc_version}) into the nexus host's upstream")
    pushed = upstream.push(REPOSITORY, TAG, image.image())
    if pushed != image.digest:
        raise OperationError(f"seeding {REPOSITORY}:{TAG}: pushed {pushed}, recorded {image.digest}")
    return True
