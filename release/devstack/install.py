"""Install the stack's parts from Debian: packaged where new enough, else the next suite unpacked."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from release.adapters import process
from release.devstack.commands import run
from release.devstack.paths import StackPaths
from release.errors import OperationError

Log = Callable[[str], None]

# Parts from the machine's own suite (apt-get install).
# Every command the stack runs comes from one of these (umount: `mount`, ip: `iproute2`), so a minimal root works.
BASE_PACKAGES = (
    "containerd",
    "runc",
    "iptables",
    "iproute2",
    "mount",
    "docker-registry",
    "busybox-static",
    "ca-certificates",
    "tini",  # the engine's docker-init (buildx's docker-container builders run with --init)
)
# What only the cluster shape runs: its DNS server (dnsmasq without a system service), installed by `up --shape cluster`.
CLUSTER_PACKAGES = ("dnsmasq-base",)
# The engine, client and buildx; too old or missing on Debian 12, so taken from Debian 13 there.
ENGINE_PACKAGES = ("docker.io", "docker-cli", "docker-buildx")
# Suites whose own engine is too old, mapped to the suite the engine comes from. Never sid: it moves.
ENGINE_SUITE_FOR = {"bookworm": "trixie"}
SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class Binaries:
    """The executables the stack runs."""

    dockerd: str
    docker: str
    docker_buildx: str
    containerd: str
    registry: str
    busybox: str
    engine_path: str  # PATH for dockerd and containerd: prefix dirs first, then the system's

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Binaries:
        """Return binaries read back from the install marker."""
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})

    @property
    def docker_init(self) -> str:
        """Return the engine's docker-init, beside the docker client (a link to tini-static)."""
        return str(Path(self.docker).with_name("docker-init"))

    def missing(self) -> list[str]:
        """Return the binaries that do not exist (any means the install must run again)."""
        paths = [self.dockerd, self.docker, self.docker_buildx, self.containerd, self.registry, self.busybox]
        return [p for p in [*paths, self.docker_init] if not os.access(p, os.X_OK)]


@dataclass(frozen=True)
class ArchiveSource:
    """The Debian archive the machine already uses: URI and keyring."""

    uri: str
    signed_by: str | None


def os_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """Return the Debian codename of this machine (e.g. bookworm), or '' if unknown."""
    try:
        text = os_release.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    return ""


def parse_deb822_sources(text: str, codename: str) -> ArchiveSource | None:
    """Return the archive stanza of a deb822 .sources text that serves `codename` (not -security)."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        suites = fields.get("suites", "").split()
        if "deb" in fields.get("types", "").split() and codename in suites and fields.get("uris"):
            return ArchiveSource(uri=fields["uris"].split()[0], signed_by=fields.get("signed-by"))
    return None


def parse_one_line_sources(text: str, codename: str) -> ArchiveSource | None:
    """Return the archive of a one-line sources.list text that serves `codename`."""
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts or parts[0] != "deb":
            continue
        rest = parts[1:]
        signed_by = None
        if rest and rest[0].startswith("["):
            options: list[str] = []
            while rest:
                options.append(rest.pop(0))
                if options[-1].endswith("]"):
                    break
            for opt in " ".join(options).strip("[]").split():
                if opt.startswith("signed-by="):
                    signed_by = opt.split("=", 1)[1]
        if len(rest) >= 2 and rest[1] == codename:
            return ArchiveSource(uri=rest[0], signed_by=signed_by)
    return None


def archive_source(codename: str) -> ArchiveSource:
    """Return the machine's own Debian archive, read from its apt sources (never hard-coded)."""
    candidates = sorted(SOURCES_DIR.glob("*.sources")) if SOURCES_DIR.is_dir() else []
    for path in candidates:
        found = parse_deb822_sources(path.read_text(), codename)
        if found:
            return found
    lists = [SOURCES_LIST, *sorted(SOURCES_DIR.glob("*.list"))] if SOURCES_DIR.is_dir() else [SOURCES_LIST]
    for path in lists:
        if path.is_file():
            found = parse_one_line_sources(path.read_text(), codename)
            if found:
                return found
    raise OperationError(
        f"reading apt sources: no 'deb' source for suite {codename!r} in {SOURCES_DIR} or {SOURCES_LIST}. "
        "What to do: configure the machine's Debian archive in apt, then run `devstack up` again."
    )


def engine_sources_line(source: ArchiveSource, suite: str) -> str:
    """Return the private one-line sources.list entry for the engine suite."""
    options = f"[signed-by={source.signed_by}] " if source.signed_by else ""
    return f"deb {options}{source.uri} {suite} main\n"


