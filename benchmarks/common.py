"""Shared helpers: datasets of any length, peak memory, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def dataset_of_length(name: str, T: int):
    """A registered synthetic dataset with exactly ``T`` frames (regenerated when longer than the stored one)."""
    from gimbal.datasets import load_dataset
    from gimbal.datasets.synthetic import SYNTHETIC, generate

    stored = SYNTHETIC[name].T
    if T <= stored:
        return load_dataset(name, max_T=T)
    return generate(replace(SYNTHETIC[name], T=T))


def logp_grad_times(compiled, n_evals: int) -> tuple[int, list[float]]:
    """Seconds per logp + gradient call of nutpie's compiled function at its initial point (after one warm-up call).

    Returns the number of unconstrained parameters and the ``n_evals`` timings.
    """
    import time

    import numpy as np

    x0 = np.asarray(compiled.initial_point_func(0), dtype=float)
    compiled.logp_func(x0)
    times = []
    for _ in range(n_evals):
        t0 = time.perf_counter()
        compiled.logp_func(x0)
        times.append(time.perf_counter() - t0)
    return x0.size, times


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB (Linux/macOS: getrusage; Windows: peak working set)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if sys.platform != "darwin" else peak / 2**20
    except ImportError:
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20


def machine() -> dict:
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count()}


def write_result(name: str, payload: dict, out_dir: Path = RESULTS) -> Path:
    from gimbal.diagnostics.io import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    return write_json(out_dir / f"{name}.json", payload)


def read_results(out_dir: Path = RESULTS) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))} if out_dir.is_dir() else {}
