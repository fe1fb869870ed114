"""The FractalOps HTTP API: health, version, and tile statistics; served by uvicorn."""

from __future__ import annotations

import platform

import numpy as np
import uvicorn
from fastapi import FastAPI, Query

from fractalops import __version__
from fractalops.fractal import escape_times
from fractalops.settings import Settings

app = FastAPI(title="fractalops-api", version=__version__)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Answer the liveness probe."""
    return {"status": "ok", "service": "fractalops-api"}


@app.get("/version")
def version() -> dict[str, str]:
    """Say which build answers."""
    return {
        "service": "fractalops-api",
        "version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


@app.get("/v1/tile")
def tile(
    re: float = -0.75,
    im: float = 0.0,
    span: float = Query(3.0, gt=0),
    size: int = Query(64, ge=8, le=512),
    limit: int = Query(64, ge=1, le=1000),
) -> dict[str, float | int]:
    """Render a tile of the Mandelbrot set around re+im·i and say how much of it is inside."""
    steps = escape_times(complex(re, im), span, size, limit)
    inside = int((steps == limit).sum())
    return {"re": re, "im": im, "span": span, "size": size, "inside": inside, "mean_steps": float(steps.mean())}


def main() -> None:
    """Serve the API on HOST:PORT."""
    settings = Settings.from_env()
    print(f"fractalops-api {__version__}: listening on {settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
