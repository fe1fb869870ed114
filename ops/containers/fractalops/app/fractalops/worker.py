"""The FractalOps worker: a job loop that renders Mandelbrot tiles with numpy and logs each job."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import numpy as np

from fractalops import __version__
from fractalops.settings import Settings


def render_tile(job: int, size: int, limit: int = 64) -> int:
    """Render one size x size tile of the Mandelbrot set (its place moves with the job number); return points inside."""
    centre = complex(-0.75 + 0.01 * (job % 50), 0.1 * ((job % 7) - 3))
    span = 3.0 / (1 + job % 5)
    axis = np.linspace(-span / 2, span / 2, size)
    c = centre + axis[np.newaxis, :] + 1j * axis[:, np.newaxis]
    z = np.zeros_like(c)
    inside = np.ones(c.shape, dtype=bool)
    for _ in range(limit):
        z[inside] = z[inside] * z[inside] + c[inside]
        inside &= np.abs(z) <= 2
    return int(inside.sum())


def run(settings: Settings, stop: threading.Event) -> int:
    """Run jobs until stopped (or MAX_JOBS are done); return how many ran."""
    print(
        f"fractalops-worker {__version__}: job loop started (every {settings.job_interval_seconds:g} s, "
        f"tiles of {settings.tile_size}x{settings.tile_size}, numpy {np.__version__})",
        flush=True,
    )
    done = 0
    while not stop.is_set() and (settings.max_jobs == 0 or done < settings.max_jobs):
        started = time.perf_counter()
        inside = render_tile(done + 1, settings.tile_size)
        done += 1
        took = time.perf_counter() - started
        print(f"fractalops-worker: job {done} done: {inside} points inside, {took:.3f} s", flush=True)
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
