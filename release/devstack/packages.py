"""Seed what the images need, once, on the host: a Debian rootfs (mmdebstrap), an apt mirror subset, PyPI wheels.

What is seeded comes from the images themselves (`ops/containers/fractalops`): the Dockerfile's `BASE_IMAGE`
default (`debian:<suite>-slim`), `app/debian-packages.txt` and `app/requirements/*.txt`. Everything is fetched
with Debian's and PyPI's ordinary clients into a machine-wide cache (`/var/cache/fractalops-devstack`), keyed by
those inputs, then hard-linked into the stack's state folder, which the "nexus web" stand-in serves. A second
`up`, or a new stack on the same machine, fetches nothing.

The apt repository is a subset of a Debian mirror: Debian's own signed `InRelease` and `Packages.xz` of the suite
(as Nexus's apt proxy serves them, so builds verify them with debian-archive-keyring, no `[trusted=yes]`) and a
pool holding exactly the packages the images install on top of the base image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from release.devstack.commands import run
from release.devstack.install import APT_ENV, apt_install, archive_source, engine_sources_line, os_codename
from release.devstack.nexusweb import APT_REPOSITORY, PYPI_REPOSITORY
from release.devstack.paths import StackPaths
from release.errors import ConfigError, OperationError
from release.fsutil import file_lock

Log = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = REPO_ROOT / "ops" / "containers" / "fractalops"
MACHINE_CACHE = Path("/var/cache/fractalops-devstack")
SEED_TOOLS = ("mmdebstrap",)
# Bump when what a seed holds changes shape (another index file, another layout): stacks then seed again.
SEED_LAYOUT = 2
# Like the docker.io `-slim` images: minbase, no manuals, docs or translations, no /dev nodes.
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--mode=root",
    "--format=tar",
    "--skip=output/dev",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
)
BASE_IMAGE_ARG = re.compile(r"^ARG\s+BASE_IMAGE=(\S+)", re.MULTILINE)
SLIM_DEBIAN = re.compile(r"^(?:docker\.io/)?(?:library/)?debian:(?P<suite>[a-z]+)-slim$")
PYTHON_PLATFORMS = {"amd64": "x86_64", "arm64": "aarch64"}
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_34", "manylinux_2_39")


@dataclass(frozen=True)
class ImageSpec:
    """What the images build on: the base image, its suite, the Debian packages and pinned requirements."""

    base_image: str
    suite: str
    debian_packages: tuple[str, ...]
    requirements: tuple[tuple[str, str], ...]  # (file name, text)

    @property
    def base_repository(self) -> str:
        """Return the docker.io repository of the base image (e.g. library/debian)."""
        return "library/debian"

    @property
    def base_tag(self) -> str:
        """Return the tag of the base image (e.g. trixie-slim)."""
        return f"{self.suite}-slim"


def read_list(path: Path) -> list[str]:
    """Return the words of a list file, comments (#) and blank lines left out."""
    return [word for line in path.read_text().splitlines() for word in line.split("#", 1)[0].split()]


def image_spec(containers: Path = CONTAINERS) -> ImageSpec:
    """Read what the images need from their Dockerfile and app folder; a missing or odd file is a config error."""
    dockerfile = containers / "Dockerfile"
    try:
        text = dockerfile.read_text()
        packages = read_list(containers / "app" / "debian-packages.txt")
        requirements = sorted((containers / "app" / "requirements").glob("*.txt"))
        pinned = tuple((path.name, path.read_text()) for path in requirements)
    except OSError as err:
        raise ConfigError(f"reading the image inputs in {containers}: {err.strerror}: {err.filename}") from None
    found = BASE_IMAGE_ARG.search(text)
    match = SLIM_DEBIAN.match(found.group(1)) if found else None
    if match is None:
        shown = found.group(1) if found else "(no `ARG BASE_IMAGE=` line)"
        raise ConfigError(
            f"{dockerfile}: BASE_IMAGE default {shown!r} is not debian:<suite>-slim, the only base the devstack "
            "can make offline"
        )
    if not packages or not pinned:
        raise ConfigError(f"{containers / 'app'}: debian-packages.txt and requirements/*.txt must list something")
    return ImageSpec(found.group(1) if found else "", match.group("suite"), tuple(packages), pinned)


def digest_of(*parts: object) -> str:
    """Return a short, stable hash of JSON-able parts (a cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """Return the sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locked(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on a folder (two stacks seeding at once fetch once)."""
    return file_lock(folder / ".lock")


def fresh_dir(path: Path) -> Path:
    """Return an empty folder at `path` (removing what was there)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def machine_arch() -> str:
    """Return dpkg's architecture of this machine (e.g. amd64)."""
    arch = run(["dpkg", "--print-architecture"], step="dpkg --print-architecture", hint="run on Debian").strip()
    if arch not in PYTHON_PLATFORMS:
        raise OperationError(f"devstack images: architecture {arch!r} is not one of {', '.join(PYTHON_PLATFORMS)}")
    return arch


def mirror_line(suite: str) -> str:
    """Return a one-line apt source for `suite` on the machine's own Debian archive and keyring."""
    return engine_sources_line(archive_source(os_codename()), suite)


def ensure_rootfs(cache: Path, spec: ImageSpec, arch: str, log: Log) -> Path:
    """Return the cached rootfs tarball of debian:<suite>-slim, made with mmdebstrap when missing (~1.5 min)."""
    key = digest_of("rootfs", spec.suite, arch, MMDEBSTRAP_OPTIONS)
    tarball = cache / "rootfs" / f"debian-{spec.suite}-slim-{arch}-{key}.tar.gz"
    if tarball.is_file():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial.tar.gz")
    partial.unlink(missing_ok=True)
    log(f"devstack: making the base image rootfs with mmdebstrap ({spec.suite}, minbase; about 1.5 min, once)")
    started = time.monotonic()
    run(
        ["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--architectures={arch}", spec.suite, partial, mirror_line(spec.suite)],
        step=f"mmdebstrap {spec.suite} (the offline debian:{spec.suite}-slim)",
        hint="check the network to the Debian archive in the machine's apt sources, then `devstack up` again",
        timeout=1200.0,
    )
    partial.replace(tarball)
    log(f"devstack: rootfs ready in {time.monotonic() - started:.0f} s ({tarball.stat().st_size // 2**20} MB)")
    return tarball


def dpkg_status_of(rootfs: Path) -> bytes:
    """Return the dpkg status file inside a rootfs tarball (what the base image already has installed)."""
    with tarfile.open(rootfs) as archive:
        for name in ("./var/lib/dpkg/status", "var/lib/dpkg/status"):
            with contextlib.suppress(KeyError):
                member = archive.extractfile(name)
                if member is not None:
                    return member.read()
    raise OperationError(f"{rootfs}: has no var/lib/dpkg/status. What to do: delete it and run `devstack up` again")


def apt_options(apt: Path, arch: str) -> list[str]:
    """Return apt options for a private apt that keeps the suite's Packages.xz exactly as Debian signed it."""
    return [
        "-o", f"Dir::State={apt / 'state'}",
        "-o", f"Dir::State::status={apt / 'status'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o", f"Dir::Etc::PreferencesParts={apt / 'preferences.d'}",
        "-o", "APT::Sandbox::User=root",
        "-o", f"APT::Architecture={arch}",
        "-o", "Acquire::Languages=en",
        "-o", "Acquire::GzipIndexes=true",
        "-o", "Acquire::CompressionTypes::Order::=xz",
        "-o", "Acquire::IndexTargets::deb::Packages::KeepCompressedAs=xz",
        "-o", "Acquire::IndexTargets::deb::Translations::KeepCompressedAs=xz",
    ]  # fmt: skip


@dataclass(frozen=True)
class Download:
    """One package apt would fetch: its path in the archive (pool/…) and the file name apt stores it under."""

    pool_path: str
    file_name: str


def parse_print_uris(text: str, archive_uri: str) -> list[Download]:
    """Return the downloads of `apt-get install --print-uris` output (`'URL' FILE SIZE HASH` lines)."""
    prefix = archive_uri.rstrip("/") + "/"
    downloads: list[Download] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("'"):
            continue
        url = parts[0].strip("'")
        if not url.startswith(prefix):
            raise OperationError(f"apt-get --print-uris: {url} is not under the archive {prefix}")
        downloads.append(Download(urllib.parse.unquote(url[len(prefix) :]), parts[1]))
    return downloads


def python_version_of(version: str) -> str:
    """Return `major.minor` of a Debian python3 package version (3.13.5-1 → 3.13)."""
    match = re.match(r"^(?:\d+:)?(\d+)\.(\d+)", version)
    if match is None:
        raise OperationError(f"apt: python3 version {version!r} is not N.N…")
    return f"{match.group(1)}.{match.group(2)}"


def ensure_apt_mirror(cache: Path, spec: ImageSpec, arch: str, rootfs: Path, log: Log) -> Path:
    """Return the cached apt-debian tree for the images' packages on top of `rootfs`, fetching it when missing."""
    key = digest_of("apt", spec.suite, arch, file_sha256(rootfs), sorted(spec.debian_packages), mirror_indexes(arch))
    mirror = cache / APT_REPOSITORY / f"{spec.suite}-{arch}-{key}"
    if (mirror / "seed.json").is_file():
        return mirror
    apt = fresh_dir(cache / "apt" / f"{spec.suite}-{arch}")
    for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_bytes(dpkg_status_of(rootfs))
    source = archive_source(os_codename())
    (apt / "sources.list").write_text(engine_sources_line(source, spec.suite))
    options = apt_options(apt, arch)
    hint = f"check the network to the Debian archive ({source.uri}) and {apt / 'sources.list'}"
    log(f"devstack: fetching the {spec.suite} index and {len(spec.debian_packages)} package(s) for apt-debian")
    run(["apt-get", *options, "update"], step=f"apt-get update ({spec.suite}, private)", hint=hint, env=APT_ENV)
    install = ["apt-get", *options, "install", "-y", "-qq", "--no-install-recommends"]
    listed = run(
        [*install, "--print-uris", *spec.debian_packages],
        step=f"apt-get install --print-uris {' '.join(spec.debian_packages)}",
        hint=f"check that {spec.suite} has these packages ({CONTAINERS / 'app/debian-packages.txt'})",
        env=APT_ENV,
    )
    downloads = parse_print_uris(listed, source.uri)
    run([*install, "--download-only", *spec.debian_packages], step="apt-get download", hint=hint, env=APT_ENV)
    shown = run(
        ["apt-cache", *options, "show", "--no-all-versions", "python3"], step="apt-cache show python3", hint=hint
    )
    version = next((line.split(":", 1)[1].strip() for line in shown.splitlines() if line.startswith("Version:")), "")
    partial = fresh_dir(mirror.with_name(mirror.name + ".partial"))
    lists = apt / "state" / "lists"
    dists = partial / "dists" / spec.suite
    dists.mkdir(parents=True)
    shutil.copy2(one(lists.glob(f"*_dists_{spec.suite}_InRelease"), lists), dists / "InRelease")
    for index in mirror_indexes(arch):
        served = dists / index
        (served.parent / "by-hash" / "SHA256").mkdir(parents=True, exist_ok=True)
        shutil.copy2(one(lists.glob(f"*_dists_{spec.suite}_{index.replace('/', '_')}"), lists), served)
        os.link(served, served.parent / "by-hash" / "SHA256" / file_sha256(served))
    archives = apt / "cache" / "archives"
    for download in downloads:
        target = partial / download.pool_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(archives / download.file_name, target)
    seed = {"suite": spec.suite, "arch": arch, "python": python_version_of(version), "packages": len(downloads)}
    (partial / "seed.json").write_text(json.dumps(seed, indent=2) + "\n")
    if mirror.exists():
        shutil.rmtree(mirror)
    partial.rename(mirror)
    shutil.rmtree(apt / "cache" / "archives", ignore_errors=True)
    return mirror


def mirror_indexes(arch: str) -> tuple[str, ...]:
    """Return the index files of the suite the mirror serves, as Debian signed them (apt-get update fetches these)."""
    return (f"main/binary-{arch}/Packages.xz", "main/i18n/Translation-en.xz")


def one(found: Iterator[Path], where: Path) -> Path:
    """Return the single path a glob found, or raise naming the folder."""
    paths = list(found)
    if len(paths) != 1:
        raise OperationError(f"apt lists in {where}: expected one index file, found {len(paths)}")
    return paths[0]


def pip_platform_args(python: str, arch: str) -> list[str]:
    """Return `pip download` options selecting wheels for CPython `python` on Linux `arch`."""
    tag = python.replace(".", "")
    machine = PYTHON_PLATFORMS[arch]
    platforms = [arg for base in MANYLINUX for arg in ("--platform", f"{base}_{machine}")]
    return [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--abi",
        f"cp{tag}",
        *platforms,
    ]


def ensure_wheels(cache: Path, spec: ImageSpec, python: str, arch: str, log: Log) -> Path:
    """Return the cached folder of wheels for every requirements file, downloaded with pip when missing."""
    key = digest_of("wheels", python, arch, spec.requirements)
    wheels = cache / PYPI_REPOSITORY / f"cp{python.replace('.', '')}-{arch}-{key}"
    if (wheels / "seed.json").is_file():
        return wheels
    partial = fresh_dir(wheels.with_name(wheels.name + ".partial"))
    requirement_args: list[str] = []
    for name, text in spec.requirements:
        (partial / name).write_text(text)
        requirement_args += ["-r", str(partial / name)]
    log(f"devstack: pip download of {', '.join(n for n, _ in spec.requirements)} for CPython {python} ({arch})")
    run(
        [
            sys.executable,
            *("-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(partial)),
            *pip_platform_args(python, arch),
            *requirement_args,
        ],
        step=f"pip download of the images' requirements (CPython {python})",
        hint=f"check the pins in {CONTAINERS / 'app/requirements'} and the network to PyPI",
        timeout=900.0,
    )
    for name, _ in spec.requirements:
        (partial / name).unlink()
    files = sorted(p.name for p in partial.iterdir())
    (partial / "seed.json").write_text(json.dumps({"python": python, "arch": arch, "files": files}, indent=2) + "\n")
    if wheels.exists():
        shutil.rmtree(wheels)
    partial.rename(wheels)
    return wheels


def link_tree(source: Path, target: Path) -> None:
    """Make `target` a copy of `source` by hard links (a plain copy across file systems), replacing it whole."""
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, partial, copy_function=link)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


@dataclass(frozen=True)
class Seed:
    """What a stack serves: its packages folder, the base image's rootfs, and whether `up` had to change them."""

    root: Path
    rootfs: Path
    spec: ImageSpec
    python: str
    changed: bool


def packages_dir(paths: StackPaths) -> Path:
    """Return the state folder's packages folder (served by the nexus web stand-in)."""
    return paths.root / "packages"


def ensure_seeded(paths: StackPaths, log: Log, cache: Path = MACHINE_CACHE, containers: Path = CONTAINERS) -> Seed:
    """Make the stack's packages folder hold the base rootfs, apt-debian and pypi-group for the images; fast if done."""
    spec = image_spec(containers)
    root = packages_dir(paths)
    want = digest_of("seed", SEED_LAYOUT, spec.suite, spec.debian_packages, spec.requirements, MMDEBSTRAP_OPTIONS)
    marker = root / "seed.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        recorded = json.loads(marker.read_text())
        rootfs = root / str(recorded["rootfs"])
        if (
            recorded["key"] == want
            and rootfs.is_file()
            and all((root / n).is_dir() for n in (APT_REPOSITORY, PYPI_REPOSITORY))
        ):
            return Seed(root, rootfs, spec, str(recorded["python"]), changed=False)
    apt_install(SEED_TOOLS, log)
    arch = machine_arch()
    with locked(cache):
        cached_rootfs = ensure_rootfs(cache, spec, arch, log)
        mirror = ensure_apt_mirror(cache, spec, arch, cached_rootfs, log)
        python = str(json.loads((mirror / "seed.json").read_text())["python"])
        wheels = ensure_wheels(cache, spec, python, arch, log)
        root.mkdir(parents=True, exist_ok=True)
        link_tree(mirror, root / APT_REPOSITORY)
        link_tree(wheels, root / PYPI_REPOSITORY)
        rootfs = root / cached_rootfs.name
        if not rootfs.is_file():
            for old in root.glob("debian-*.tar.gz"):
                old.unlink()
            link_tree_file(cached_rootfs, rootfs)
    record = {"key": want, "rootfs": rootfs.name, "python": python, "suite": spec.suite, "arch": arch}
    marker.write_text(json.dumps(record, indent=2) + "\n")
    return Seed(root, rootfs, spec, python, changed=True)


def served_summary(root: Path) -> str:
    """Return what a packages folder serves, for `devstack status` (wheels, Debian packages, suite)."""
    wheels = len(list((root / PYPI_REPOSITORY).glob("*.whl")))
    debs = len(list((root / APT_REPOSITORY).rglob("*.deb")))
    suites = sorted(p.name for p in (root / APT_REPOSITORY / "dists").glob("*"))
    return f"{PYPI_REPOSITORY} ({wheels} wheels), {APT_REPOSITORY} ({', '.join(suites) or 'no suite'}: {debs} packages)"


def link_tree_file(source: Path, target: Path) -> None:
    """Hard-link one file (a copy across file systems)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
