"""The real api and worker images on the local stack: package stand-ins inside a build, code-only rebuilds, smoke runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_devstack import rawjson_vertices, step_vertices
from test_release_driver import events, image_refs, release

from release.adapters.registry import RegistryClient
from release.devstack.packages import image_spec
from release.imageref import parse_pinned_ref
from release.topology.env import render_env
from release.topology.load import load_topology

if TYPE_CHECKING:
    from conftest import Devstack

pytestmark = pytest.mark.devstack

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "ops" / "containers" / "fractalops"
# As the release driver exports, but an export that fails fails the test (no ignore-error).
CACHE_TO_OPTIONS = "mode=max,image-manifest=true,oci-mediatypes=true"
# The steps that only the application code feeds; every other step is a dependency step.
CODE_STEPS = ("COPY app/fractalops/", "compileall")
MIN_IMAGE_BYTES = 50 * 2**20

# A build that uses the stand-ins the way any Dockerfile would: Debian's signed index (no [trusted=yes]) and pip.
PROBE_DOCKERFILE = """\
FROM {base_image}
ARG FRACTALOPS_APT_CACHE_URL
ARG FRACTALOPS_PIP_INDEX_URL
RUN . /etc/os-release && rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* \\
 && echo "deb $FRACTALOPS_APT_CACHE_URL $VERSION_CODENAME main" > /etc/apt/sources.list.d/nexus.list \\
 && apt-get update && apt-get install -y --no-install-recommends python3-venv && echo "probe: apt installed python3-venv"
RUN python3 -m venv /v && host=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).hostname)' \\
      "$FRACTALOPS_PIP_INDEX_URL") \\
 && /v/bin/pip install --index-url "$FRACTALOPS_PIP_INDEX_URL" --trusted-host "$host" {pin} \\
 && /v/bin/python -c 'import typing_extensions; print("probe: pip installed", typing_extensions.__name__)' \\
 && if /v/bin/pip download --no-deps -d /tmp/x --index-url "$FRACTALOPS_PIP_INDEX_URL" --trusted-host "$host" \\
      requests; then exit 1; fi && echo "probe: pip found nothing that was not seeded"
"""


def build_args(devstack: Devstack) -> list[str]:
    """The package repository build arguments the release driver passes, rendered from the stack's topology."""
    env = render_env(load_topology(devstack.topology))
    return [
        arg
        for name in ("FRACTALOPS_APT_CACHE_URL", "FRACTALOPS_PIP_INDEX_URL")
        for arg in ("--build-arg", f"{name}={env[name]}")
    ]


def compressed_size(ref_text: str) -> int:
    """The bytes of an image's layers as its registry stores them (the first non-attestation manifest)."""
    ref = parse_pinned_ref(ref_text)
    return RegistryClient(ref.registry, scheme="http").layer_bytes(ref)


