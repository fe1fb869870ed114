"""The topology model: Nexus, the `registry_cache` key, the node mirror, the release registry, the shared BuildKit."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from release.errors import ConfigError
from release.imageref import parse_image_ref

Port = Annotated[int, Field(ge=1, le=65535)]
Scheme = Literal["http", "https"]
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_CLUSTER_DNS = re.compile(r"(\.svc|\.svc\.cluster\.local|\.cluster\.local)\.?\Z")
_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_TCP_ENDPOINT = re.compile(r"tcp://(?P<host>\[[^\]/]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?(?P<rest>/.*)?", re.DOTALL)


class _Strict(BaseModel):
    """Base: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Repositories(_Strict):
    """The Nexus package repositories served under `/repository/<name>/`."""

    npm: str = "npm-group"
    pypi: str = "pypi-group"
    apt_debian: str = "apt-debian"
    apt_ubuntu: str | None = None


class Nexus(_Strict):
    """The Nexus service: names, connector ports and repositories."""

    service: str
    namespace: str
    host: str | None = None
    public_url: str
    scheme: Literal["http", "https"] = "http"
    web_port: Port
    docker_group_port: Port
    docker_internal_port: Port
    repositories: Repositories = Repositories()
    # Where build steps (RUN) reach the package repositories when that is not the service host: the local devstack
    # serves them on its engine bridge, because a build container cannot reach the host's loopback.
    packages_host: str | None = None

    @field_validator("service", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.fullmatch(value):
            raise ValueError("must be a DNS label (lowercase letters, digits, '-')")
        return value

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _distinct_ports(self) -> Nexus:
        ports = {self.web_port, self.docker_group_port, self.docker_internal_port}
        if len(ports) != 3:
            raise ValueError("web_port, docker_group_port and docker_internal_port must differ")
        return self

    @property
    def cluster_host(self) -> str:
        """The in-cluster host name of the service (or the configured override)."""
        return self.host or f"{self.service}.{self.namespace}.svc"

    def repository_url(self, repository: str, host: str | None = None) -> str:
        """URL of a package repository on the web/REST port (at `packages_host`, else `host`, else the service name)."""
        return f"{self.scheme}://{self.packages_host or host or self.cluster_host}:{self.web_port}/repository/{repository}/"

    @property
    def docker_group_endpoint(self) -> str:
        """`host:port` of the docker-group connector (docker.io + ghcr.io pull-through)."""
        return f"{self.cluster_host}:{self.docker_group_port}"

    @property
    def docker_internal_endpoint(self) -> str:
        """`host:port` of the docker-internal hosted connector (build cache)."""
        return f"{self.cluster_host}:{self.docker_internal_port}"


class RegistryCache(_Strict):
    """The `registry_cache` key: historical name, values now point at Nexus."""

    host_ip: str
    buildcache_ref: str
    docker_proxy_port: Port
    ghcr_proxy_port: Port

    @field_validator("host_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("is not an IP address (the Nexus Service ClusterIP)") from None
        return value

    @field_validator("buildcache_ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        try:
            ref = parse_image_ref(value, what="buildcache_ref")
        except ConfigError as err:
            raise ValueError(str(err)) from None
        if ref.tag or ref.digest:
            raise ValueError("must be a repository without tag or digest (the driver adds per-target tags)")
        return value


class NodeMirror(_Strict):
    """How K3s nodes reach the docker-group: a NodePort (preferred) or the ClusterIP."""

    mode: Literal["nodeport", "clusterip"] = "nodeport"
    node_port: Port | None = None
    host: str | None = None
    pull_username: str

    @field_validator("host")
    @classmethod
    def _node_resolvable(cls, value: str | None) -> str | None:
        if value is not None and _CLUSTER_DNS.search(value):
            raise ValueError(
                "names a cluster-DNS host: containerd on the node cannot resolve it; "
                "use 127.0.0.1 with the NodePort or the ClusterIP"
            )
        return value

    @model_validator(mode="after")
    def _port_for_mode(self) -> NodeMirror:
        if self.mode == "nodeport" and self.node_port is None:
            raise ValueError("mode nodeport needs node_port")
        return self


class ReleaseRegistry(_Strict):
    """Where release images are pushed, and whether that registry speaks HTTPS (ghcr.io) or plain HTTP."""

    image_registry: str = "ghcr.io"
    image_namespace: str = "yamonco"
    scheme: Scheme = "https"


def _is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 address (the latter without its URL brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_host(host: str) -> bool:
    """True for a host name, an IPv4 address, or an IPv6 address in URL brackets."""
    if host.startswith("["):
        return ":" in host and host.endswith("]") and _is_ip(host[1:-1])
    return _HOST_NAME.fullmatch(host) is not None


class Builder(_Strict):
    """The team's shared BuildKit: a standalone buildkitd that builders reach with the remote driver over mutual TLS."""

    endpoint: str
    # The name buildkitd's certificate is checked against, when it is not the endpoint's host (buildx's default).
    tls_servername: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _tcp_endpoint(cls, value: str) -> str:
        found = _TCP_ENDPOINT.fullmatch(value)
        if found is None:
            raise ValueError("must be a tcp:// address, tcp://HOST:PORT (the remote driver's endpoint)")
        host, port, rest = found["host"], found["port"], found["rest"]
        if not _valid_host(host):
            raise ValueError("has no valid host: want tcp://HOST:PORT (a host name, an IPv4 address or [IPv6])")
        if port is None or port == "":
            raise ValueError("has no port: want tcp://HOST:PORT")
        if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
        if rest:
            raise ValueError("has a path: want tcp://HOST:PORT and nothing after the port")
        return value

    @field_validator("tls_servername")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_NAME.fullmatch(value):
            raise ValueError("must be a host name (letters, digits, '-', '.')")
        return value

    @property
    def host(self) -> str:
        """The endpoint's host: a name, or an address (an IPv6 one without brackets)."""
        found = _TCP_ENDPOINT.fullmatch(self.endpoint)
        assert found is not None  # validated
        return str(found["host"]).removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        """The endpoint's port."""
        found = _TCP_ENDPOINT.fullmatch(self.endpoint)
        assert found is not None  # validated
        return int(found["port"])

    @property
    def host_is_name(self) -> bool:
        """True when the endpoint names a host (resolved by DNS) rather than an address."""
        return not _is_ip(self.host)

    @property
    def server_name(self) -> str:
        """The name the builder's certificate must carry: `tls_servername`, else the endpoint's host (as buildx does)."""
        return self.tls_servername or self.host


class Topology(_Strict):
    """The whole topology file."""

    nexus: Nexus
    registry_cache: RegistryCache
    node_mirror: NodeMirror
    release: ReleaseRegistry = ReleaseRegistry()
    builder: Builder | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        group = self.nexus.docker_group_port
        for name in ("docker_proxy_port", "ghcr_proxy_port"):
            port = getattr(self.registry_cache, name)
            if port != group:
                raise _FieldError(("registry_cache", name), port, f"disagrees with nexus.docker_group_port {group}")
        ref = parse_image_ref(self.registry_cache.buildcache_ref)
        wanted = {
            self.nexus.docker_internal_endpoint,
            f"{self.registry_cache.host_ip}:{self.nexus.docker_internal_port}",
        }
        if ref.registry not in wanted:
            raise _FieldError(
                ("registry_cache", "buildcache_ref"),
                self.registry_cache.buildcache_ref,
                f"must live on the Nexus docker-internal connector ({self.nexus.docker_internal_endpoint})",
            )
        if self.release.image_registry in self.nexus_connectors() and self.release.scheme != "http":
            raise _FieldError(
                ("release", "scheme"),
                self.release.scheme,
                f"image_registry {self.release.image_registry} is a plain-HTTP Nexus docker connector; say scheme: http",
            )
        return self

    def nexus_connectors(self) -> tuple[str, ...]:
        """`host:port` of both Nexus docker connectors, by service name and by ClusterIP (all plain HTTP)."""
        ports = (self.nexus.docker_group_port, self.nexus.docker_internal_port)
        hosts = (self.nexus.cluster_host, self.registry_cache.host_ip)
        return tuple(dict.fromkeys(f"{host}:{port}" for host in hosts for port in ports))

    def plain_http_registries(self, via: str | None = None) -> tuple[str, ...]:
        """Registries spoken to in plain HTTP: the Nexus connectors (as `via` reaches them; all if None), an http release."""
        if via is None:
            connectors = self.nexus_connectors()
        else:
            host = self.nexus_host(via)
            connectors = (f"{host}:{self.nexus.docker_group_port}", f"{host}:{self.nexus.docker_internal_port}")
        release = (self.release.image_registry,) if self.release.scheme == "http" else ()
        return tuple(dict.fromkeys((*connectors, *release)))

    def registry_scheme(self, registry: str) -> Scheme:
        """`http` for a registry the topology describes as plain HTTP, else `https` (never guessed from the address)."""
        return "http" if registry in self.plain_http_registries() else "https"

    @property
    def docker_group_url(self) -> str:
        """URL of the Nexus docker-group (plain HTTP connector)."""
        return f"{self.registry_scheme(self.nexus.docker_group_endpoint)}://{self.nexus.docker_group_endpoint}"

    @property
    def node_mirror_endpoint(self) -> str:
        """The endpoint a K3s node's containerd uses for docker.io and ghcr.io."""
        mirror = self.node_mirror
        if mirror.mode == "nodeport":
            return f"http://{mirror.host or '127.0.0.1'}:{mirror.node_port}"
        return f"http://{mirror.host or self.registry_cache.host_ip}:{self.nexus.docker_group_port}"

    @property
    def node_mirror_hostport(self) -> str:
        """`host:port` of the node mirror, the key of its `configs` entry."""
        return self.node_mirror_endpoint.removeprefix("http://")

    def nexus_host(self, via: str = "service") -> str:
        """The Nexus host as a client reaches it: the service DNS name, or the ClusterIP."""
        if via not in ("service", "clusterip"):
            raise ConfigError(f"FRACTALOPS_NEXUS_VIA: {via!r} is not one of service, clusterip")
        return self.nexus.cluster_host if via == "service" else self.registry_cache.host_ip

    def buildcache_ref_via(self, via: str = "service") -> str:
        """The build cache repository as a builder reaches it: by service name, or by the ClusterIP."""
        if via == "service":
            return self.registry_cache.buildcache_ref
        if via != "clusterip":
            raise ConfigError(f"FRACTALOPS_NEXUS_VIA: {via!r} is not one of service, clusterip")
        ref = parse_image_ref(self.registry_cache.buildcache_ref)
        return f"{self.registry_cache.host_ip}:{self.nexus.docker_internal_port}/{ref.path}"

    def image_repository(self, name: str) -> str:
        """The release repository of an image, e.g. `ghcr.io/yamonco/fractalops-api`."""
        return f"{self.release.image_registry}/{self.release.image_namespace}/{name}"


class _FieldError(ValueError):
    """A cross-field validation error that knows the field it belongs to."""

    def __init__(self, loc: tuple[str, ...], value: object, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value