def private_apt_options(paths: StackPaths) -> list[str]:
    """Return apt-get options that use only the private sources list and state dir."""
    apt = paths.apt_dir
    return [
        "-o", f"Dir::State={apt / 'state'}",
        "-o", f"Dir::State::status={apt / 'state' / 'status'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o", f"Dir::Etc::PreferencesParts={apt / 'preferences.d'}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def dpkg_installed(packages: tuple[str, ...]) -> list[str]:
    """Return the packages of the list that dpkg reports as installed."""
    proc = process.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.endswith(" installed")]


def package_version(package: str) -> str:
    """Return the installed version of a package, or ''."""
    proc = process.run(["dpkg-query", "-W", "-f", "${Version}", package], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


@contextmanager
def no_service_starts() -> Iterator[None]:
    """Keep package scripts from starting system services (a system engine or registry) during install."""
    created = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text("#!/bin/sh\n# fractalops devstack: no service starts during install\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        created = True
    try:
        yield
    finally:
        if created:
            POLICY_RC_D.unlink(missing_ok=True)


def require_root() -> None:
    """Refuse to install unless running as root with apt-get available."""
    if os.geteuid() != 0:
        raise OperationError(
            "installing devstack packages needs root (apt-get install). "
            "What to do: run `devstack up` as root, or install the packages "
            f"{' '.join(BASE_PACKAGES)} yourself first."
        )
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise OperationError(
            "installing devstack packages needs apt-get and dpkg (a Debian machine). "
            "What to do: run the devstack on Debian 12 or 13."
        )


def apt_install(packages: tuple[str, ...], log: Log) -> None:
    """Install missing packages from the machine's own suites (one update first)."""
    missing = [p for p in packages if p not in dpkg_installed(packages)]
    if not missing:
        return
    require_root()
    log(f"devstack: apt-get install {' '.join(missing)}")
    run(
        ["apt-get", "update"],
        step="apt-get update",
        hint="check the network to the Debian archive and /etc/apt/sources.list.d, then retry",
        env=APT_ENV,
    )
    with no_service_starts():
        run(
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            step=f"apt-get install {' '.join(missing)}",
            hint="read apt's message above; fix the package state (`apt-get -f install`) and retry",
            env=APT_ENV,
        )


def download_engine_packages(paths: StackPaths, codename: str, suite: str, log: Log) -> dict[str, Path]:
    """Download the engine packages of `suite` with a private apt state and return the .deb files."""
    return download_packages(paths, codename, suite, ENGINE_PACKAGES, log)


def download_packages(
    paths: StackPaths, codename: str, suite: str, packages: tuple[str, ...], log: Log
) -> dict[str, Path]:
    """Download packages of `suite` (the machine's own archive) with a private apt state in `paths`; the .deb files."""
    source = archive_source(codename)
    apt = paths.apt_dir
    for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    (apt / "sources.list").write_text(engine_sources_line(source, suite))
    options = private_apt_options(paths)
    log(f"devstack: apt-get update for the private {suite} sources")
    run(
        ["apt-get", *options, "update"],
        step=f"apt-get update of the private {suite} sources ({apt / 'sources.list'})",
        hint=f"check that the archive in {apt / 'sources.list'} serves {suite} and its key is trusted",
        env=APT_ENV,
    )
    debs_dir = paths.downloads
    if debs_dir.exists():
        shutil.rmtree(debs_dir)
    debs_dir.mkdir(parents=True)
    log(f"devstack: apt-get download {' '.join(packages)} ({suite})")
    run(
        ["apt-get", *options, "download", *packages],
        step=f"apt-get download {' '.join(packages)} from {suite}",
        hint=f"check that {suite} still has these packages (`apt-cache` with the same -o options)",
        env=APT_ENV,
        cwd=debs_dir,
    )
    debs: dict[str, Path] = {}
    for package in packages:
        found = sorted(debs_dir.glob(f"{package}_*.deb"))
        if not found:
            raise OperationError(
                f"apt-get download {package} from {suite}: no .deb in {debs_dir}. "
                "What to do: rerun `devstack up`; if it repeats, download the package by hand there."
            )
        debs[package] = found[-1]
    return debs


def unpack(debs: dict[str, Path], prefix: Path, log: Log) -> dict[str, str]:
    """Unpack .deb files into the prefix with `dpkg -x` and return their versions."""
    if prefix.exists():
        shutil.rmtree(prefix)
    prefix.mkdir(parents=True)
    versions: dict[str, str] = {}
    for package, deb in debs.items():
        log(f"devstack: dpkg -x {deb.name}")
        run(
            ["dpkg", "-x", deb, prefix],
            step=f"unpacking {deb.name}",
            hint=f"delete {deb} and run `devstack up` again (the download may be damaged)",
        )
        versions[package] = deb.name.split("_")[1]
    return versions


def link_system_tools(prefix: Path, system: Path = Path("/")) -> list[str]:
    """Point the unpacked engine's relative links to files of other packages (docker-init -> tini-static) at the system's."""
    relinked: list[str] = []
    for folder in ("usr/bin", "usr/sbin"):
        unpacked = prefix / folder
        for link in sorted(unpacked.iterdir()) if unpacked.is_dir() else ():
            if not link.is_symlink() or link.exists() or os.readlink(link).startswith("/"):
                continue
            target = system / folder / os.readlink(link)
            if os.access(target, os.X_OK):
                link.unlink()
                link.symlink_to(target)
                relinked.append(link.name)
    return relinked


def first_executable(candidates: list[Path], what: str, hint: str) -> str:
    """Return the first existing executable of the candidates or raise naming the part."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return str(path)
    listed = ", ".join(str(p) for p in candidates)
    raise OperationError(f"locating {what}: none of {listed} exists. What to do: {hint}")


def locate_binaries(root: Path) -> Binaries:
    """Return the stack's executables under `root` (a prefix, or / for packaged installs)."""
    hint_engine = "remove the state dir's installed.json and run `devstack up` again to reinstall"
    usr = root / "usr"
    engine_dirs = [usr / "sbin", usr / "bin"]
    return Binaries(
        dockerd=first_executable([d / "dockerd" for d in engine_dirs], "dockerd (docker.io)", hint_engine),
        docker=first_executable([usr / "bin" / "docker"], "docker client (docker-cli)", hint_engine),
        docker_buildx=first_executable(
            [usr / "libexec" / "docker" / "cli-plugins" / "docker-buildx"],
            "buildx plugin (docker-buildx)",
            hint_engine,
        ),
        containerd=first_executable([Path("/usr/bin/containerd")], "containerd", "apt-get install containerd"),
        registry=first_executable(
            [Path("/usr/bin/docker-registry")], "docker-registry", "apt-get install docker-registry"
        ),
        busybox=first_executable([Path("/bin/busybox")], "busybox (busybox-static)", "apt-get install busybox-static"),
        engine_path=":".join(
            [str(d) for d in engine_dirs if root != Path("/")]
            + ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        ),
    )


def read_marker(paths: StackPaths) -> Binaries | None:
    """Return the binaries of a finished install if its marker is valid and every binary exists."""
    try:
        data = json.loads(paths.install_marker.read_text())
        binaries = Binaries.from_json(data["binaries"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if binaries.missing():
        return None
    if len(dpkg_installed(tuple(data.get("apt_packages", BASE_PACKAGES)))) != len(
        data.get("apt_packages", BASE_PACKAGES)
    ):
        return None
    return binaries


def ensure_installed(paths: StackPaths, log: Log) -> Binaries:
    """Install whatever is missing and return the binaries; quick when the marker says it is done."""
    done = read_marker(paths)
    if done is not None:
        return done
    started = time.monotonic()
    codename = os_codename()
    if not codename:
        raise OperationError(
            "detecting the Debian release: /etc/os-release has no VERSION_CODENAME. "
            "What to do: run the devstack on Debian 12 (bookworm) or 13 (trixie)."
        )
    engine_suite = ENGINE_SUITE_FOR.get(codename)
    apt_packages: tuple[str, ...]
    paths.root.mkdir(parents=True, exist_ok=True)
    if engine_suite is None:
        # Debian 13 and later: the packaged engine, client and buildx are new enough.
        apt_packages = BASE_PACKAGES + ENGINE_PACKAGES
        apt_install(apt_packages, log)
        binaries = locate_binaries(Path("/"))
        versions = {p: package_version(p) for p in ENGINE_PACKAGES}
    else:
        apt_packages = BASE_PACKAGES
        apt_install(apt_packages, log)
        require_root()
        debs = download_engine_packages(paths, codename, engine_suite, log)
        versions = unpack(debs, paths.prefix, log)
        link_system_tools(paths.prefix)
        binaries = locate_binaries(paths.prefix)
    marker = {
        "codename": codename,
        "engine_suite": engine_suite or codename,
        "engine_versions": versions,
        "apt_packages": list(apt_packages),
        "binaries": asdict(binaries),
        "install_seconds": round(time.monotonic() - started, 1),
    }
    paths.install_marker.write_text(json.dumps(marker, indent=2) + "\n")
    log(f"devstack: installed in {marker['install_seconds']} s ({', '.join(f'{k} {v}' for k, v in versions.items())})")
    return binaries
