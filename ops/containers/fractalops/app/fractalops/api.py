"""The FractalOps HTTP API: health, version, and a fractal endpoint; served by uvicorn."""

from __future__ import annotations

import platform

import uvicorn
from fastapi import FastAPI, HTTPException

from fractalops import __version__
from fractalops.settings import Settings

app = FastAPI(title="fractalops-api", version=__version__)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Answer the liveness probe."""
    return {"status": "ok", "service": "fractalops-api"}


@app.get("/version")
def version() -> dict[str, str]:
    """Say which build answers."""
    return {"service": "fractalops-api", "version": __version__, "python": platform.python_version()}


@app.get("/v1/escape-time")
def escape_time(re: float, im: float, limit: int = 100) -> dict[str, float | int | bool]:
    """Iterate z = z² + c for one point c and say after how many steps it escaped (Mandelbrot membership)."""
    if not 1 <= limit <= 10_000:
        raise HTTPException(status_code=422, detail="limit must be between 1 and 10000")
    c, z = complex(re, im), 0j
    for step in range(limit):
        z = z * z + c
        if abs(z) > 2:
            return {"re": re, "im": im, "steps": step + 1, "inside": False}
    return {"re": re, "im": im, "steps": limit, "inside": True}


def main() -> None:
    """Serve the API on HOST:PORT."""
    settings = Settings.from_env()
    print(f"fractalops-api {__version__}: listening on {settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
