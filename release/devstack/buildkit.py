"""A standalone BuildKit (buildkitd, buildctl) built offline from Debian 13's Go source packages, once per machine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.devstack.commands import run
from release.devstack.install import (
    APT_ENV,
    archive_source,
    engine_sources_line,
    os_codename,
    private_apt_options,
    require_root,
)
from release.devstack.paths import StackPaths
from release.errors import OperationError
from release.fsutil import file_lock

Log = Callable[[str], None]

# Debian 13 carries the BuildKit v0.13 tree (cmd/buildkitd and cmd/buildctl included) inside the docker.io sources.
GO_SOURCE_SUITE = "trixie"
SOURCE_PACKAGE = "golang-github-docker-docker-dev"
BUILDKIT_IMPORT = "github.com/moby/buildkit"
BUILDKIT_SERIES = "v0.13"
COMMANDS = ("buildkitd", "buildctl")
# The toolchain comes from golang-go's closure (golang-1.NN-go and golang-1.NN-src), unpacked like the sources.
TOOLCHAIN_ROOT = "golang-go"
_TOOLCHAIN = re.compile(r"golang-(\d+)\.(\d+)-(go|src)")
_GO_DEV = re.compile(r"golang-.+-dev")
# The old protobuf API package ships the same import path as golang-github-golang-protobuf-1-5-dev: they clash.
EXCLUDED_PACKAGES = frozenset({"golang-github-golang-protobuf-1-3-dev"})
# Remote cache backends whose SDKs Debian does not package (go-actions-cache, the Azure storage SDK).
DROPPED_CACHE_BACKENDS = ("gha", "azblob")
SHIMS = Path(__file__).with_name("buildkit_shims")
# Bump when the recipe changes in a way the shims' bytes do not show (flags, patches, package choice).
RECIPE = "1: buildkitd+buildctl; CGO_ENABLED=0 -trimpath -s -w; main.go without gha,azblob; /vN links; shims"
MACHINE_CACHE = Path("/var/cache/fractalops-devstack")
MARKER = "buildkit.json"
MAX_ROUNDS = 6
MIN_FREE_BYTES = 3 * 1024**3
BUILD_TIMEOUT = 3600.0
DEPENDS_FLAGS = (
    "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
)  # fmt: skip


@dataclass(frozen=True)
class BuildkitBinaries:
    """The built buildkitd and buildctl, and what they were built from."""

    buildkitd: Path
    buildctl: Path
    version: str
    marker: Path

    def info(self) -> dict[str, Any]:
        """Return the marker's content (versions, sizes, build times)."""
        data: dict[str, Any] = json.loads(self.marker.read_text())
        return data


# --- pure parts -------------------------------------------------------------------------------


