"""Convergence against sequence length: the full model sampled with nutpie, every latent checked."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import SEED_MODEL, dataset_of_length, machine, peak_rss_mib, read_results, write_result

FULL_T = (80, 200, 500, 1000, 1800)
QUICK_T = (80,)


def run_one(dataset: str, T: int, chains: int, tune: int, draws: int, seed: int = 1, adaptation: str = "diag",
            maxdepth: int = 10, target_accept: float = 0.8, trace_on_disk: bool = False, backend: str = "numba",
            pooled_warmup: bool = True) -> dict:
    options = dict(seed=seed, adaptation=adaptation, maxdepth=maxdepth, target_accept=target_accept, backend=backend,
                   pooled_warmup=pooled_warmup)
    if not trace_on_disk:
        return _run_one(dataset, T, chains, tune, draws, trace_dir=None, **options)
    with tempfile.TemporaryDirectory(prefix="gimbal-trace-") as tmp:
        return _run_one(dataset, T, chains, tune, draws, trace_dir=Path(tmp) / "trace.zarr", **options)


def _run_one(dataset, T, chains, tune, draws, seed, adaptation, maxdepth, target_accept, trace_dir, backend,
             pooled_warmup) -> dict:
    from gimbal.diagnostics.multimodality import multimodality_check
    from gimbal.diagnostics.chance import chance_max_rhat
    from gimbal.diagnostics.sampling import sampling_summary
    from gimbal.model.fitting import backend_model_options, jax_device, latent_names, position_errors, sample_model
    from gimbal.model.build import build_model

    ds = dataset_of_length(dataset, T)
    t0 = time.perf_counter()
    model = build_model(ds, validate=False, **SEED_MODEL, **backend_model_options(backend))
    build_s = time.perf_counter() - t0
    fit = sample_model(model, chains=chains, tune=tune, draws=draws, seed=seed, progress=False, adaptation=adaptation,
                       maxdepth=maxdepth, target_accept=target_accept, save_warmup=False, trace_dir=trace_dir,
                       float32_vars=("x",), backend=backend, pooled_warmup=pooled_warmup)
    t1 = time.perf_counter()
    # one summary: "selected" = the free random variables (deterministics such as log_obs_t left out)
    s = sampling_summary(fit.trace, selected_vars=latent_names(model), wall_time_s=fit.sample_s)
    err = position_errors(fit.trace, ds)
    mm = multimodality_check(fit.trace)
    summary_s = time.perf_counter() - t1
    # the yardstick for the worst position's R-hat: the chance maximum of exactly converged chains over as many
    # elements with the median position's ESS (not part of the fit's wall time)
    positions = s["per_variable"]["x"]
    chance = (chance_max_rhat(chains, draws, positions["n_elements"],
                              ess_fraction=min(4.0, positions["ess_bulk_median"] / (chains * draws)), seed=seed)
              if positions["ess_bulk_median"] else None)
    row = {
        "dataset": dataset, "T": T, "chains": chains, "tune": tune, "draws": draws, "adaptation": adaptation,
        "maxdepth": maxdepth, "target_accept": target_accept, "backend": backend,
        "device": jax_device() if backend == "jax" else "cpu", "machine": machine(), "mean_step_size": s["mean_step_size"],
        "build_s": build_s, "compile_s": fit.compile_s, "sample_s": fit.sample_s, "read_back_s": fit.read_back_s,
        "summary_s": summary_s, "seed": seed,
        "pooled_warmup": None if fit.pooled is None else fit.pooled.as_dict(),  # None: one-stage warm-up
        "divergences": s["divergences"], "max_rhat_latents": s["max_rhat_selected"],
        "max_rhat_latents_var": s["max_rhat_selected_var"], "min_ess_bulk_latents": s["min_ess_bulk_selected"],
        "min_ess_tail_latents": s["min_ess_tail_selected"], "min_ess_bulk_per_s": s["min_ess_bulk_selected"] / fit.sample_s,
        "mean_grad_evals_per_draw": s["mean_grad_evals_per_draw"], "max_treedepth_fraction": s["max_treedepth_fraction"],
        "min_ebfmi": s["min_ebfmi"], "max_rhat_positions": positions["rhat"], "min_ess_bulk_positions": positions["ess_bulk"],
        "median_ess_bulk_positions": positions["ess_bulk_median"], "n_positions": positions["n_elements"],
        "chance_max_rhat_positions": chance, "multimodality": mm["verdict"], "n_flagged_elements": mm.get("n_flagged", 0),
        "posterior_median_error": (err or {}).get("posterior_mean", {}).get("median"),
        "triangulation_median_error": (err or {}).get("triangulation", {}).get("median"),
        "error_ratio": (err or {}).get("ratio_median_posterior_to_triangulation"),
        "units": (err or {}).get("units"), "peak_rss_mib": peak_rss_mib(),
        "model": model.gimbal_config.as_dict(),
        "stored": ("every draw (warm-up included) in a zarr store on disk in float64; posterior draws read back "
                   "into memory, positions in float32" if trace_dir else
                   "every draw (warm-up included) in memory in float64, as nutpie keeps it")
                  + "; R-hat/ESS computed in blocks",
    }
    return row


def run(dataset: str = "v0.2.1_L00_minimal", quick: bool = False, lengths=None, chains=None, tune=None, draws=None,
        adaptation: str = "diag", maxdepth: int = 10, target_accept: float = 0.8, trace_on_disk: bool = False,
        backend: str = "numba", seed: int = 1, pooled_warmup: bool = True) -> dict:
    lengths = lengths or (QUICK_T if quick else FULL_T)
    chains = chains or (2 if quick else 4)
    tune = tune if tune is not None else (200 if quick else 1000)
    draws = draws or (100 if quick else 1000)
    rows = []
    for T in lengths:
        row = run_one(dataset, T, chains, tune, draws, adaptation=adaptation, maxdepth=maxdepth,
                      target_accept=target_accept, trace_on_disk=trace_on_disk, backend=backend, seed=seed,
                      pooled_warmup=pooled_warmup)
        rows.append(row)
        chance = row["chance_max_rhat_positions"]
        print(f"  {dataset} T={T:5d}: {row['divergences']} div, max R-hat {row['max_rhat_latents']:.4f} [{row['max_rhat_latents_var']}] "
              f"(by chance over {row['n_positions']} positions: {chance if chance is None else f'{chance:.4f}'}), "
              f"min ESS {row['min_ess_bulk_latents']:.0f}, {row['mean_grad_evals_per_draw']:.0f} grad/draw, "
              f"{row['sample_s']:.0f} s, error {row['posterior_median_error']:.3f} vs {row['triangulation_median_error']:.3f}", flush=True)
    name = f"sampling_{dataset}{'_quick' if quick else ''}"
    # rows of other lengths from earlier runs are kept: a long T can be (re)measured on its own
    key = lambda r: (r["T"], r["chains"], r["tune"], r["draws"], r["adaptation"], r.get("maxdepth", 10),
                     r.get("target_accept", 0.8), r.get("backend", "numba"), r.get("device", "cpu"),
                     r.get("seed", 1), r.get("pooled_warmup") is not None)  # noqa: E731  (rows before it: one stage)
    new_keys = {key(r) for r in rows}
    earlier = [r for r in read_results().get(name, {}).get("rows", []) if "adaptation" in r and key(r) not in new_keys]
    rows = sorted(earlier + rows, key=lambda r: (r["T"], r.get("maxdepth", 10), r.get("target_accept", 0.8),
                                                 r.get("backend", "numba")))
    payload = {"benchmark": "sampling", "dataset": dataset, "quick": quick, "machine": machine(), "rows": rows,
               "targets": {"divergences": 0, "max_rhat": 1.01, "min_ess_bulk": 400, "wall_s": 1200, "error_ratio": 0.6}}
    write_result(name, payload)
    return payload
