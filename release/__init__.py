"""FractalOps release toolkit: topology, builds through buildx, GitOps pinning."""

__version__ = "0.1.0"
