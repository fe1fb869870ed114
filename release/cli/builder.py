"""`builder`: shared BuildKit builders set up from the topology (`docker buildx create` with its buildkitd.toml)."""

from __future__ import annotations

from pathlib import Path

import click

from release.cli.app import App, CommandGroup, pass_app


@click.group("builder", cls=CommandGroup)
def builder_group() -> None:
    """Shared BuildKit builders configured from the topology."""


@builder_group.command("create")
@click.option("--name", required=True, help="Builder name.")
@click.option(
    "--driver",
    type=click.Choice(["docker-container", "kubernetes", "remote"]),
    default="kubernetes",
    show_default=True,
)
@click.option(
    "--endpoint", help="remote driver: the buildkitd address (tcp://…; default: the topology's builder.endpoint)."
)
@click.option("--replicas", type=int, default=2, show_default=True, help="kubernetes driver: BuildKit pods.")
@click.option("--namespace", default="buildkit", show_default=True, help="kubernetes driver: namespace.")
@click.option(
    "--via",
    type=click.Choice(["service", "clusterip"]),
    default=None,
    help="How the builder reaches Nexus (FRACTALOPS_NEXUS_VIA; default: service for kubernetes, clusterip for "
    "docker-container).",
)
@click.option(
    "--config-path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the rendered buildkitd.toml (default: the state folder, per builder).",
)
@click.option(
    "--image",
    help="docker-container driver: the BuildKit image (default: buildx's moby/buildkit:buildx-stable-1 from the "
    "Nexus docker-group).",
)
@click.option("--use", is_flag=True, help="Make it the current builder.")
@click.option("--tls-cacert", type=click.Path(path_type=Path), help="remote driver: CA that signed buildkitd's cert.")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="remote driver: client certificate (mutual TLS).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="remote driver: client certificate's key.")
@click.option(
    "--tls-servername",
    help="remote driver: the name buildkitd's certificate is checked against (default: the topology's "
    "builder.tls_servername with its endpoint, else buildx takes the endpoint's host).",
)
@click.option("--dry-run", is_flag=True, help="Print the docker buildx create command and the config; run nothing.")
@pass_app
def create(
    app: App,
    name: str,
    driver: str,
    endpoint: str | None,
    replicas: int,
    namespace: str,
    via: str | None,
    config_path: Path | None,
    image: str | None,
    use: bool,
    tls_cacert: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_servername: str | None,
    dry_run: bool,
) -> None:
    """Create a buildx builder (kubernetes, remote or docker-container) with the rendered buildkitd.toml."""
    from release.buildersetup import RemoteTLS, create_builder, default_config_path, plan_builder
    from release.topology import load_topology

    loaded = app.load(nexus_via=via)
    chosen_via = loaded.settings.nexus_via if loaded.sources["nexus_via"] != "default" else None
    tls_given = (tls_cacert, tls_cert, tls_key, tls_servername) != (None, None, None, None)
    if driver != "remote" and config_path is None:
        config_path = default_config_path(loaded.builders_dir, name)
    plan = plan_builder(
        load_topology(loaded.topology_file),
        name,
        driver,
        endpoint=endpoint,
        replicas=replicas,
        namespace=namespace,
        config_path=config_path,
        via=None if driver == "remote" else chosen_via,  # a remote buildkitd is configured where it runs
        use=use,
        tls=RemoteTLS(tls_cacert, tls_cert, tls_key, tls_servername) if tls_given else None,
        image=image,
    )
    if dry_run:
        app.out(plan.render().rstrip("\n"))
        if plan.config_text:
            app.out(f"\n# {plan.config_path}\n{plan.config_text.rstrip()}")
        return
    create_builder(plan)
    app.say(f"builder {name} created ({driver})")
