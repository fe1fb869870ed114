"""The Mandelbrot renderer both services share: escape times of a square tile, with numpy."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def escape_times(centre: complex, span: float, size: int, limit: int = 64) -> NDArray[np.int32]:
    """Return, for each point of a size x size tile around `centre`, the step at which it escaped (limit: never)."""
    axis = np.linspace(-span / 2, span / 2, size)
    c = centre + axis[np.newaxis, :] + 1j * axis[:, np.newaxis]
    z = np.zeros_like(c)
    steps = np.full(c.shape, limit, dtype=np.int32)
    running = np.ones(c.shape, dtype=bool)
    for step in range(limit):
        z[running] = z[running] * z[running] + c[running]
        escaped = running & (np.abs(z) > 2)
        steps[escaped] = step + 1
        running &= ~escaped
    return steps


def tile_for_job(job: int) -> tuple[complex, float]:
    """Return the centre and span of the tile a job renders (it wanders along the set's edge)."""
    return complex(-0.75 + 0.01 * (job % 50), 0.1 * ((job % 7) - 3)), 3.0 / (1 + job % 5)
