"""One adapter per external system: processes, the buildx engine, git, the OCI registry."""
