"""Ablation: each model or sampler choice that matters, switched back to the alternative, side by side.

Every variant samples the same dataset with the same seed, chains and draws; the
default model is the first row. Rows report what the choice is meant to prevent
(the failure), and the numbers that show whether it does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from .common import (SEED_MODEL, dataset_of_length, earlier_rows, logp_grad_callable, logp_grad_times, machine,
                     write_result)

# (label, build_model options, sampler options, the failure the default choice removes)
VARIANTS = (
    ("default", {}, {}, "-"),
    ("scales=learned", {"scales": "learned"}, {},
     "funnel between the positional spread / step size and every position (low E-BFMI, R-hat on the scales)"),
    ("directions=explicit", {"directions": "explicit"}, {},
     "per-frame unit vectors: T x B more parameters and a sphere constraint for NUTS to cross"),
    ("state_params=learned", {"state_params": "learned"}, {},
     "label-symmetric state parameters: chains settle on different relabellings of the pose states"),
    ("root_dynamics=noncentered", {"root_dynamics": "noncentered"}, {},
     "non-centered root random walk: every root position depends on all earlier steps, so the cameras' tight "
     "constraint on each frame correlates the steps (the centered form matches a likelihood-dominated posterior)"),
    ("steps=student_t", {"steps": "student_t"}, {},
     "none known: heavy-tailed random-walk steps (the package's default; the seed's are Gaussian); on data made with "
     "Gaussian steps it tests what the tails cost"),
    ("kernels=graph", {"kernels": "graph"}, {}, "slower gradient (same posterior): plain PyTensor graph instead of fused kernels"),
    ("outlier_model=student_t", {"kernels": "graph", "outlier_model": "student_t"}, {},
     "none known: a heavy-tailed Student-t likelihood instead of the inlier/outlier mixture (compare with kernels=graph, "
     "the same gradient code); tests whether the mixture's shoulder at detections 3-10 noise sd away slows mixing"),
    ("adaptation=low_rank", {}, {"adaptation": "low_rank"}, "mass-matrix choice: nutpie's low-rank adaptation instead of diagonal"),
)


def _gradient_ms(compiled, model, repeats: int = 30) -> float:
    """Median wall time of one logp + gradient with nutpie's compiled function, at the initial point."""
    f, x0, _ = logp_grad_callable(compiled, model)
    return 1000 * float(np.median(logp_grad_times(f, x0, repeats)))


def run_variant(ds, label, build_opts, sampler_opts, chains, tune, draws, seed=1) -> dict:
    from gimbal.diagnostics.multimodality import multimodality_check
    from gimbal.diagnostics.sampling import sampling_summary
    from gimbal.model.fitting import latent_names, position_errors, sample_model
    from gimbal.model.build import build_model

    model = build_model(ds, validate=False, **{**SEED_MODEL, **build_opts})
    fit = sample_model(model, chains=chains, tune=tune, draws=draws, seed=seed, progress=False, save_warmup=False,
                       **sampler_opts)
    grad_ms = _gradient_ms(fit.compiled, model)
    latent = latent_names(model)
    s = sampling_summary(fit.trace, selected_vars=latent, wall_time_s=fit.sample_s)
    positions = s["per_variable"]["x"]  # the 3D positions alone (also where x is a deterministic)
    err = position_errors(fit.trace, ds) or {}
    mm = multimodality_check(fit.trace)
    return {
        "variant": label, "build_options": build_opts, "sampler_options": sampler_opts,
        "n_parameters": int(sum(np.size(v) for v in model.initial_point().values())),
        "gradient_ms": grad_ms, "compile_s": fit.compile_s, "sample_s": fit.sample_s,
        "divergences": s["divergences"], "max_rhat_latents": s["max_rhat_selected"],
        "max_rhat_latents_var": s["max_rhat_selected_var"], "min_ess_bulk_latents": s["min_ess_bulk_selected"],
        "min_ess_bulk_latents_var": s["min_ess_bulk_selected_var"], "min_ess_tail_latents": s["min_ess_tail_selected"],
        "min_ess_bulk_per_s": s["min_ess_bulk_selected"] / fit.sample_s, "min_ebfmi": s["min_ebfmi"],
        "max_rhat_positions": positions["rhat"], "min_ess_bulk_positions": positions["ess_bulk"],
        "mean_grad_evals_per_draw": s["mean_grad_evals_per_draw"], "multimodality": mm["verdict"],
        "posterior_median_error": err.get("posterior_mean", {}).get("median"),
        "triangulation_median_error": err.get("triangulation", {}).get("median"),
        "error_ratio": err.get("ratio_median_posterior_to_triangulation"), "units": err.get("units"),
    }


