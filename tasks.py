#!/usr/bin/env python3
"""Set up and run gimbal in two commands, on Linux, macOS and Windows alike.

    python3 tasks.py report   # the main job: quick diagnostics run + report book (default data)
    python3 tasks.py test     # the test suite

Each command first makes sure ``.venv`` exists and holds the project with its
pinned dependencies (``constraints.txt``); it reinstalls only when
``pyproject.toml`` or ``constraints.txt`` changed. Extra arguments are passed on
(``python3 tasks.py test -k vmf``). Needs Python >= 3.12 (``.python-version``
selects it under pyenv/uv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".gimbal-install-stamp"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        p = ROOT / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def ensure_environment() -> Path:
    if sys.version_info < (3, 12):
        sys.exit(
            f"gimbal needs Python >= 3.12 (PyMC 6), but this is {sys.version.split()[0]}. "
            "Run it with a 3.12 interpreter (pyenv/uv honour .python-version), or use `pixi run ...`."
        )
    py = venv_python()
    if not py.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    if not STAMP.exists() or STAMP.read_text() != _fingerprint():
        print("installing gimbal and its dependencies (first run takes a few minutes)", flush=True)
        cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[test]"]
        if (ROOT / "constraints.txt").exists():
            cmd += ["-c", "constraints.txt"]
        subprocess.run(cmd, cwd=ROOT, check=True)
        STAMP.write_text(_fingerprint())
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("report", "test", "setup"):
        print(__doc__)
        return 2
    py = ensure_environment()
    command, extra = argv[0], argv[1:]
    if command == "setup":
        return 0
    if command == "test":
        # the whole suite on up to 2 processes (one file per process, so module fixtures run once); any extra
        # argument (a -k, a file, -n) is passed on instead
        parallel = ["-n", str(min(2, os.cpu_count() or 1)), "--dist", "loadfile"] if not extra else []
        return subprocess.call([str(py), "-m", "pytest", *parallel, *extra], cwd=ROOT)
    gimbal = [str(py), "-m", "gimbal.cli"]
    rc = subprocess.call([*gimbal, "diag", "run", "--groups", "all", "--profile", "quick", "--jobs", "2", *extra], cwd=ROOT)
    # a group that crashed still leaves artifacts: build the book either way, then report the status
    book_rc = subprocess.call([*gimbal, "diag", "book"], cwd=ROOT)
    return rc or book_rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
