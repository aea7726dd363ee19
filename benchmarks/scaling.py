"""Cost against sequence length: build, compile (cold and warm), one logp+gradient, peak memory.

Every T runs in a fresh subprocess with empty PyTensor and numba caches for
the cold compile; the warm compile rebuilds the same model in that process; the
"other recording" compile then builds a model of another recording (T + 1 frames,
perturbed detections) in the same process, which the cache should serve: the model
takes its data as shared inputs, so a new recording is not a new compilation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import SEED_MODEL, dataset_of_length, logp_grad_callable, logp_grad_times, machine, peak_rss_mib, read_results, write_result

FULL_T = (80, 200, 500, 1000, 1800, 7200)
QUICK_T = (80, 200)


def measure_one(dataset: str, T: int, n_evals: int = 200) -> dict:
    """Run inside the worker process."""
    import nutpie

    from gimbal.model.build import build_model

    ds = dataset_of_length(dataset, T)
    t0 = time.perf_counter()
    model = build_model(ds, validate=False, **SEED_MODEL)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, jitter_rvs=set())
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nutpie.compile_pymc_model(build_model(ds, validate=False, **SEED_MODEL), jitter_rvs=set())
    warm_s = time.perf_counter() - t0
    other = dataset_of_length(dataset, T + 1).copy(deep=True)
    other["observations"] = other["observations"] + np.random.default_rng(0).normal(0, 0.5, other["observations"].shape)
    t0 = time.perf_counter()
    nutpie.compile_pymc_model(build_model(other, validate=False, **SEED_MODEL), jitter_rvs=set())
    other_s = time.perf_counter() - t0
    f, x0, _ = logp_grad_callable(compiled, model)
    n_parameters, times = x0.size, logp_grad_times(f, x0, n_evals)
    return {"dataset": dataset, "T": T, "n_parameters": int(n_parameters), "build_s": build_s, "compile_cold_s": cold_s,
            "compile_warm_s": warm_s, "compile_other_recording_s": other_s,
            "compile_other_recording_ratio": other_s / cold_s, "logp_grad_median_ms": 1e3 * float(np.median(times)),
            "logp_grad_p90_ms": 1e3 * float(np.percentile(times, 90)), "n_evals": n_evals, "peak_rss_mib": peak_rss_mib()}


def run(dataset: str = "v0.2.1_L00_minimal", quick: bool = False, lengths=None, repeats: int = 1) -> dict:
    lengths = lengths or (QUICK_T if quick else FULL_T)
    rows = []
    for T in lengths:
        for rep in range(repeats):
            with tempfile.TemporaryDirectory() as cache:
                # cold: PyTensor keeps its numba kernels under base_compiledir (its "numba" folder), not under compiledir
                env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={cache}/pytensor", NUMBA_CACHE_DIR=f"{cache}/numba")
                code = f"import json; from benchmarks.scaling import measure_one; print(json.dumps(measure_one({dataset!r}, {T})))"
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
            if done.returncode != 0:
                rows.append({"T": T, "repeat": rep, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["repeat"] = rep
            rows.append(row)
            print(f"  T={T:5d}  build {row['build_s']:.1f} s  compile cold {row['compile_cold_s']:.1f} s / warm "
                  f"{row['compile_warm_s']:.1f} s / another recording {row['compile_other_recording_s']:.1f} s  logp+grad {row['logp_grad_median_ms']:.3f} ms  peak {row['peak_rss_mib']:.0f} MiB",
                  flush=True)
    name = f"scaling_{dataset}{'_quick' if quick else ''}"
    # rows of lengths not measured now are kept from earlier runs: one T can be measured again on its own
    earlier = [r for r in read_results().get(name, {}).get("rows", []) if r["T"] not in set(lengths)]
    rows = sorted(earlier + rows, key=lambda r: (r["T"], r["repeat"]))
    ok = [r for r in rows if "error" not in r]
    by_T = {}
    for r in ok:
        by_T.setdefault(r["T"], []).append(r)
    med = {T: {k: float(np.median([r[k] for r in rs])) for k in ("compile_cold_s", "compile_warm_s", "logp_grad_median_ms")} for T, rs in by_T.items()}
    Ts = sorted(med)
    ratios = {}
    if len(Ts) >= 2:
        lo, hi = Ts[0], Ts[-1]
        ratios = {"T_low": lo, "T_high": hi,
                  "compile_cold_ratio": med[hi]["compile_cold_s"] / med[lo]["compile_cold_s"],
                  "compile_warm_ratio": med[hi]["compile_warm_s"] / med[lo]["compile_warm_s"],
                  "eval_cost_per_frame_us": {T: 1e3 * med[T]["logp_grad_median_ms"] / T for T in Ts},
                  # the target: compile at T=1800 within 1.2x of T=80, for every measured T
                  "compile_cold_ratio_vs_lowest": {T: med[T]["compile_cold_s"] / med[lo]["compile_cold_s"] for T in Ts},
                  "compile_warm_ratio_vs_lowest": {T: med[T]["compile_warm_s"] / med[lo]["compile_warm_s"] for T in Ts}}
    payload = {"benchmark": "scaling", "dataset": dataset, "quick": quick, "machine": machine(), "rows": rows, "medians": med, "ratios": ratios}
    write_result(name, payload)
    return payload
