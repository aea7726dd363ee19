"""Artifact paths, environment capture and atomic writers (the seed's shared utilities).

The output tree (relative to a diagnostics root, by default
``tests/diagnostics/v0_2_1_divergence``)::

    results/results_group_N_<desc>__<run_id>.json   results of one run
    results/results_group_N_<desc>.json             copy of the latest run
    results/group_N_<desc>__<run_id>.ipynb          the executed notebook
    report_group_N_<desc>__<run_id>.md              report of one run
    report_group_N_<desc>.md                        copy of the latest report
    plots/group_N_<desc>/<run_id>/*.png             plots of one run (+ artifacts_manifest.json)
    plots/group_N_<desc>/*.png                      copies of the latest plots (+ manifest)
    debug_outputs/group_N_<desc>/<run_id>/          anything else a run wants to keep
    archive/                                        legacy tg* artifacts, moved, never deleted
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, write_text_atomic

__all__ = [
    "DEFAULT_ROOT",
    "DiagPaths",
    "make_paths",
    "default_run_id",
    "validate_run_id",
    "collect_environment",
    "write_json",
    "read_json",
    "save_text",
    "to_jsonable",
    "copy_latest",
    "archive_legacy",
]

DEFAULT_ROOT = Path("tests") / "diagnostics" / "v0_2_1_divergence"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GROUP_DESC = re.compile(r"^group_[0-9]+[a-z]?_[A-Za-z0-9_]+$")


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


@dataclass(frozen=True)
class DiagPaths:
    """Every artifact location of one group and run."""

    root: Path
    group_desc: str
    run_id: str

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def results_run(self) -> Path:
        return self.results_dir / f"results_{self.group_desc}__{self.run_id}.json"

    @property
    def results_latest(self) -> Path:
        return self.results_dir / f"results_{self.group_desc}.json"

    @property
    def report_run(self) -> Path:
        return self.root / f"report_{self.group_desc}__{self.run_id}.md"

    @property
    def report_latest(self) -> Path:
        return self.root / f"report_{self.group_desc}.md"

    @property
    def notebook_run(self) -> Path:
        return self.results_dir / f"{self.group_desc}__{self.run_id}.ipynb"

    @property
    def plots_latest(self) -> Path:
        return self.root / "plots" / self.group_desc

    @property
    def plots_run(self) -> Path:
        return self.plots_latest / self.run_id

    @property
    def debug_dir(self) -> Path:
        return self.root / "debug_outputs" / self.group_desc / self.run_id

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    def create(self) -> "DiagPaths":
        """Create the seed's four subdirectories and this run's plot/debug folders."""
        for d in (self.results_dir, self.plots_run, self.debug_dir, self.archive_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        """Whether this run already produced results (so writing again needs ``overwrite``)."""
        return self.results_run.exists() or self.report_run.exists()


def make_paths(group_desc: str, run_id: str, root=DEFAULT_ROOT) -> DiagPaths:
    """Run-specific and latest paths of a group's results, report, plots and debug output.

    Parameters
    ----------
    group_desc : str
        ``group_<N>_<desc>``, e.g. ``group_3_sampling_baseline_minimal``.
    run_id : str
        File-name-safe run identifier (see :func:`default_run_id`).
    root : path-like
        The diagnostics root.
    """
    if not _GROUP_DESC.match(group_desc):
        raise ValueError(f"group_desc {group_desc!r} must look like 'group_3_sampling_baseline_minimal'.")
    return DiagPaths(Path(root), group_desc, validate_run_id(run_id))


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


def archive_legacy(root=DEFAULT_ROOT) -> list[Path]:
    """Move legacy ``results_tg*.json`` / ``report_tg*.md`` into ``archive/`` (never deletes).

    A file whose name already exists in the archive is kept beside it with a
    numeric suffix, so nothing is ever overwritten.
    """
    root = Path(root)
    moved = []
    candidates = list(root.glob("report_tg*.md")) + list(root.glob("results_tg*.json"))
    candidates += list((root / "results").glob("results_tg*.json")) if (root / "results").is_dir() else []
    for src in candidates:
        dest_dir = root / "archive"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / src.name
        n = 1
        while dest.exists():
            dest = dest_dir / f"{src.stem}.{n}{src.suffix}"
            n += 1
        shutil.move(str(src), str(dest))
        moved.append(dest)
    return moved
