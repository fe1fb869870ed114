"""Shared BuildKit builders set up from the topology: plan a `docker buildx create`, then create it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from release.adapters import process
from release.errors import EngineError, UsageError
from release.fsutil import write_atomic
from release.topology.buildkitd import render_buildkitd
from release.topology.model import Topology

DRIVERS = ("kubernetes", "docker-container", "remote")
REMOTE_SCHEMES = ("tcp://", "unix://", "docker-container://", "kube-pod://")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# How BuildKit reaches Nexus when the builder runs under each driver: pods of the kubernetes driver
# resolve cluster DNS; a docker-container builder on a node does not, but reaches the ClusterIP.
DEFAULT_VIA = {"kubernetes": "service", "docker-container": "clusterip"}
# The image buildx's docker-container driver runs unless told otherwise (docker.io's, so through the docker-group).
BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"

Runner = Callable[[Sequence[str]], Any]


@dataclass(frozen=True)
class RemoteTLS:
    """Client TLS for a remote buildkitd (`--driver-opt cacert=…,cert=…,key=…,servername=…`)."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    servername: str | None = None

    def driver_opt(self) -> str:
        """The remote driver's TLS options, absolute paths (buildx reads the files at every connection)."""
        files = (("cacert", self.cacert), ("cert", self.cert), ("key", self.key))
        opts = [f"{name}={Path(path).absolute()}" for name, path in files if path is not None]
        if self.servername:
            opts.append(f"servername={self.servername}")
        return ",".join(opts)

    def check(self) -> None:
        """Refuse a half pair (cert without key), a missing file, or a value buildx's option list cannot carry."""
        if (self.cert is None) != (self.key is None):
            raise UsageError("--tls-cert and --tls-key go together (the client certificate and its key)")
        for flag, path in (("--tls-cacert", self.cacert), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if path is None:
                continue
            if not Path(path).is_file():
                raise UsageError(f"{flag}: {path} is not a file")
            if "," in str(Path(path).absolute()):
                raise UsageError(f"{flag}: {path} contains ',', which buildx's --driver-opt list cannot carry")
        if self.servername is not None and not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", self.servername):
            raise UsageError(f"--tls-servername: {self.servername!r} is not a host name")


@dataclass(frozen=True)
class BuilderPlan:
    """What `create_builder` will do: the exact command and the buildkitd.toml it writes first."""

    name: str
    driver: str
    argv: tuple[str, ...]
    config_path: Path | None
    config_text: str | None
    via: str | None
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        """A human summary for dry runs: the command, then what else to know."""
        import shlex

        lines = [shlex.join(self.argv)]
        if self.config_path is not None:
            lines.insert(0, f"write {self.config_path} (buildkitd.toml, Nexus via {self.via})")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_builder(
    topology: Topology,
    name: str,
    driver: str,
    *,
    endpoint: str | None = None,
    replicas: int = 1,
    namespace: str = "buildkit",
    config_path: Path | None = None,
    via: str | None = None,
    use: bool = False,
    bootstrap: bool = True,
    tls: RemoteTLS | None = None,
    image: str | None = None,
) -> BuilderPlan:
    """Plan a builder: `kubernetes` (replicas, namespace), `docker-container` (image), or `remote` (endpoint, tls)."""
    if driver not in DRIVERS:
        raise UsageError(f"--driver: {driver!r} is not one of {', '.join(DRIVERS)}")
    if not _NAME.fullmatch(name):
        raise UsageError(f"--name: {name!r} is not a builder name (letters, digits, '.', '_', '-'; at most 63)")
    argv = ["docker", "buildx", "create", "--name", name, "--driver", driver]
    notes: list[str] = []
    if driver == "remote":
        # No endpoint given: the topology's shared BuildKit, and its server name unless `tls` names one.
        if endpoint is None and topology.builder is not None:
            endpoint = topology.builder.endpoint
            notes.append(f"endpoint {endpoint} is the topology's shared BuildKit (builder.endpoint)")
            servername = topology.builder.tls_servername
            if tls is not None and tls.servername is None and servername is not None:
                tls = replace(tls, servername=servername)
        if endpoint is None:
            raise UsageError(
                "--endpoint: the remote driver needs the buildkitd address: give --endpoint tcp://HOST:PORT, "
                "or a shared BuildKit in the topology (builder.endpoint)"
            )
        if not endpoint.startswith(REMOTE_SCHEMES):
            raise UsageError(
                f"--endpoint: the remote driver needs one of {', '.join(REMOTE_SCHEMES)}, got {endpoint!r}"
            )
        if config_path is not None or via is not None:
            raise UsageError(
                "the remote driver takes no buildkitd config: configure the remote buildkitd itself "
                "(render its file with `fractalops-release topology render-buildkitd`)"
            )
        notes.append(
            "remote buildkitd is configured where it runs: install the output of "
            "`fractalops-release topology render-buildkitd` as its /etc/buildkit/buildkitd.toml"
        )
        if tls is not None:
            if not endpoint.startswith("tcp://"):
                raise UsageError(f"--tls-*: TLS applies to a tcp:// endpoint, not {endpoint!r}")
            tls.check()
            argv += ["--driver-opt", tls.driver_opt()]
            notes.append("buildx reads the TLS files at every connection: keep them where they are")
    else:
        if tls is not None:
            raise UsageError(f"--tls-* options are for the remote driver only, not {driver}")
        if endpoint is not None:
            raise UsageError(f"--endpoint is for the remote driver only, not {driver}")
        if config_path is None:
            raise UsageError(f"the {driver} driver needs a path for the rendered buildkitd.toml")
        if driver == "kubernetes":
            if replicas < 1:
                raise UsageError(f"--replicas must be at least 1, got {replicas}")
            if not _DNS_LABEL.fullmatch(namespace):
                raise UsageError(f"--namespace: {namespace!r} is not a Kubernetes namespace name")
            argv += ["--driver-opt", f"replicas={replicas},namespace={namespace}"]
            notes.append(f"the kubernetes driver needs a kubeconfig allowed to manage Deployments in {namespace}")
        argv += ["--buildkitd-config", str(config_path)]
    chosen_via = via or DEFAULT_VIA.get(driver, "service")
    if driver == "docker-container":
        # The engine pulls the image itself: it gives a docker.io mirror no credentials, so name the docker-group.
        argv += ["--driver-opt", f"image={image or builder_image(topology, chosen_via)}"]
        notes.append(
            "the engine pulls the BuildKit image with the docker client's credentials for its registry: "
            f"`docker login {topology.nexus_host(chosen_via)}:{topology.nexus.docker_group_port}` first"
        )
    elif image is not None:
        raise UsageError(f"--image is for the docker-container driver only, not {driver}")
    if bootstrap:
        argv.append("--bootstrap")
    if use:
        argv.append("--use")
    if driver == "remote":
        assert endpoint is not None  # checked above; narrows the type for mypy
        argv.append(endpoint)
        return BuilderPlan(name, driver, tuple(argv), None, None, None, tuple(notes))
    text = render_buildkitd(topology, chosen_via)
    return BuilderPlan(name, driver, tuple(argv), config_path, text, chosen_via, tuple(notes))


def builder_image(topology: Topology, via: str) -> str:
    """Return buildx's default BuildKit image as the docker-group serves it (`via` picks its name or ClusterIP)."""
    return f"{topology.nexus_host(via)}:{topology.nexus.docker_group_port}/{BUILDKIT_IMAGE}"


def default_config_path(builders_dir: Path, name: str) -> Path:
    """Where `builder create` keeps a builder's rendered buildkitd.toml unless told otherwise (see Loaded.builders_dir)."""
    return builders_dir / name / "buildkitd.toml"


def run_docker(argv: Sequence[str]) -> str:
    """Run a docker command through the process adapter; its failure becomes a one-line EngineError."""
    try:
        return process.run(argv, timeout=None).stdout
    except process.ProcessError as err:
        if err.returncode is None:
            raise EngineError(f"{argv[0]} is not installed here") from None
        last = err.stderr_tail.splitlines()[-1] if err.stderr_tail else "failed"
        raise EngineError(f"{' '.join(argv[:3])} failed: {last}") from None


def create_builder(plan: BuilderPlan, run: Runner = run_docker) -> None:
    """Write the plan's buildkitd.toml, then run its `docker buildx create`."""
    if plan.config_path is not None and plan.config_text is not None:
        try:
            plan.config_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(plan.config_path, plan.config_text.encode(), mode=0o644)
        except OSError as err:
            raise EngineError(f"cannot write {plan.config_path}: {err}") from None
    run(plan.argv)
