"""The standalone buildkitd's pure parts: dependency resolution, the main.go patch, certificates, command lines."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from release.buildersetup import RemoteTLS, plan_builder
from release.devstack import buildkit
from release.devstack.buildkit import (
    closure_names,
    copy_build,
    deb_version,
    find_machine_build,
    go_dev_packages,
    homepage_index,
    link_major_versions,
    missing_imports,
    package_for_import,
    patch_buildkitd_main,
    read_marker,
    recipe_digest,
    toolchain_packages,
)
from release.devstack.buildkit_certs import render_certs, san_names
from release.devstack.buildkit_daemon import BuildkitdLayout, buildctl_argv, buildkitd_argv, tcp_address
from release.errors import ConfigError, OperationError, UsageError
from release.topology.load import load_topology

REPO = Path(__file__).resolve().parents[2]

DEPENDS = """golang-github-docker-docker-dev
  Depends: golang-github-moby-buildkit-stub-dev
 |Depends: <golang-logrus-dev>
golang-go
  Depends: golang-1.24-go
<golang-logrus-dev>
golang-github-sirupsen-logrus-dev
golang-github-golang-protobuf-1-3-dev
golang-github-golang-protobuf-1-5-dev
golang-1.24-go
golang-1.24-src
golang-1.23-go
libc6
"""

AVAIL = """Package: golang-github-agext-levenshtein-dev
Version: 1.2.3-2
Homepage: https://github.com/agext/levenshtein

Package: golang-github-mitchellh-hashstructure-dev
Homepage: https://github.com/mitchellh/hashstructure

Package: golang-github-mitchellh-hashstructure-v2-dev
Homepage: https://github.com/mitchellh/hashstructure

Package: golang-github-aws-aws-sdk-go-v2-dev
Homepage: https://github.com/aws/aws-sdk-go-v2.git/

Package: golang-github-golang-protobuf-1-3-dev
Homepage: https://github.com/golang/protobuf

Package: golang-github-golang-protobuf-1-5-dev
Homepage: https://github.com/golang/protobuf

Package: libfoo-dev
Homepage: https://github.com/foo/foo
"""

MAIN_GO = """import (
	"github.com/moby/buildkit/cache/remotecache"
	"github.com/moby/buildkit/cache/remotecache/azblob"
	"github.com/moby/buildkit/cache/remotecache/gha"
	inlineremotecache "github.com/moby/buildkit/cache/remotecache/inline"
)
	remoteCacheExporterFuncs := map[string]remotecache.ResolveCacheExporterFunc{
		"inline":   inlineremotecache.ResolveCacheExporterFunc(),
		"gha":      gha.ResolveCacheExporterFunc(),
		"azblob":   azblob.ResolveCacheExporterFunc(),
	}
	remoteCacheImporterFuncs := map[string]remotecache.ResolveCacheImporterFunc{
		"gha":      gha.ResolveCacheImporterFunc(),
		"azblob":   azblob.ResolveCacheImporterFunc(),
	}