def recipe_digest(shims: Path = SHIMS) -> str:
    """Return a digest of the recipe: its version line and every shim file's path and bytes."""
    digest = hashlib.sha256(RECIPE.encode())
    for path in sorted(p for p in shims.rglob("*.go") if p.is_file()):
        digest.update(str(path.relative_to(shims)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def closure_names(depends_output: str) -> set[str]:
    """Return the package names of `apt-cache depends --recurse` output (virtual `<names>` left out)."""
    return {line.strip() for line in depends_output.splitlines() if line and not line[0].isspace() and "<" not in line}


def go_dev_packages(names: Iterable[str]) -> set[str]:
    """Return the Go source packages (golang-*-dev) of a closure, without the ones known to clash."""
    return {name for name in names if _GO_DEV.fullmatch(name) and name not in EXCLUDED_PACKAGES}


def toolchain_packages(names: Iterable[str]) -> tuple[str, str]:
    """Return the newest golang-1.NN-go and its golang-1.NN-src of a closure."""
    found: dict[tuple[int, int], set[str]] = {}
    for name in names:
        match = _TOOLCHAIN.fullmatch(name)
        if match:
            found.setdefault((int(match[1]), int(match[2])), set()).add(match[3])
    complete = [version for version, parts in found.items() if parts == {"go", "src"}]
    if not complete:
        raise OperationError(
            f"resolving the Go toolchain of {GO_SOURCE_SUITE}: no golang-1.NN-go with its -src in the closure of "
            f"{TOOLCHAIN_ROOT}. What to do: check `apt-cache depends {TOOLCHAIN_ROOT}` on that suite."
        )
    major, minor = max(complete)
    return f"golang-{major}.{minor}-go", f"golang-{major}.{minor}-src"


def _fields(stanza: str) -> dict[str, str]:
    """Return the top-level fields of one deb822 stanza."""
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line[:1].isspace() or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _repository_root(url: str) -> str:
    """Return a Homepage URL as a lower-case import prefix: https://github.com/A/B.git -> github.com/a/b."""
    return re.sub(r"^[a-z]+://", "", url.strip().lower()).rstrip("/").removesuffix(".git")


def homepage_index(dumpavail: str) -> dict[str, list[str]]:
    """Return the Go source packages of an apt package list by their Homepage, as an import prefix."""
    index: dict[str, list[str]] = {}
    for stanza in dumpavail.split("\n\n"):
        fields = _fields(stanza)
        name, homepage = fields.get("Package", ""), fields.get("Homepage", "")
        if _GO_DEV.fullmatch(name) and homepage and name not in EXCLUDED_PACKAGES:
            index.setdefault(_repository_root(homepage), []).append(name)
    return index


def package_for_import(import_path: str, index: dict[str, list[str]]) -> str | None:
    """Return the package whose Homepage is the longest prefix of an import path (a /vN path picks the -vN- one)."""
    lowered = import_path.lower()
    roots = [root for root in index if lowered == root or lowered.startswith(root + "/")]
    if not roots:
        return None
    root = max(roots, key=len)
    candidates = sorted(index[root])
    major = re.match(r"^/(v\d+)(/|$)", lowered[len(root) :])
    if major:
        versioned = [name for name in candidates if f"-{major[1]}-" in name or name.endswith(f"-{major[1]}-dev")]
        candidates = versioned or candidates
    else:
        candidates = [name for name in candidates if not re.search(r"-v\d+-dev$", name)] or candidates
    return candidates[0]


def missing_imports(go_list_output: str) -> tuple[list[str], list[str]]:
    """Split `go list -e -deps` error lines (`path<TAB>error`) into missing import paths and other errors."""
    missing: list[str] = []
    other: list[str] = []
    for line in go_list_output.splitlines():
        path, _, error = line.partition("\t")
        if not path.strip():
            continue
        if "cannot find package" in error:
            missing.append(path.strip())
        else:
            other.append(f"{path.strip()}: {error.strip().splitlines()[0] if error.strip() else 'error'}")
    return sorted(set(missing)), other


def patch_buildkitd_main(text: str) -> str:
    """Return cmd/buildkitd/main.go without the remote cache backends whose SDKs Debian lacks."""
    kept: list[str] = []
    dropped = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        for backend in DROPPED_CACHE_BACKENDS:
            if stripped == f'"{BUILDKIT_IMPORT}/cache/remotecache/{backend}"' or re.match(
                rf'^"{backend}":\s*{backend}\.ResolveCache(Exporter|Importer)Func\(\),$', stripped
            ):
                dropped += 1
                break
        else:
            kept.append(line)
    if dropped not in (0, 3 * len(DROPPED_CACHE_BACKENDS)):
        raise OperationError(
            f"patching cmd/buildkitd/main.go: found {dropped} of the {3 * len(DROPPED_CACHE_BACKENDS)} lines that "
            f"wire the {', '.join(DROPPED_CACHE_BACKENDS)} cache backends. What to do: the BuildKit sources in "
            f"{SOURCE_PACKAGE} changed; update release/devstack/buildkit.py's patch."
        )
    return "".join(kept)


def link_major_versions(src: Path, missing: Iterable[str]) -> list[str]:
    """Link `X/vN` to `X` in a GOPATH when X's go.mod says `module X/vN`; return the links made (GOPATH mode)."""
    made: list[str] = []
    for import_path in missing:
        parts = import_path.split("/")
        for i in range(len(parts) - 1, 0, -1):
            if not re.fullmatch(r"v\d+", parts[i]):
                continue
            base = "/".join(parts[:i])
            link = src / base / parts[i]
            go_mod = src / base / "go.mod"
            if link.exists() or link.is_symlink() or not go_mod.is_file():
                continue
            module = next(
                (line.split()[1] for line in go_mod.read_text().splitlines() if line.startswith("module ")), ""
            )
            if module == f"{base}/{parts[i]}":
                link.symlink_to(".")
                made.append(f"{base}/{parts[i]}")
    return made


def deb_version(deb: Path) -> str:
    """Return the version in a .deb file name (package_version_arch.deb, epoch colon %-encoded)."""
    return urllib.parse.unquote(deb.name.split("_")[1])


def cache_dir_name(source_version: str, recipe: str) -> str:
    """Return the machine cache folder of one build: source version and recipe digest."""
    slug = re.sub(r"[^A-Za-z0-9.+-]", "-", source_version)
    return f"buildkit-{slug}-{recipe[:12]}"


# --- markers and caches -----------------------------------------------------------------------


def read_marker(folder: Path, recipe: str) -> BuildkitBinaries | None:
    """Return the binaries a folder's marker records if the recipe matches and each binary is there, same size."""
    marker = folder / MARKER
    try:
        data = json.loads(marker.read_text())
        if data["recipe"] != recipe:
            return None
        for name in COMMANDS:
            entry = data["binaries"][name]
            path = folder / "bin" / name
            if not os.access(path, os.X_OK) or path.stat().st_size != int(entry["size"]):
                return None
        return BuildkitBinaries(folder / "bin" / "buildkitd", folder / "bin" / "buildctl", str(data["version"]), marker)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_machine_build(machine_cache: Path, recipe: str) -> BuildkitBinaries | None:
    """Return the newest build in the machine cache made with this recipe, or None."""
    found = [b for d in sorted(machine_cache.glob("buildkit-*")) if d.is_dir() and (b := read_marker(d, recipe))]
    return max(found, key=lambda b: b.marker.stat().st_mtime) if found else None


def copy_build(build: BuildkitBinaries, folder: Path) -> BuildkitBinaries:
    """Put a build's binaries and marker into a folder (hard links where the file system allows)."""
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    for name, source in (("buildkitd", build.buildkitd), ("buildctl", build.buildctl)):
        target = folder / "bin" / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
        tmp.replace(target)
    marker = folder / MARKER
    tmp_marker = marker.with_name(f".{MARKER}.tmp")
    shutil.copy2(build.marker, tmp_marker)
    tmp_marker.replace(marker)
    return BuildkitBinaries(folder / "bin" / "buildkitd", folder / "bin" / "buildctl", build.version, marker)


def machine_lock(machine_cache: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the machine cache's lock, so two stacks or test sessions never build at the same time."""
    return file_lock(machine_cache / "buildkit.lock")


def ensure_buildkit(cache_dir: Path, log: Log, machine_cache: Path = MACHINE_CACHE) -> BuildkitBinaries:
    """Return buildkitd and buildctl in `cache_dir`: from there, else from the machine cache, else built once."""
    recipe = recipe_digest()
    done = read_marker(cache_dir, recipe)
    if done is not None:
        return done
    with machine_lock(machine_cache):
        build = find_machine_build(machine_cache, recipe)
        if build is None:
            build = _Build(machine_cache, recipe, log).run()
        else:
            log(f"devstack: buildkit {build.version} from the machine cache {build.marker.parent}")
    return copy_build(build, cache_dir)


# --- the build --------------------------------------------------------------------------------


class _Build:
    """One build from Debian's sources in a work folder of the machine cache, removed afterwards."""

    def __init__(self, machine_cache: Path, recipe: str, log: Log) -> None:
        """Lay out the work folder: private apt state, downloads, the unpacked tree, Go's build cache."""
        self.machine_cache = machine_cache
        self.recipe = recipe
        self.log = log
        self.work = machine_cache / "buildkit-work"
        self.apt = StackPaths(self.work)  # its apt_dir holds the private sources list and state
        self.debs = self.work / "debs"
        self.root = self.work / "root"
        self.installed: dict[str, Path] = {}
        self.times: dict[str, float] = {}

    @property
    def gopath(self) -> Path:
        """Return the GOPATH of the unpacked Go source packages."""
        return self.root / "usr" / "share" / "gocode"

    def apt_get(self, *args: str, step: str, cwd: Path | None = None) -> str:
        """Run apt-get or apt-cache against the private state only."""
        command = "apt-cache" if args[0] in ("depends", "dumpavail", "policy") else "apt-get"
        return run(
            [command, *private_apt_options(self.apt), *args],
            step=step,
            hint=f"check that the archive in {self.apt.apt_dir / 'sources.list'} serves {GO_SOURCE_SUITE}",
            env=APT_ENV,
            cwd=cwd,
        )

    def run(self) -> BuildkitBinaries:
        """Fetch, unpack, resolve, compile and cache; return the cached binaries."""
        require_root()
        started = time.monotonic()
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        free = shutil.disk_usage(self.work).free
        if free < MIN_FREE_BYTES:
            raise OperationError(
                f"building buildkitd in {self.work}: {free / 1024**3:.1f} GB free, it needs about 3 GB. "
                "What to do: free disk space there and run again."
            )
        self.log(f"devstack: building buildkitd from {GO_SOURCE_SUITE}'s Go sources (once per machine, ~4-5 min)")
        self.prepare_apt()
        closure = self.closure([SOURCE_PACKAGE, TOOLCHAIN_ROOT])
        toolchain = toolchain_packages(closure)
        self.fetch(go_dev_packages(closure) | set(toolchain))
        self.times["fetch_s"] = round(time.monotonic() - started, 1)
        source = self.gopath / "src" / BUILDKIT_IMPORT
        main_go = source / "cmd" / "buildkitd" / "main.go"
        main_go.write_text(patch_buildkitd_main(main_go.read_text()))
        shutil.copytree(SHIMS, self.gopath / "src", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
        goroot = self.root / "usr" / "lib" / f"go-{toolchain[0].split('-')[1]}"
        self.resolve_imports(goroot)
        self.times["resolve_s"] = round(time.monotonic() - started - self.times["fetch_s"], 1)
        source_version = deb_version(self.installed[SOURCE_PACKAGE])
        version = f"{BUILDKIT_SERIES} ({SOURCE_PACKAGE} {source_version})"
        out = self.work / "out"
        compile_started = time.monotonic()
        self.log(f"devstack: go build {', '.join(COMMANDS)} ({len(self.installed)} Debian packages unpacked)")
        run(
            [goroot / "bin" / "go", "build", "-trimpath", "-o", f"{out}/",
             "-ldflags", f"-s -w -X {BUILDKIT_IMPORT}/version.Version={BUILDKIT_SERIES}+debian-{source_version}"
             f" -X {BUILDKIT_IMPORT}/version.Revision=debian-{self.recipe[:12]}",
             *(f"{BUILDKIT_IMPORT}/cmd/{name}" for name in COMMANDS)],
            step=f"go build {BUILDKIT_IMPORT}/cmd/{{{','.join(COMMANDS)}}}",
            hint=f"read the compiler's message; the unpacked tree stays in {self.work} until the next build",
            env=self.go_env(goroot),
            cwd=self.work,
            timeout=BUILD_TIMEOUT,
        )  # fmt: skip
        self.times["compile_s"] = round(time.monotonic() - compile_started, 1)
        go_version = run([goroot / "bin" / "go", "version"], step="go version", hint="", env=self.go_env(goroot))
        target = self.machine_cache / cache_dir_name(source_version, self.recipe)
        if target.exists():
            shutil.rmtree(target)
        (target / "bin").mkdir(parents=True)
        binaries: dict[str, dict[str, object]] = {}
        for name in COMMANDS:
            shutil.copy2(out / name, target / "bin" / name)
            data = (target / "bin" / name).read_bytes()
            binaries[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.times["total_s"] = round(time.monotonic() - started, 1)
        marker = {
            "version": version,
            "recipe": self.recipe,
            "suite": GO_SOURCE_SUITE,
            "source": {"package": SOURCE_PACKAGE, "version": source_version},
            "go": go_version.strip(),
            "toolchain": {name: deb_version(self.installed[name]) for name in toolchain},
            "debian_packages": len(self.installed),
            "download_bytes": sum(deb.stat().st_size for deb in self.installed.values()),
            "binaries": binaries,
            "build_seconds": self.times,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (target / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        shutil.rmtree(self.work)
        sizes = ", ".join(f"{n} {int(str(b['size'])) / 1e6:.1f} MB" for n, b in binaries.items())
        self.log(f"devstack: built buildkit {version} in {self.times['total_s']} s ({sizes}) -> {target}")
        built = read_marker(target, self.recipe)
        assert built is not None  # just written
        return built

    def prepare_apt(self) -> None:
        """Write the private sources list for the Go sources' suite and read its package lists."""
        apt_dir = self.apt.apt_dir
        for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (apt_dir / sub).mkdir(parents=True, exist_ok=True)
        (apt_dir / "state" / "status").touch()
        source = archive_source(os_codename())
        (apt_dir / "sources.list").write_text(engine_sources_line(source, GO_SOURCE_SUITE))
        self.log(f"devstack: apt-get update for the private {GO_SOURCE_SUITE} sources")
        self.apt_get("update", step=f"apt-get update of the private {GO_SOURCE_SUITE} sources")

    def closure(self, roots: Iterable[str]) -> set[str]:
        """Return the recursive Depends closure of packages (names only) on the private state."""
        out = self.apt_get(
            "depends", *DEPENDS_FLAGS, *sorted(roots), step=f"apt-cache depends --recurse {' '.join(sorted(roots))}"
        )
        return closure_names(out)

    def fetch(self, packages: set[str]) -> None:
        """Download the packages not fetched yet and unpack them into the tree."""
        new = sorted(packages - set(self.installed))
        if not new:
            return
        self.debs.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log(f"devstack: apt-get download {len(new)} packages ({GO_SOURCE_SUITE})")
        self.apt_get("download", *new, step=f"apt-get download of {len(new)} {GO_SOURCE_SUITE} packages", cwd=self.debs)
        for name in new:
            found = sorted(self.debs.glob(f"{name}_*.deb"))
            if not found:
                raise OperationError(
                    f"apt-get download {name} ({GO_SOURCE_SUITE}): no .deb in {self.debs}. "
                    "What to do: run again; if it repeats, check the package with apt-cache policy."
                )
            run(["dpkg", "-x", found[-1], self.root], step=f"unpacking {found[-1].name}", hint="run again")
            self.installed[name] = found[-1]

    def go_env(self, goroot: Path) -> dict[str, str]:
        """Return the Go environment: GOPATH mode, no network, no cgo, the work folder's build cache."""
        return {
            "PATH": f"{goroot / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
            "GOROOT": str(goroot),
            "GOPATH": str(self.gopath),
            "GO111MODULE": "off",
            "GOPROXY": "off",
            "GOFLAGS": "",
            "GOTOOLCHAIN": "local",
            "GOTELEMETRY": "off",
            "CGO_ENABLED": "0",
            "GOCACHE": str(self.work / "gocache"),
            "HOME": str(self.work),
        }

    def resolve_imports(self, goroot: Path) -> None:
        """Fetch the packages of every import BuildKit's commands still miss, round by round, until none is."""
        index: dict[str, list[str]] | None = None
        for _ in range(MAX_ROUNDS):
            out = run(
                [goroot / "bin" / "go", "list", "-e", "-deps",
                 "-f", "{{if .Error}}{{.ImportPath}}\t{{.Error}}{{end}}",
                 *(f"{BUILDKIT_IMPORT}/cmd/{name}" for name in COMMANDS)],
                step="go list of BuildKit's imports",
                hint=f"the unpacked tree stays in {self.work} until the next build",
                env=self.go_env(goroot),
                cwd=self.work,
            )  # fmt: skip
            missing, other = missing_imports(out)
            if other:
                raise OperationError(f"go list of BuildKit's imports: {other[0]}. What to do: read {self.work}.")
            if not missing:
                return
            linked = set(link_major_versions(self.gopath / "src", missing))
            missing = [m for m in missing if not any(m == ln or m.startswith(ln + "/") for ln in linked)]
            if not missing:
                continue
            if index is None:
                index = homepage_index(self.apt_get("dumpavail", step="apt-cache dumpavail"))
            wanted = {path: package_for_import(path, index) for path in missing}
            unresolved = sorted(path for path, package in wanted.items() if package is None)
            roots = {package for package in wanted.values() if package is not None} - set(self.installed)
            if unresolved or not roots:
                raise OperationError(
                    f"building buildkitd: no {GO_SOURCE_SUITE} package provides "
                    f"{', '.join(unresolved or missing)}. What to do: add a shim under {SHIMS}."
                )
            self.log(f"devstack: BuildKit also needs {', '.join(sorted(roots))}")
            self.fetch(go_dev_packages(self.closure(roots)))
        raise OperationError(
            f"building buildkitd: imports still missing after {MAX_ROUNDS} rounds. What to do: read {self.work}."
        )
