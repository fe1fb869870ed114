"""The offline BuildKit image of docker-container builders: its layers, config, manifest and the state folder's copy."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from release.buildersetup import BUILDKIT_IMAGE
from release.devstack.buildkit import MARKER, BuildkitBinaries
from release.devstack.cluster import buildkit_image
from release.devstack.cluster.buildkit_image import REPOSITORY, TAG, container_config, image_key, read_image, tools_tar
from release.devstack.cluster.oci import Layer, sha256
from release.devstack.paths import StackPaths


def fake_buildkit(folder: Path, buildkitd: bytes = b"buildkitd") -> BuildkitBinaries:
    """A built BuildKit as ensure_buildkit leaves it: two binaries and the marker with their digests."""
    (folder / "bin").mkdir(parents=True)
    binaries = {}
    for name, data in (("buildkitd", buildkitd), ("buildctl", b"buildctl")):
        (folder / "bin" / name).write_bytes(data)
        binaries[name] = {"size": len(data), "sha256": sha256(data).removeprefix("sha256:")}
    (folder / MARKER).write_text(json.dumps({"version": "v0.13", "binaries": binaries}))
    return BuildkitBinaries(folder / "bin" / "buildkitd", folder / "bin" / "buildctl", "v0.13", folder / MARKER)


def test_the_image_is_seeded_where_buildx_pulls_its_default_from() -> None:
    # buildx's docker-container driver runs moby/buildkit:buildx-stable-1: the upstream stand-in holds that path.
    assert BUILDKIT_IMAGE == "moby/buildkit:buildx-stable-1"
    assert (REPOSITORY, TAG) == ("moby/buildkit", "buildx-stable-1")


def test_tools_layer_puts_the_binaries_under_usr_and_leaves_the_merged_usr_links_alone() -> None:
    # buildkitd and buildctl in /usr/bin, runc in /usr/sbin, executable; no `bin` or `sbin` entry that would
    # replace the base's /bin -> usr/bin link.
    tar = tools_tar(b"d", b"c", b"r")
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert set(members) == {"usr", "usr/bin", "usr/sbin", "usr/bin/buildkitd", "usr/bin/buildctl", "usr/sbin/runc"}
    assert {members[n].mode for n in ("usr/bin/buildkitd", "usr/bin/buildctl", "usr/sbin/runc")} == {0o755}
    assert tar == tools_tar(b"d", b"c", b"r")  # reproducible: the same inputs give the same digest


def test_image_is_the_base_then_the_tools_with_buildkitd_as_entrypoint_and_its_state_volume() -> None:
    # Two layers, base first; the config names both diff_ids in order; ENTRYPOINT buildkitd, /var/lib/buildkit a volume.
    base = Layer(gzip.compress(b"base tar", mtime=0), sha256(b"base tar"), "base")
    tools = Layer(gzip.compress(b"tools tar", mtime=0), sha256(b"tools tar"), "tools")
    image = buildkit_image.buildkit_image(base, tools)
    manifest, config = json.loads(image.manifest), json.loads(image.config)
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(base.blob), sha256(tools.blob)]
    assert manifest["config"]["digest"] == sha256(image.config)
    assert config["rootfs"]["diff_ids"] == [sha256(b"base tar"), sha256(b"tools tar")]
    assert [h["created_by"] for h in config["history"]] == ["base", "tools"]
    assert config["config"] == container_config()
    assert config["config"]["Entrypoint"] == ["buildkitd"] and "Cmd" not in config["config"]
    assert config["config"]["Volumes"] == {"/var/lib/buildkit": {}}
    assert image.layers == (base.blob, tools.blob)


def test_the_cache_key_follows_the_buildkitd_build_and_the_base_rootfs(tmp_path: Path) -> None:
    # Another buildkitd or another rootfs makes another key (the image is made again); the same inputs, the same key.
    one, other = fake_buildkit(tmp_path / "a"), fake_buildkit(tmp_path / "b", buildkitd=b"rebuilt")
    rootfs = tmp_path / "debian-trixie-slim-amd64-1.tar.gz"
    assert image_key(one, rootfs) == image_key(fake_buildkit(tmp_path / "c"), rootfs)
    assert image_key(one, rootfs) != image_key(other, rootfs)
    assert image_key(one, rootfs) != image_key(one, rootfs.with_name("debian-trixie-slim-amd64-2.tar.gz"))


def test_the_state_folder_copy_is_used_only_for_its_key_and_unchanged_bytes(tmp_path: Path) -> None:
    # read_image gives the recorded parts back for the recorded key; another key or a changed layer file: None.
    stack = StackPaths(tmp_path)
    folder = buildkit_image.image_dir(stack)
    folder.mkdir(parents=True)
    tools = folder / "tools.tar.gz"
    tools.write_bytes(b"layer")
    record = {
        "key": "k1", "digest": "sha256:m", "base_diff_id": "sha256:b", "tools_diff_id": "sha256:t",
        "tools_sha256": sha256(b"layer").removeprefix("sha256:"), "runc": "1.1.15+ds1-2+b4",
    }  # fmt: skip
    (folder / "image.json").write_text(json.dumps(record))
    rootfs = tmp_path / "rootfs.tar.gz"
    found = read_image(stack, "k1", rootfs)
    assert found is not None
    assert (found.base, found.tools, found.digest, found.runc_version) == (rootfs, tools, "sha256:m", "1.1.15+ds1-2+b4")
    assert read_image(stack, "k2", rootfs) is None
    tools.write_bytes(b"truncated")
    assert read_image(stack, "k1", rootfs) is None


@pytest.mark.parametrize("missing", ["image.json", "tools.tar.gz"])
def test_a_missing_part_means_the_image_is_made_again(tmp_path: Path, missing: str) -> None:
    # Without its record or its layer file the state folder holds no image.
    stack = StackPaths(tmp_path)
    folder = buildkit_image.image_dir(stack)
    folder.mkdir(parents=True)
    (folder / "tools.tar.gz").write_bytes(b"layer")
    record = {"key": "k", "digest": "d", "base_diff_id": "b", "tools_diff_id": "t", "runc": "1"}
    (folder / "image.json").write_text(json.dumps({**record, "tools_sha256": sha256(b"layer")[7:]}))
    (folder / missing).unlink()
    assert read_image(stack, "k", tmp_path / "rootfs.tar.gz") is None
