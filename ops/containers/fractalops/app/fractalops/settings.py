"""Runtime settings of the services, read once from the environment and checked by pydantic."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Settings(BaseModel):
    """Where the API listens and how the worker paces its job loop."""

    model_config = ConfigDict(frozen=True)

    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all of its own interfaces
    port: int = Field(8000, ge=1, le=65535)
    job_interval_seconds: float = Field(2.0, gt=0)
    max_jobs: int = Field(0, ge=0)  # 0: run until stopped
    tile_size: int = Field(96, ge=8, le=1024)
    output_dir: Path = Path("/tmp/fractalops-tiles")  # noqa: S108 - the worker's own scratch space in its container

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from HOST, PORT, JOB_INTERVAL_SECONDS, MAX_JOBS, TILE_SIZE and OUTPUT_DIR."""
        env = os.environ if environ is None else environ
        names = {"host": "HOST", "port": "PORT", "job_interval_seconds": "JOB_INTERVAL_SECONDS"}
        names |= {"max_jobs": "MAX_JOBS", "tile_size": "TILE_SIZE", "output_dir": "OUTPUT_DIR"}
        values = {field: env[name] for field, name in names.items() if env.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0])
            raise SystemExit(f"error: {names[field]}={values.get(field)!r}: {first['msg']}") from None
