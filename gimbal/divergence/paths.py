"""The seed's output tree: where each group's artifacts go (``IMPORTANT_FILE_NAMING_CONVENTIONS.md``).

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

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..diagnostics.io import validate_run_id

__all__ = ["DEFAULT_ROOT", "DiagPaths", "make_paths", "archive_legacy"]

DEFAULT_ROOT = Path("tests") / "diagnostics" / "v0_2_1_divergence"
_GROUP_DESC = re.compile(r"^group_[0-9]+[a-z]?_[A-Za-z0-9_]+$")


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
