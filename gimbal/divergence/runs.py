"""What a run was asked to do, and what became of each group: manifests, stale and missing results.

``gimbal diag run`` writes ``runs/<run_id>.json`` under the diagnostics root before any group starts: the
requested groups, the runner's process id and host, and the run's status (``running``, ``finished``,
``interrupted``). Readers (the summary, the book) use it so that

* every requested group appears, also one that crashed before writing anything (``no_results``);
* a result left at ``"status": "running"`` by a process that no longer exists (killed, machine restarted)
  reads as ``interrupted``, never as running forever;
* ``--resume RUN_ID`` knows which groups still need to run.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from ..diagnostics import io
from ..errors import UsageError

__all__ = ["manifest_path", "write_manifest", "read_manifest", "process_alive", "resolve_result",
           "missing_result", "groups_to_resume", "RUNS_DIR"]

RUNS_DIR = "runs"


def manifest_path(root, run_id: str) -> Path:
    return Path(root) / RUNS_DIR / f"{io.validate_run_id(run_id)}.json"


def write_manifest(root, run_id: str, groups: list[str], status: str, **extra) -> Path:
    """Record (atomically) the requested groups, this process and the run's status."""
    previous = read_manifest(root, run_id) or {}
    data = {**previous, "run_id": run_id, "groups": list(groups), "status": status, "pid": os.getpid(),
            "host": platform.node(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    data.setdefault("started", data["updated"])
    return io.write_json(manifest_path(root, run_id), data)


def read_manifest(root, run_id: str) -> dict | None:
    path = manifest_path(root, run_id)
    return io.read_json(path) if path.exists() else None


def process_alive(pid, host) -> bool:
    """Whether process ``pid`` still runs; a process on another host is assumed alive (it cannot be checked)."""
    if pid is None:
        return False
    if host and host != platform.node():
        return True
    import psutil

    try:
        return psutil.pid_exists(int(pid)) and psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def resolve_result(result: dict) -> dict:
    """A result as it stands: ``running`` by a dead process becomes ``interrupted`` (with an error verdict)."""
    if result.get("status") != "running":
        return result
    proc = result.get("process") or {}
    if process_alive(proc.get("pid"), proc.get("host")):
        return result
    steps = [s["name"] for s in result.get("steps", [])]
    last = steps[-1] if steps else "the start"
    out = dict(result)
    out["status"] = "interrupted"
    out["verdict"] = {"status": "error", "code": "interrupted",
                      "interpretation": f"The run was interrupted after {last}: its process ({proc.get('pid')}) "
                                        "ended without finishing (killed, or the machine stopped).",
                      "next_action": f"Finish it with `gimbal diag run --resume {result['header'].get('run_id')}`."}
    return out


def missing_result(group: str, description: str, run_id: str, why: str = "") -> dict:
    """The stand-in for a requested group that wrote no results at all."""
    return {"header": {"group": group, "description": description, "title": f"Group {group}", "run_id": run_id,
                       "T": None},
            "status": "failed", "steps": [], "sampling": None,
            "verdict": {"status": "error", "code": "no_results",
                        "interpretation": f"Group {group} was requested but wrote no results"
                                          + (f" ({why})" if why else "") + ".",
                        "next_action": f"Re-run it with `gimbal diag run --resume {run_id}` and read its notebook."}}


def groups_to_resume(root, run_id: str, collected: list[dict]) -> list[str]:
    """Requested groups of ``run_id`` whose results are missing, failed or interrupted."""
    manifest = read_manifest(root, run_id)
    if manifest is None:
        raise UsageError(f"run '{run_id}' has no manifest under {Path(root) / RUNS_DIR}; it was not started by "
                                "`gimbal diag run` (or by an older gimbal): re-run it with --run-id and --overwrite.")
    done = {r["header"]["group"] for r in collected if r.get("status") == "ok"}
    return [g for g in manifest["groups"] if g not in done]
