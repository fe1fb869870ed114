"""Fixtures: a stand-in OCI registry over real HTTP, real git repositories (bare remote, clones, a source repo)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from release import settings
from release.gitops.yamledit import read_values, replace_values
from release.targets import load_targets
from release.topology.load import parse_topology
from release.topology.model import Topology

PROJECT = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# A promotion in a child process, run as the command line runs it: settings from the environment (the crash test
# hook included). Arguments: clone, source repository, topology file, dry|real, then the target=image_ref pairs.
PROMOTE_CHILD = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "from release import settings\n"
    "from release.errors import ReleaseError\n"
    "from release.gitops import writer\n"
    "from release.gitops.commands import PromoteRequest, run_promote\n"
    "clone, source, topology, mode, *pairs = sys.argv[1:]\n"
    "try:\n"
    "    loaded = settings.load(os.environ, {'topology': Path(topology), 'events_dir': Path(clone).parent / 'records'})\n"
    "    writer.set_crash_point(loaded.settings.test_crash_at)\n"
    "    request = PromoteRequest(tuple(pairs), dry_run=mode == 'dry', source_repo=Path(source))\n"
    "    code = run_promote(request, loaded, repo_root=Path(clone))\n"
    "except ReleaseError as err:\n"
    "    print(f'error: {err}', file=sys.stderr)\n"
    "    code = err.exit_code\n"
    "sys.exit(code)\n"
)


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a fixed identity; its stdout."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@dataclass
class StandInRegistry:
    """A stand-in for an OCI registry: real HTTP on 127.0.0.1 speaking the V2 manifest and blob endpoints."""

    host: str = ""
    blobs: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def add_image(
        self, path: str, revision: str | None, salt: str = "", extra_labels: dict[str, str] | None = None
    ) -> str:
        """Store an image whose config carries the revision label (and `extra_labels`); its manifest digest."""
        labels = {"org.opencontainers.image.title": path, **(extra_labels or {})}
        if revision is not None:
            labels["org.opencontainers.image.revision"] = revision
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Labels": labels}, "salt": salt}
        ).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [],
            }
        ).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.blobs[(path, config_digest)] = ("application/vnd.oci.image.config.v1+json", config)
        self.blobs[(path, digest)] = (MANIFEST, manifest)
        return digest

    def ref(self, path: str, digest: str, tag: str | None = None) -> str:
        """`host/path[:tag]@digest`."""
        return f"{self.host}/{path}{':' + tag if tag else ''}@{digest}"


def _handler(registry: StandInRegistry) -> type[BaseHTTPRequestHandler]:
    route = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            registry.requests.append(f"{self.command} {self.path}")
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            match = route.match(self.path)
            found = match and registry.blobs.get((match["name"], match["ref"]))
            if not match or not found:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            media_type, data = found
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Content-Digest", match["ref"])
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(False)

        def do_GET(self) -> None:
            self._answer(True)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def registry() -> Iterator[StandInRegistry]:
    """A stand-in registry served over real HTTP on 127.0.0.1 (not a real registry)."""
    state = StandInRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def topology(registry: StandInRegistry) -> Any:
    """The project's topology with the release registry pointed at the stand-in."""
    data = YAML(typ="safe").load((PROJECT / "ops/topology/fractalops.yaml").read_text())
    data["release"]["image_registry"] = registry.host
    data["release"]["scheme"] = "http"  # the stand-in speaks plain HTTP; the topology says so
    return parse_topology(data, "test topology")


@dataclass
class GitOpsWorld:
    """A source repository with ordered commits, a bare GitOps remote and a clone of it."""

    root: Path
    source: Path
    remote: Path
    clone: Path
    commits: list[str]
    registry: StandInRegistry

    def new_clone(self, name: str) -> Path:
        """Another clone of the remote."""
        path = self.root / name
        git(self.root, "clone", "-q", str(self.remote), str(path))
        return path

    def image(self, target: str, index: int, salt: str = "", labels: dict[str, str] | None = None) -> str:
        """A pinned ref of an image of `target` built from source commit `index`, stored in the registry."""
        path = f"yamonco/fractalops-{target}"
        digest = self.registry.add_image(path, self.commits[index], salt, labels)
        return self.registry.ref(path, digest, f"sha-{self.commits[index][:7]}")

    def remote_file(self, relative: str, rev: str = "main") -> str:
        """A file's text at `rev` of the remote."""
        return git(self.remote, "show", f"{rev}:{relative}")


def make_world(tmp_path: Path, registry: StandInRegistry, commits: int = 12) -> GitOpsWorld:
    """Build the source repo, seed the GitOps remote with the project's values files pinned at commit 0."""
    source = tmp_path / "source"
    source.mkdir()
    git(source, "init", "-q", "-b", "main")
    shas = []
    for index in range(commits):
        (source / "app.txt").write_text(f"version {index}\n")
        git(source, "add", "app.txt")
        git(source, "commit", "-q", "-m", f"source {index}")
        shas.append(git(source, "rev-parse", "HEAD").strip())
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    shutil.copytree(PROJECT / "ops/containers/fractalops", seed / "ops/containers/fractalops")
    targets = load_targets(PROJECT / "ops/containers/fractalops/targets.yaml")
    for name, target in targets.items():
        text = (PROJECT / target.values.file).read_text()
        paths = target.values.paths()
        current = read_values(text, list(paths.values()))
        path = f"yamonco/fractalops-{name}"
        digest = registry.add_image(path, shas[0], "seed")
        edits = {
            paths["repository"]: (current[paths["repository"]], f"{registry.host}/{path}"),
            paths["digest"]: (None, digest),
            paths["tag"]: (None, f"sha-{shas[0][:7]}"),
            paths["revision"]: (None, shas[0]),
        }
        destination = seed / target.values.file
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(replace_values(text, edits))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "seed")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    world = GitOpsWorld(tmp_path, source, remote, tmp_path / "clone", shas, registry)
    git(tmp_path, "clone", "-q", str(remote), str(world.clone))
    return world


@pytest.fixture
def world(tmp_path: Path, registry: StandInRegistry) -> GitOpsWorld:
    """A fresh GitOps world (source repo, bare remote, clone)."""
    return make_world(tmp_path, registry)


def push_options(**overrides: Any) -> dict[str, Any]:
    """The push settings a command hands to `promote`: the Settings defaults, with `overrides`."""
    defaults = settings.load({}).settings
    options: dict[str, Any] = {
        "remote": defaults.gitops_remote,
        "branch": defaults.gitops_branch,
        "author": defaults.gitops_author,
        "push_attempts": defaults.gitops_push_attempts,
        "push_backoff": defaults.gitops_push_backoff,
    }
    return {**options, **overrides}


def write_topology(world: GitOpsWorld, topology: Topology) -> Path:
    """The test topology as a file, for the commands that read it."""
    path = world.root / "topology.yaml"
    with path.open("w") as handle:
        YAML(typ="safe").dump(json.loads(topology.model_dump_json()), handle)
    return path


def loaded_for(world: GitOpsWorld, topology: Topology, **environ: str) -> settings.Loaded:
    """Settings as the command line loads them: the test topology, records beside the world, no docker login."""
    base = {
        "FRACTALOPS_TOPOLOGY": str(write_topology(world, topology)),
        "FRACTALOPS_EVENTS_DIR": str(world.root / "records"),
        "HOME": str(world.root),
    }
    return settings.load({**base, **environ})
