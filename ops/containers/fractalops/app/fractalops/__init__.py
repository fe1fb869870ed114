"""FractalOps services: the HTTP API and the job worker."""

__version__ = "0.1.0"