"""


def test_closure_keeps_real_packages_and_drops_the_clashing_protobuf() -> None:
    # The closure is the unindented names (no <virtual> ones); Go sources are golang-*-dev minus the 1-3 protobuf.
    names = closure_names(DEPENDS)
    assert "<golang-logrus-dev>" not in names and "libc6" in names
    assert go_dev_packages(names) == {
        "golang-github-docker-docker-dev",
        "golang-github-sirupsen-logrus-dev",
        "golang-github-golang-protobuf-1-5-dev",
    }


def test_toolchain_is_the_newest_go_with_its_sources() -> None:
    # golang-1.23-go has no -src in the closure, so 1.24 (which has both) is the toolchain.
    assert toolchain_packages(closure_names(DEPENDS)) == ("golang-1.24-go", "golang-1.24-src")
    with pytest.raises(OperationError, match=r"golang-1\.NN-go"):
        toolchain_packages({"golang-1.24-go"})


@pytest.mark.parametrize(
    ("import_path", "package"),
    [
        ("github.com/agext/levenshtein", "golang-github-agext-levenshtein-dev"),
        ("github.com/aws/aws-sdk-go-v2/service/s3", "golang-github-aws-aws-sdk-go-v2-dev"),
        ("github.com/mitchellh/hashstructure/v2", "golang-github-mitchellh-hashstructure-v2-dev"),
        ("github.com/mitchellh/hashstructure", "golang-github-mitchellh-hashstructure-dev"),
        ("github.com/golang/protobuf/proto", "golang-github-golang-protobuf-1-5-dev"),
        ("github.com/package-url/packageurl-go", None),
        ("github.com/foo/foo", None),
    ],
)
def test_missing_import_maps_to_the_package_of_its_homepage(import_path: str, package: str | None) -> None:
    # An import path resolves to the Go package whose Homepage is its repository; /vN picks the -vN- package.
    assert package_for_import(import_path, homepage_index(AVAIL)) == package


def test_go_list_errors_split_into_missing_imports_and_others() -> None:
    # "cannot find package" lines are imports to fetch; anything else is a build problem to report.
    out = (
        'github.com/a/b\tcannot find package "github.com/a/b" in any of:\n'
        "\t/x (from $GOROOT)\n"
        "github.com/c/d\tgithub.com/c/d/x.go:3:1: syntax error\n"
    )
    missing, other = missing_imports(out)
    assert missing == ["github.com/a/b"]
    assert other == ["github.com/c/d: github.com/c/d/x.go:3:1: syntax error"]


def test_main_go_patch_drops_exactly_the_gha_and_azblob_backends() -> None:
    # Imports and both map entries of gha and azblob go; the rest stays byte for byte; patching twice is a no-op.
    patched = patch_buildkitd_main(MAIN_GO)
    assert "gha" not in patched and "azblob" not in patched
    assert '"inline":   inlineremotecache.ResolveCacheExporterFunc(),' in patched
    assert patch_buildkitd_main(patched) == patched
    with pytest.raises(OperationError, match="found 1 of the 6 lines"):
        patch_buildkitd_main('\t"github.com/moby/buildkit/cache/remotecache/gha"\n')


def test_major_version_import_is_linked_when_go_mod_declares_it(tmp_path: Path) -> None:
    # GOPATH mode: X/v22 resolves once X/v22 links to X, made only when X's go.mod says `module X/v22`.
    base = tmp_path / "github.com" / "coreos" / "go-systemd"
    (base / "daemon").mkdir(parents=True)
    (base / "go.mod").write_text("module github.com/coreos/go-systemd/v22\n\ngo 1.12\n")
    other = tmp_path / "github.com" / "x" / "y"
    other.mkdir(parents=True)
    (other / "go.mod").write_text("module github.com/x/y\n")
    made = link_major_versions(tmp_path, ["github.com/coreos/go-systemd/v22/daemon", "github.com/x/y/v3"])
    assert made == ["github.com/coreos/go-systemd/v22"]
    assert (base / "v22" / "daemon").is_dir()
    assert not (other / "v3").exists()


def test_deb_version_reads_the_file_name() -> None:
    # The version is the second field of the .deb name, with the epoch colon decoded.
    assert deb_version(Path("golang-github-docker-docker-dev_26.1.5+dfsg1-9+deb13u1_all.deb")) == (
        "26.1.5+dfsg1-9+deb13u1"
    )
    assert deb_version(Path("x_1%3a2.0-1_amd64.deb")) == "1:2.0-1"


def _fake_build(folder: Path, recipe: str) -> None:
    (folder / "bin").mkdir(parents=True)
    sizes = {}
    for name in ("buildkitd", "buildctl"):
        path = folder / "bin" / name
        path.write_bytes(b"#!/bin/sh\n" + name.encode())
        path.chmod(0o755)
        sizes[name] = {"size": path.stat().st_size}
    (folder / "buildkit.json").write_text(json.dumps({"version": "v0.13 (test)", "recipe": recipe, "binaries": sizes}))


def test_cached_build_is_found_by_recipe_and_copied_to_a_stack(tmp_path: Path) -> None:
    # The machine cache answers only for the current recipe; a stack's copy is valid on its own afterwards.
    recipe = recipe_digest()
    _fake_build(tmp_path / "machine" / "buildkit-old", "0" * 64)
    assert find_machine_build(tmp_path / "machine", recipe) is None
    _fake_build(tmp_path / "machine" / "buildkit-new", recipe)
    build = find_machine_build(tmp_path / "machine", recipe)
    assert build is not None and build.version == "v0.13 (test)"
    stack = copy_build(build, tmp_path / "stack" / "buildkit")
    assert read_marker(tmp_path / "stack" / "buildkit", recipe) == stack
    assert os.access(stack.buildkitd, os.X_OK)
    # A binary that changed size invalidates the copy.
    stack.buildctl.write_bytes(b"truncated")
    assert read_marker(tmp_path / "stack" / "buildkit", recipe) is None


def test_recipe_digest_changes_with_a_shim(tmp_path: Path) -> None:
    # Editing a shim gives a new recipe digest, so a stale cached binary is not reused.
    shim = tmp_path / "github.com" / "x" / "y.go"
    shim.parent.mkdir(parents=True)
    shim.write_text("package y\n")
    first = recipe_digest(tmp_path)
    shim.write_text("package y // changed\n")
    assert recipe_digest(tmp_path) != first
    assert len(recipe_digest()) == 64 and (buildkit.SHIMS / "github.com").is_dir()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certs_chain_names_usages_and_key_modes(tmp_path: Path) -> None:
    # Server cert carries every name (DNS and IP) for serverAuth, client cert is for clientAuth; keys are 0600.
    certs = render_certs(tmp_path / "tls", ["buildkit.fractalops.svc", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server.cert.read_bytes())
    client = x509.load_pem_x509_certificate(certs.client.cert.read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    assert san_names(server) == {"buildkit.fractalops.svc", "127.0.0.1"}
    eku = x509.ExtendedKeyUsage
    assert list(server.extensions.get_extension_for_class(eku).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(client.extensions.get_extension_for_class(eku).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (certs.ca_key, certs.server.key, certs.client.key):
        assert _mode(key) == 0o600, key
    assert _mode(tmp_path / "tls") == 0o700
    # The files load as a TLS key pair and trust anchor (what Go's tls package will do with them).
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs.ca_cert))
    context.load_cert_chain(certs.client.cert, certs.client.key)


def test_certs_are_kept_when_valid_and_renewed_for_new_names_or_near_expiry(tmp_path: Path) -> None:
    # Same names: nothing is rewritten (clients keep working); new names: a new server cert from the same CA.
    folder = tmp_path / "tls"
    certs = render_certs(folder, ["buildkit.fractalops.svc"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    render_certs(folder, ["buildkit.fractalops.svc"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    render_certs(folder, ["buildkit.fractalops.svc", "10.0.0.5"])
    assert certs.ca_cert.read_bytes() == before["ca.pem"]
    assert certs.server.cert.read_bytes() != before["server.pem"]
    assert certs.client.cert.read_bytes() == before["client.pem"]
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=340)
    render_certs(folder, ["buildkit.fractalops.svc", "10.0.0.5"], now=later)
    assert certs.ca_cert.read_bytes() != before["ca.pem"]


def test_certs_refuse_a_bad_server_name(tmp_path: Path) -> None:
    # A name that is neither DNS nor IP is a configuration error naming the value; nothing is written.
    with pytest.raises(ConfigError, match="'bad name!'"):
        render_certs(tmp_path / "tls", ["bad name!"])
    assert not (tmp_path / "tls").exists()
    with pytest.raises(ConfigError, match="at least one"):
        render_certs(tmp_path / "tls", [])


def test_buildkitd_argv_is_tcp_with_mutual_tls(tmp_path: Path) -> None:
    # buildkitd listens on TCP with CA + cert + key (the CA makes client certs required), own root and config.
    certs = render_certs(tmp_path / "tls", ["buildkit.fractalops.svc"])
    layout = BuildkitdLayout(tmp_path / "bk")
    argv = buildkitd_argv(Path("/c/buildkitd"), tcp_address("127.0.0.1", 1234), certs.server, layout, "/usr/sbin/runc")
    assert argv[:3] == ["/c/buildkitd", "--addr", "tcp://127.0.0.1:1234"]
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert flags["--tlscacert"] == str(certs.ca_cert)
    assert flags["--tlscert"] == str(certs.server.cert)
    assert flags["--tlskey"] == str(certs.server.key)
    assert flags["--root"] == str(layout.root) and flags["--config"] == str(layout.config)
    assert "--oci-worker-snapshotter=overlayfs" in argv and "--oci-worker-binary=/usr/sbin/runc" in argv
    assert tcp_address("::1", 80) == "tcp://[::1]:80"
    with pytest.raises(ConfigError, match="port 0"):
        tcp_address("127.0.0.1", 0)


def test_buildctl_argv_with_and_without_client_cert(tmp_path: Path) -> None:
    # With the client side: CA, cert and key; without: only the CA (what an unauthorised client has).
    certs = render_certs(tmp_path / "tls", ["b.svc"])
    full = buildctl_argv(Path("buildctl"), "tcp://h:1", certs.client, "b.svc", "debug", "workers")
    assert full[-2:] == ["debug", "workers"] and "--tlscert" in full and "--tlsservername" in full
    bare = buildctl_argv(Path("buildctl"), "tcp://h:1", None, "b.svc", "du", ca_cert=certs.ca_cert)
    assert "--tlscert" not in bare and "--tlskey" not in bare and str(certs.ca_cert) in bare


def test_remote_builder_plan_passes_client_tls(tmp_path: Path) -> None:
    # `builder create --driver remote` puts CA, client cert, key (absolute) and server name in one --driver-opt.
    topology = load_topology(REPO / "ops" / "topology" / "fractalops.yaml")
    certs = render_certs(tmp_path / "tls", ["buildkit.fractalops.svc"])
    tls = RemoteTLS(certs.ca_cert, certs.client.cert, certs.client.key, "buildkit.fractalops.svc")
    plan = plan_builder(topology, "shared", "remote", endpoint="tcp://10.0.0.9:1234", tls=tls, bootstrap=False)
    i = plan.argv.index("--driver-opt")
    assert plan.argv[i + 1] == (
        f"cacert={certs.ca_cert},cert={certs.client.cert},key={certs.client.key},servername=buildkit.fractalops.svc"
    )
    assert plan.argv[-1] == "tcp://10.0.0.9:1234"
    with pytest.raises(UsageError, match="--tls-cert and --tls-key go together"):
        plan_builder(topology, "s", "remote", endpoint="tcp://h:1", tls=RemoteTLS(cert=certs.client.cert))
    with pytest.raises(UsageError, match=r"--tls-cacert: /nonexistent/ca\.pem is not a file"):
        plan_builder(topology, "s", "remote", endpoint="tcp://h:1", tls=RemoteTLS(cacert=Path("/nonexistent/ca.pem")))
    with pytest.raises(UsageError, match="tcp:// endpoint"):
        plan_builder(topology, "s", "remote", endpoint="unix:///run/b.sock", tls=tls)
    with pytest.raises(UsageError, match="remote driver only"):
        plan_builder(topology, "s", "kubernetes", config_path=tmp_path / "c.toml", tls=tls)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("fractalops-release")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)


def test_cli_builder_create_remote_dry_run_shows_the_tls_driver_opt(tmp_path: Path) -> None:
    # `builder create --driver remote --tls-*` prints one --driver-opt with the absolute files and the server name.
    certs = render_certs(tmp_path / "tls", ["buildkit.fractalops.svc"])
    result = _cli(
        "builder", "create", "--dry-run", "--name", "shared", "--driver", "remote",
        "--endpoint", "tcp://127.0.0.1:1234", "--tls-cacert", str(certs.ca_cert),
        "--tls-cert", str(certs.client.cert), "--tls-key", str(certs.client.key),
        "--tls-servername", "buildkit.fractalops.svc",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        f"--driver-opt cacert={certs.ca_cert},cert={certs.client.cert},key={certs.client.key},"
        "servername=buildkit.fractalops.svc --bootstrap tcp://127.0.0.1:1234"
    ) in result.stdout


def test_cli_half_a_client_pair_is_a_usage_error(tmp_path: Path) -> None:
    # A client certificate without its key is one line on stderr and exit 2.
    certs = render_certs(tmp_path / "tls", ["b.svc"])
    result = _cli(
        "builder", "create", "--dry-run", "--name", "shared", "--driver", "remote",
        "--endpoint", "tcp://127.0.0.1:1234", "--tls-cert", str(certs.client.cert),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --tls-cert and --tls-key go together (the client certificate and its key)"
