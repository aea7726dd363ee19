"""Run identifiers, environment capture and atomic JSON/text writers: the engine's I/O (any model, any study).

The seed's output tree (which file goes where) belongs to the study: :mod:`gimbal.divergence.paths`.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, write_text_atomic

__all__ = [
    "default_run_id",
    "validate_run_id",
    "collect_environment",
    "write_json",
    "read_json",
    "save_text",
    "to_jsonable",
    "copy_latest",
]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def default_run_id(now: datetime | None = None) -> str:
    """An ISO timestamp usable as a file name on every OS (``2025-12-19T21-00-00``)."""
    now = now or datetime.now()
    return now.strftime("%Y-%m-%dT%H-%M-%S")


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(
            f"run_id {run_id!r} is not usable in file names: use letters, digits, '.', '_' and '-' "
            "(at most 100 characters), e.g. 2025-12-19T21-00-00."
        )
    return run_id


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_environment() -> dict:
    """Versions of Python and the numerical stack, and the platform."""
    import pytensor

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor_count": __import__("os").cpu_count(),
        "packages": {
            name: _version(name)
            for name in ("gimbal", "pymc", "pytensor", "nutpie", "arviz", "arviz-stats", "arviz-plots", "numpy", "scipy", "xarray", "numba")
        },
        "pytensor_linker": str(pytensor.config.linker),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def to_jsonable(obj):
    """Convert numpy scalars/arrays, paths and non-finite floats to strict-JSON-friendly values.

    NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
    so that the file stays valid JSON (``-inf`` logp terms must survive a round trip).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj


def write_json(path, payload) -> Path:
    """Write ``payload`` as stable (sorted keys), UTF-8, strict JSON, atomically."""
    text = json.dumps(to_jsonable(payload), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_text(path, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return write_text_atomic(path, text)


def copy_latest(src, dst) -> Path:
    """Atomically replace ``dst`` by a copy of ``src`` (the 'latest' convenience copies)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst
