"""One logp+gradient per compilation backend, side by side in one process.

numba with the fused kernels (the default) against JAX on the plain graph, with
the HMM frame by frame (``sequential``) or as a log-depth tree (``parallel``).
JAX runs on its default device: a GPU where a CUDA build of JAX is installed.
Each variant is also checked against the numba value and gradient at the same
point, so a device that computes something else is caught, not timed.
"""

from __future__ import annotations

import time

import numpy as np

from .common import SEED_MODEL, dataset_of_length, logp_grad_callable, logp_grad_times, machine, peak_rss_mib, read_results, write_result

FULL_T = (80, 200, 500, 1000, 1800, 7200)
QUICK_T = (80,)
VARIANTS = {
    "numba-fused": ("numba", {"kernels": "fused"}),
    "jax-graph-sequential": ("jax", {"kernels": "graph", "hmm_algorithm": "sequential"}),
    "jax-graph-parallel": ("jax", {"kernels": "graph", "hmm_algorithm": "parallel"}),
}


def _by_name(flat, names, model) -> dict:
    """Split a stacked gradient into its value variables."""
    point = model.initial_point()
    flat, out, start = np.asarray(flat, dtype=float), {}, 0
    for n in names:
        size = int(np.size(point[n]))
        out[n], start = flat[start:start + size], start + size
    return out


def measure(dataset: str, T: int, variants=tuple(VARIANTS), n_evals: int = 100) -> list[dict]:
    """Compile time, logp+gradient time and agreement with numba for each variant at one ``T``."""
    from gimbal.model.fitting import compile_nutpie, jax_device
    from gimbal.model.build import build_model

    ds = dataset_of_length(dataset, T)
    reference = build_model(ds, validate=False, **SEED_MODEL)  # numba-fused: the reference value and gradient
    init = reference.gimbal_init
    t0 = time.perf_counter()
    ref = compile_nutpie(reference, backend="numba", jitter=False)
    f_ref, x_ref, names_ref = logp_grad_callable(ref, reference)
    logp_ref, grad_ref = f_ref(x_ref)
    ref_compile_s = time.perf_counter() - t0
    grad_ref = _by_name(grad_ref, names_ref, reference)
    scale = max(np.max(np.abs(np.concatenate(list(grad_ref.values())))), 1e-300)
    rows = []
    for label in variants:
        backend, options = VARIANTS[label]
        model = reference
        if label == "numba-fused":
            compiled, compile_s = ref, ref_compile_s
            f, x0, names = f_ref, x_ref, names_ref
        else:
            model = build_model(ds, validate=False, init=init, **{**SEED_MODEL, **options})
            t0 = time.perf_counter()
            compiled = compile_nutpie(model, backend=backend, jitter=False)
            f, x0, names = logp_grad_callable(compiled, model)
            f(x0)  # JAX traces and compiles on the first call: part of the compile time
            compile_s = time.perf_counter() - t0
        times = logp_grad_times(f, x0, n_evals, max_s=10.0)
        logp, grad = f(x0)  # the same point as the reference, stacked in this function's order
        grad = _by_name(grad, names, model)
        agree = {"logp_abs_diff_vs_numba": float(abs(logp - logp_ref)),
                 "grad_max_rel_diff_vs_numba": float(max(np.max(np.abs(grad[n] - grad_ref[n])) for n in names_ref) / scale)}
        rows.append({"dataset": dataset, "T": T, "variant": label, "backend": backend, "model": options,
                     "device": jax_device() if backend == "jax" else "cpu (numba, one thread per chain)",
                     "n_parameters": int(x0.size), "compile_s": compile_s,  # build excluded, first call included
                     "logp_grad_median_ms": 1e3 * float(np.median(times)),
                     "logp_grad_p90_ms": 1e3 * float(np.percentile(times, 90)), "n_evals": len(times),
                     "peak_rss_mib": peak_rss_mib(), **agree})
    return rows


def run(dataset: str = "v0.2.1_L00_minimal", quick: bool = False, lengths=None, variants=None) -> dict:
    variants = tuple(variants or VARIANTS)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown backend variants {sorted(unknown)}; choose from {list(VARIANTS)}.")
    lengths = lengths or (QUICK_T if quick else FULL_T)
    rows = []
    for T in lengths:
        for row in measure(dataset, T, variants, n_evals=20 if quick else 100):
            rows.append(row)
            print(f"  T={T:5d} {row['variant']:22s} [{row['device']}] compile {row['compile_s']:6.1f} s  "
                  f"logp+grad {row['logp_grad_median_ms']:8.3f} ms  "
                  f"|dlogp| vs numba {row['logp_abs_diff_vs_numba']:.1e}, grad {row['grad_max_rel_diff_vs_numba']:.1e}", flush=True)
    from gimbal.model.fitting import jax_device

    device = (jax_device() or "none").split(":")[0]
    name = f"backends_{dataset}_{device}{'_quick' if quick else ''}"
    key = lambda r: (r["T"], r["variant"])  # noqa: E731
    new = {key(r) for r in rows}
    earlier = [r for r in read_results().get(name, {}).get("rows", []) if key(r) not in new]
    rows = sorted(earlier + rows, key=lambda r: (r["T"], list(VARIANTS).index(r["variant"])))
    payload = {"benchmark": "backends", "dataset": dataset, "quick": quick, "machine": {**machine(), "jax_device": jax_device()},
               "rows": rows}
    write_result(name, payload)
    return payload