def run_smoke(devstack: Devstack, *checks: str) -> subprocess.CompletedProcess[str]:
    """Run `fractalops-release devstack smoke` against the stack's engine, as a person would after `devstack up`."""
    return subprocess.run(
        [sys.executable, "-m", "release", "devstack", "smoke", *checks],
        env={**os.environ, **devstack.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_package_standins_answer_apt_and_pip_from_inside_a_build(devstack: Devstack, tmp_path: Path) -> None:
    # A RUN step reaches apt-debian and pypi-group at the topology's URLs: apt verifies Debian's signed index and
    # installs, pip installs a seeded wheel, and a package that was not seeded is not found (no fallback to PyPI).
    spec = image_spec()
    pin = next(
        line for _, text in spec.requirements for line in text.splitlines() if line.startswith("typing-extensions==")
    )
    (tmp_path / "Dockerfile").write_text(PROBE_DOCKERFILE.format(base_image=spec.base_image, pin=pin))
    result = devstack.docker(
        [
            "buildx",
            "build",
            "--no-cache",
            "--progress=plain",
            "--output=type=cacheonly",
            *build_args(devstack),
            str(tmp_path),
        ],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "probe: apt installed python3-venv" in result.stderr
    assert "probe: pip installed typing_extensions" in result.stderr
    assert "probe: pip found nothing that was not seeded" in result.stderr
    assert "/repository/apt-debian trixie InRelease" in result.stderr or "InRelease" in result.stderr
    assert "/repository/pypi-group/simple" in result.stderr


def code_change_misses(devstack: Devstack, context: Path) -> dict[str, list[str]]:
    """Export each target's cache from an emptied builder, change the code, rebuild each target on an emptied
    builder from its cache alone; the dependency steps that ran instead of coming from the cache, by target.

    Fails at once when the code steps are not the two expected or one of them was cached after the change.
    """
    scope = uuid.uuid4().hex[:8]
    caches = {t: f"{devstack.hosted}/fractalops/buildcache:codechange-{scope}-{t}" for t in ("api", "worker")}
    assert devstack.docker(["buildx", "prune", "-af"]).returncode == 0
    for target, cache in caches.items():  # one after the other, as the driver builds them
        first = devstack.docker(
            [
                *("buildx", "build", "--target", target, *build_args(devstack)),
                *("--cache-to", f"type=registry,ref={cache},{CACHE_TO_OPTIONS}", str(context)),
            ],
            timeout=900,
        )
        assert first.returncode == 0, first.stderr[-4000:]
    module = context / "app" / "fractalops" / "__init__.py"
    module.write_text(module.read_text() + f'\nCHANGE = "{scope}"  # a code-only change\n')
    misses = {}
    for target, cache in caches.items():
        assert devstack.docker(["buildx", "prune", "-af"]).returncode == 0  # its own cache the only source
        again = devstack.docker(
            [
                *("buildx", "build", "--target", target, "--progress=rawjson", *build_args(devstack)),
                *("--cache-from", f"type=registry,ref={cache}", str(context)),
            ],
            timeout=900,
        )
        assert again.returncode == 0, again.stderr[-4000:]
        steps = step_vertices(rawjson_vertices(again.stderr))
        code = [s for s in steps if any(marker in s["name"] for marker in CODE_STEPS)]
        dependencies = [s for s in steps if s not in code]
        assert len(code) == 2, [s["name"] for s in steps]
        assert len(dependencies) >= 5, [s["name"] for s in steps]
        assert not [s["name"] for s in code if s.get("cached")], f"{target}: a code step was cached after the change"
        misses[target] = [s["name"] for s in dependencies if not s.get("cached")]
    return misses


def test_code_only_change_takes_every_dependency_step_from_the_registry_cache(
    devstack: Devstack, tmp_path: Path
) -> None:
    # A fresh builder builds and exports the registry cache; another fresh builder (pruned) with that cache and a
    # change to the application code alone re-runs only the code steps of api and worker: every package and
    # dependency step is CACHED (rawjson). BuildKit now and then leaves one step out of a registry cache export
    # (moby/buildkit#4674, docker/buildx#414: seen here about one run in five, side by side more often), so one
    # miss is repeated once with new caches; a Dockerfile whose code comes before its dependencies misses every time.
    context = tmp_path / "context"
    shutil.copytree(CONTAINERS, context, ignore=shutil.ignore_patterns("__pycache__"))
    first = code_change_misses(devstack, context)
    if not any(first.values()):
        return
    print(f"BuildKit dropped cached steps once (repeating): {first}", file=sys.stderr)
    again = code_change_misses(devstack, context)
    assert not any(again.values()), f"dependency steps ran instead of coming from the cache: {first} then {again}"


def test_released_images_are_real_services_of_at_least_50_mb(devstack: Devstack, tmp_path: Path) -> None:
    # A smoke release of the real images, then each image runs: the api answers HTTP on its exposed port, the
    # worker logs its job loop; each image holds at least 50 MB of (compressed) layers.
    result = release(devstack, tmp_path, FRACTALOPS_CACHE_BRANCH=f"smoke-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 0, result.stderr[-3000:]
    refs = {parse_pinned_ref(r).path.rsplit("-", 1)[-1]: r for r in image_refs(result.stdout)}
    assert set(refs) == {"api", "worker"}
    assert {e["target"]: e["result"] for e in events(tmp_path)} == {"api": "ok", "worker": "ok"}
    smoke = run_smoke(devstack, f"api={refs['api']}", f"worker={refs['worker']}")
    assert smoke.returncode == 0, smoke.stderr
    api, worker = smoke.stdout.splitlines()
    assert api.startswith("smoke api: ok: port 8000: ")
    assert '"/healthz": [200, {"service": "fractalops-api", "status": "ok"}]' in api and '"inside":' in api
    assert worker.startswith("smoke worker: ok: ") and "job loop started" in worker and "job 1 done" in worker
    for target, ref in refs.items():
        assert compressed_size(ref) >= MIN_IMAGE_BYTES, f"{target}: {compressed_size(ref) / 2**20:.1f} MB"
    # The check can fail: the worker image serves no HTTP port, so as an api it fails with one line (exit 1).
    wrong = run_smoke(devstack, f"api={refs['worker']}")
    assert wrong.returncode == 1 and "expected one exposed TCP port, found none" in wrong.stderr, wrong.stderr
