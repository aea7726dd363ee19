"""Windowed inference (``gimbal.model.windowed``) on a long recording, next to full-sequence NUTS."""

from __future__ import annotations

import xarray as xr

from gimbal.diagnostics.report import fmt

from .common import SEED_MODEL, dataset_of_length, machine, peak_rss_mib, read_results, write_result


def _extreme(pick, windows, key):
    """``max``/``min`` of a per-window number over the windows that have it (None where none does)."""
    values = [w[key] for w in windows if w.get(key) is not None]
    return pick(values) if values else None


def run(dataset: str = "rodent18_multistate", T: int = 1800, window: int = 200, overlap: int = 10, chains: int = 4,
        tune: int = 1000, draws: int = 1000, maxdepth: int = 10, target_accept: float = 0.8, quick: bool = False) -> dict:
    from gimbal.model.fitting import position_errors
    from gimbal.model.windowed import sample_windowed

    if quick:
        T, window, overlap, chains, tune, draws = 120, 40, 10, 2, 150, 100
    ds = dataset_of_length(dataset, T)
    res = sample_windowed(ds, window=window, overlap=overlap, chains=chains, tune=tune, draws=draws, seed=1,
                          maxdepth=maxdepth, target_accept=target_accept, model_options=dict(SEED_MODEL))
    err = position_errors(xr.DataTree.from_dict({"posterior": res.posterior}), ds) or {}
    w = res.windows
    row = {
        "dataset": dataset, "T": T, "window": window, "overlap": overlap, "n_windows": len(w), "chains": chains,
        "tune": tune, "draws": draws, "maxdepth": maxdepth, "target_accept": target_accept, "wall_s": res.wall_s, "sample_s": sum(x["sample_s"] for x in w),
        "compile_s": sum(x["compile_s"] for x in w), "divergences": sum(x["divergences"] for x in w),
        "max_rhat_latents": _extreme(max, w, "max_rhat"), "min_ess_bulk_latents": _extreme(min, w, "min_ess_bulk"),
        "min_ess_tail_latents": _extreme(min, w, "min_ess_tail"),
        "mean_grad_evals_per_draw": sum(x["mean_grad_evals_per_draw"] for x in w) / len(w),
        "min_ebfmi": _extreme(min, w, "min_ebfmi"),
        "posterior_median_error": err.get("posterior_mean", {}).get("median"),
        "triangulation_median_error": err.get("triangulation", {}).get("median"),
        "error_ratio": err.get("ratio_median_posterior_to_triangulation"), "units": err.get("units"),
        "peak_rss_mib": peak_rss_mib(), "windows": w,
        "stored": "kept frames of every window, positions in float32",
    }
    print(f"  windowed {dataset} T={T} ({len(w)} windows of {window}+2x{overlap}): {row['divergences']} div, "
          f"max R-hat {fmt(row['max_rhat_latents'], 4)}, min ESS {fmt(row['min_ess_bulk_latents'], 3)}, "
          f"{row['wall_s']:.0f} s wall, error {fmt(row['posterior_median_error'], 3)} vs "
          f"{fmt(row['triangulation_median_error'], 3)}", flush=True)
    name = f"windowed_{dataset}{'_quick' if quick else ''}"
    earlier = [r for r in read_results().get(name, {}).get("rows", [])
               if (r["T"], r["window"], r.get("maxdepth", 10), r.get("target_accept", 0.8)) != (T, window, maxdepth, target_accept)]
    payload = {"benchmark": "windowed", "dataset": dataset, "quick": quick, "machine": machine(),
               "rows": sorted(earlier + [row], key=lambda r: (r["T"], r["window"], r.get("maxdepth", 10)))}
    write_result(name, payload)
    return payload
