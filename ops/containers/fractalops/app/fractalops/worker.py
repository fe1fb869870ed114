"""The FractalOps worker: a job loop that renders Mandelbrot tiles and writes each as a PNG."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

import numpy as np
from PIL import Image

from fractalops import __version__
from fractalops.fractal import escape_times, tile_for_job
from fractalops.settings import Settings

LIMIT = 64


def render_job(job: int, size: int, out: Path) -> tuple[int, int]:
    """Render the job's tile to `out/tile-<job>.png`; return (points inside, PNG bytes)."""
    centre, span = tile_for_job(job)
    steps = escape_times(centre, span, size, LIMIT)
    shade = (255 * (1 - steps / LIMIT)).astype(np.uint8)
    path = out / f"tile-{job % 10}.png"  # a ring of ten files: the loop never fills the disk
    Image.fromarray(shade).save(path, optimize=True)
    return int((steps == LIMIT).sum()), path.stat().st_size


def run(settings: Settings, stop: threading.Event) -> int:
    """Run jobs until stopped (or MAX_JOBS are done); return how many ran."""
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"fractalops-worker {__version__}: job loop started (every {settings.job_interval_seconds:g} s, "
        f"{settings.tile_size}x{settings.tile_size} tiles into {settings.output_dir})",
        flush=True,
    )
    done = 0
    while not stop.is_set() and (settings.max_jobs == 0 or done < settings.max_jobs):
        started = time.perf_counter()
        inside, size = render_job(done + 1, settings.tile_size, settings.output_dir)
        done += 1
        took = time.perf_counter() - started
        print(f"fractalops-worker: job {done} done: {inside} points inside, {size} B PNG, {took:.3f} s", flush=True)
        stop.wait(settings.job_interval_seconds)
    print(f"fractalops-worker: job loop stopped after {done} job(s)", flush=True)
    return done


def main() -> None:
    """Run the job loop until SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(Settings.from_env(), stop)


if __name__ == "__main__":
    main()