def _run_isolated(dataset, quick, T, chains, tune, draws, label, timeout_s) -> dict | None:
    """One variant in a child process, killed after ``timeout_s``.

    Returns None when the child wrote its own row, else an error row: a time-out, or a child that exited with an
    error (its last lines of output name why), so a crashed variant is never silently missing from the table.
    """
    cmd = [sys.executable, "-m", "benchmarks", "ablation", "--dataset", dataset, "--T", str(T), "--chains", str(chains),
           "--tune", str(tune), "--draws", str(draws), "--variants", label] + (["--quick"] if quick else [])
    try:
        done = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, timeout=timeout_s, check=False,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"variant": label, "error": f"did not finish within {timeout_s:.0f} s (killed)"}
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return {"variant": label, "error": f"child process exited with status {done.returncode}: {tail}"}
    return None


def run(dataset: str = "rodent18_multistate", quick: bool = False, T: int | None = None, chains=None, tune=None,
        draws=None, variants=None, timeout_s: float | None = None) -> dict:
    T = T or (30 if quick else 100)
    chains = chains or (2 if quick else 4)
    tune = tune if tune is not None else (150 if quick else 500)
    draws = draws or (100 if quick else 500)
    chosen = [v for v in VARIANTS if variants is None or v[0] in variants]
    ds = None if timeout_s else dataset_of_length(dataset, T)
    rows = []
    for label, build_opts, sampler_opts, failure in chosen:
        if timeout_s:  # the child writes its own row; only a time-out is recorded here
            row = _run_isolated(dataset, quick, T, chains, tune, draws, label, timeout_s)
            if row is None:
                continue
        else:
            try:
                row = run_variant(ds, label, build_opts, sampler_opts, chains, tune, draws)
            except Exception as err:  # one broken variant must not lose the others' numbers
                row = {"variant": label, "error": f"{type(err).__name__}: {err}"}
        row["failure_removed_by_default"] = failure
        rows.append(row)
        if "error" in row:
            print(f"  {label:22s} failed: {row['error']}", flush=True)
        else:
            print(f"  {label:22s} {row['divergences']} div, R-hat {row['max_rhat_latents']:.3f} [{row['max_rhat_latents_var']}], "
                  f"ESS {row['min_ess_bulk_latents']:.0f}, E-BFMI {row['min_ebfmi']:.2f}, {row['mean_grad_evals_per_draw']:.0f} grad/draw, "
                  f"{row['gradient_ms']:.2f} ms/grad, {row['sample_s']:.0f} s, {row['multimodality']}", flush=True)
    name = f"ablation_{dataset}{'_quick' if quick else ''}"
    earlier = earlier_rows(name, {"T": T, "chains": chains, "tune": tune, "draws": draws})
    if earlier is not None:  # variants measured in an earlier call with the same settings are kept
        labels = {r["variant"] for r in rows}
        rows = [r for r in earlier if r["variant"] not in labels] + rows
        rows.sort(key=lambda r: [v[0] for v in VARIANTS].index(r["variant"]))
    payload = {"benchmark": "ablation", "dataset": dataset, "quick": quick, "T": T, "chains": chains, "tune": tune,
               "draws": draws, "machine": machine(), "rows": rows}
    write_result(name, payload)
    return payload
