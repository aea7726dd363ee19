"""Observation-model choices on a recording with a real detector's failure modes.

``rodent18_realistic`` (:mod:`gimbal.datasets.detector_errors`): an 18-keypoint rodent turning about the vertical,
6 cameras, outlier rates per (camera, keypoint) from 5% to 95% in runs of frames, confident left/right swaps,
systematic offsets, detector scores. Ground truth is known. Each row reconstructs the same frames:

* robust triangulation, and the skeleton-consistent reconstruction the chains start from;
* least squares on the true inliers (:func:`oracle_triangulation`): a reference that knows every outlier;
* the default with the trained prior on the true inliers alone, and on them without the detector's systematic offsets
  (:func:`benchmarks.common.oracle_detections`): references for what the model reaches when it knows every outlier
  (and offset);
* the seed's observation model (one noise, per-keypoint outlier rates, uniform outliers);
* per-(camera, keypoint) noise and outlier rates (pooled); then with the wide-Gaussian outlier class; then with the
  detector's scores as a covariate (the default where a dataset has scores); the same with the sampler moving every
  track in whitened coordinates (:mod:`gimbal.model.whitening`), with Gaussian and with the default's Student-t steps;
* the seed's and the default with a pose prior trained on another recording (``rodent18_realistic_train``'s ground truth, heading
  SpineM -> SpineF, ``n_states`` states).

Convergence is measured on every latent (all positions and every global): divergences, the largest R-hat and the
smallest bulk ESS over all of them, and the share of position coordinates with R-hat > 1.01. Results go to
``benchmarks/results/observation_models.json`` (``observation_models_T{T}.json`` for another ``T``; the book's
Ablation page shows every one).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import (SEED_MODEL, INIT_ROW, REFERENCE_ROWS, earlier_rows, machine, position_errors_3d as _errors,
                     row_data, write_result, wrong_in_cameras)

DATASET, TRAIN = "rodent18_realistic", "rodent18_realistic_train"
HEADING = ("SpineM", "SpineF")

DEFAULT_VARIANT = ("per (camera, keypoint), Gaussian outliers, scores, Student-t steps, relative to the parent where "
                   "smaller, detector offsets estimated, camera noise floored (default)")
OFFSETS_VARIANT = ("per (camera, keypoint), Gaussian outliers, scores, Student-t steps, relative to the parent where "
                   "smaller, detector offsets estimated")
RELATIVE_STEPS_VARIANT = ("per (camera, keypoint), Gaussian outliers, scores, Student-t steps, relative to the parent "
                          "where smaller")
WORLD_STEPS_VARIANT = ("per (camera, keypoint), Gaussian outliers, scores, Student-t steps (the default until "
                       "2026-12-06)")
GAUSSIAN_STEPS_VARIANT = "per (camera, keypoint), Gaussian outliers, scores, Gaussian steps"
WHITENED_VARIANT = "per (camera, keypoint), Gaussian outliers, scores, every track whitened"
WHITENED_T_VARIANT = "per (camera, keypoint), Gaussian outliers, scores, Student-t steps, every track whitened"
STUDENT_T3_VARIANT = "per (camera, keypoint), Gaussian outliers, scores, Student-t steps with 3 degrees of freedom"
# the observation models are compared with the random walk's Gaussian steps (as they were first measured); the
# default's Student-t steps are a row of their own. Every row but the default's steps in the world, as they were
# measured, every row but the last two without the detector offsets' estimate, and every row but the default's with
# the cameras' noise factors sampled freely (the floor under them came last)
_PAIRS = dict(observation="camera_keypoint", outlier_model="gaussian", confidence=True, step_frame="world",
              offsets="none", camera_noise="sampled")
VARIANTS = {
    "shared noise, uniform outliers (seed)": dict(SEED_MODEL),
    "per (camera, keypoint), uniform outliers": dict(observation="camera_keypoint", outlier_model="uniform",
                                                     confidence=False, steps="gaussian", step_frame="world",
                                                     offsets="none", camera_noise="sampled"),
    "per (camera, keypoint), Gaussian outliers": dict(observation="camera_keypoint", outlier_model="gaussian",
                                                      confidence=False, steps="gaussian", step_frame="world",
                                                      offsets="none", camera_noise="sampled"),
    GAUSSIAN_STEPS_VARIANT: dict(_PAIRS, steps="gaussian"),
    DEFAULT_VARIANT: dict(_PAIRS, steps="student_t", step_frame="auto", offsets="estimated", camera_noise="floored"),
    OFFSETS_VARIANT: dict(_PAIRS, steps="student_t", step_frame="auto", offsets="estimated"),
    RELATIVE_STEPS_VARIANT: dict(_PAIRS, steps="student_t", step_frame="auto"),
    WORLD_STEPS_VARIANT: dict(_PAIRS, steps="student_t"),
    STUDENT_T3_VARIANT: dict(_PAIRS, steps="student_t", steps_dof=3.0),  # the default until 2026-12-06
    WHITENED_VARIANT: dict(_PAIRS, steps="gaussian", whitened_tracks="all"),
    WHITENED_T_VARIANT: dict(_PAIRS, steps="student_t", whitened_tracks="all"),
    "per (camera, keypoint), uniform outliers, scores": dict(observation="camera_keypoint", outlier_model="uniform",
                                                             confidence=True, steps="gaussian", step_frame="world",
                                                             offsets="none", camera_noise="sampled"),
}
# a reference, not a method: least squares on the detections the simulated detector did not corrupt (it knows every
# outlier, swap and missing detection; the systematic offsets stay in)
ORACLE_ROW = "least-squares triangulation on the true inliers (knows every outlier: a reference, not a method)"
PRIOR_ROW = "+ trained prior"
MOVES_ROW = " + moves (PyMC NUTS)"
PYMC_ROW = " (PyMC NUTS)"
WINDOW_ROW = ", windows of {} frames"
ONE_STAGE_ROW = ", one-stage warm-up"  # --no-pooled-warmup (gimbal.model.pooling)


def _rate_recovery(post, ds) -> float | None:
    """Correlation (logit scale) of the posterior-mean outlier rate per (camera, keypoint) with the simulated one."""
    if "logodds_inlier_ck" not in post:
        return None
    logodds = post["logodds_inlier_ck"]  # windowed: averaged over the windows too
    est = 1.0 / (1.0 + np.exp(logodds.mean([d for d in logodds.dims if d in ("chain", "draw", "window")]).values))
    true = ds["outlier_rate_true"].values
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    return float(np.corrcoef(logit(est).ravel(), logit(true).ravel())[0, 1])


def _unconverged(post, rhat_x: np.ndarray, ds, wrong: np.ndarray, triangulated: np.ndarray,
                 start: np.ndarray | None = None) -> dict:
    """Where the positions with R-hat above 1.01 sit: keypoints, frame runs, how far apart the chains' means are,
    each pair's pattern (:func:`gimbal.diagnostics.convergence.classify_element` on its least converged coordinate:
    slow mixing, separate modes, switching chains), how many of those pairs have detections wrong in >= 3 cameras,
    and the 3D error there; the (at most 10) least converged pairs by name (``worst_pairs``); and for the (at most 10)
    worst pairs whose chains sit apart rather than mix slowly (``split_sites``), each chain's distance from the truth
    and from ``start`` (the chains' starting positions ``(T, K, 3)``, where given) and the start's own error."""
    from gimbal.diagnostics.convergence import classify_element

    bad = rhat_x.max(axis=-1) > 1.01  # (T, K)
    if not bad.any():
        return {"pairs": 0}
    names = [str(k) for k in ds["keypoint"].values]
    frames = np.flatnonzero(bad.any(axis=1))
    runs = np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1)
    draws = post["x"].values[:, :, bad].astype(np.float64)  # (chain, draw, pairs, 3)
    chain_means, chain_sds = draws.mean(axis=1), draws.std(axis=1)  # (chain, pairs, 3)
    spread = np.linalg.norm(chain_means[:, None] - chain_means[None], axis=-1).max(axis=(0, 1))
    worst = rhat_x[bad].argmax(axis=-1)  # each pair's least converged coordinate, classified as the engine does
    patterns = [classify_element(chain_means[:, i, a], chain_sds[:, i, a]) for i, a in enumerate(worst)]
    truth = ds["positions_true"].values[bad]
    mean = chain_means.mean(axis=0)  # the posterior mean (every chain has the same number of draws)
    # the pairs whose chains sit in different places (not merely slow), worst first: where each chain's mean and the
    # chains' start lie, from the truth and from each other (a chain that never left a wrong start shows as one
    # chain near the start and far from the truth)
    pair_rhat = rhat_x[bad].max(axis=-1)
    split = [i for i in np.argsort(-pair_rhat) if patterns[i] != "slow_mixing"][:10]
    frame, keypoint = np.nonzero(bad)
    begun = None if start is None else start[bad]
    sites = [{"frame": int(frame[i]), "keypoint": names[keypoint[i]], "pattern": patterns[i],
              "rhat": float(pair_rhat[i]),
              "chain_errors_mm": np.linalg.norm(chain_means[:, i] - truth[i], axis=-1).round(2).tolist(),
              **({} if begun is None else {
                  "start_error_mm": round(float(np.linalg.norm(begun[i] - truth[i])), 2),
                  "chain_to_start_mm": np.linalg.norm(chain_means[:, i] - begun[i], axis=-1).round(2).tolist()})}
             for i in split]
    return {
        "pairs": int(bad.sum()),
        "keypoints": {names[k]: int(n) for k, n in enumerate(bad.sum(axis=0)) if n},
        "frame_runs": [[int(r[0]), int(r[-1])] for r in runs],
        # the (at most 10) least converged pairs by name: the counts above do not say which keypoint is at which frame
        "worst_pairs": [{"frame": int(frame[i]), "keypoint": names[keypoint[i]], "rhat": float(pair_rhat[i]),
                         "pattern": patterns[i]} for i in np.argsort(-pair_rhat)[:10]],
        "chain_mean_spread_mm": {"median": float(np.median(spread)), "max": float(spread.max())},
        "patterns": {p: patterns.count(p) for p in sorted(set(patterns))},
        "fraction_wrong_in_3_cameras": float(wrong[bad].mean()),
        "error_mean_mm": float(np.linalg.norm(mean - truth, axis=-1).mean()),
        "triangulation_error_mean_mm": float(np.linalg.norm(triangulated[bad] - truth, axis=-1).mean()),
        "split_sites": sites,
    }


def _sample(ds, options: dict, *, window, overlap, chains, tune, draws, seed, maxdepth, target_accept, trace_on_disk,
            moves, sampler, pooled_warmup: bool = True) -> dict:
    """One variant's draws: the whole sequence, or windows of ``window`` frames; the trace, the sampling summary (every
    latent), the moves' counts, the sampling time and the detections' noise the start estimated."""
    import tempfile

    import xarray as xr

    from gimbal.diagnostics.sampling import convergence_table, sampling_summary
    from gimbal.model.build import build_model
    from gimbal.model.fitting import sample_model
    from gimbal.model.moves import explanation_blocks, move_counts, sum_counts
    from gimbal.model.windowed import sample_windowed

    if window:
        res = sample_windowed(ds, window=window, overlap=overlap, model_options=options, chains=chains, tune=tune,
                              draws=draws, seed=seed, target_accept=target_accept, maxdepth=maxdepth, sampler=sampler,
                              moves=moves, progress=True, pooled_warmup=pooled_warmup)
        w = res.windows
        counts = [m["moves"] for m in w] if moves else None
        worst = max(w, key=lambda m: m["max_rhat"] or 0)  # max_rhat is None with one chain
        summary = {"divergences": sum(m["divergences"] for m in w),
                   "max_rhat_all": worst["max_rhat"], "max_rhat_all_var": worst["max_rhat_var"],
                   "min_ess_bulk_all": min((m["min_ess_bulk"] for m in w if m["min_ess_bulk"] is not None), default=None),
                   "min_ess_bulk_all_var": None}
        return {"trace": xr.DataTree.from_dict({"posterior": res.posterior}), "summary": summary,
                "moves": None if counts is None else sum_counts(counts),
                "sample_s": sum(m["sample_s"] for m in w), "pixel_noise": float(np.median([m["pixel_noise"] for m in w])),
                "windows": w}
    model = build_model(ds, seed=seed, **options)
    blocks = explanation_blocks(ds, pixel_noise=float(model.gimbal_init.values["obs_sigma"])) if moves else None
    with tempfile.TemporaryDirectory(prefix="gimbal-obs-") as tmp:
        fit = sample_model(model, chains=chains, tune=tune, draws=draws, seed=seed, progress=False,
                           maxdepth=maxdepth, target_accept=target_accept, save_warmup=False,
                           trace_dir=Path(tmp) / "trace.zarr" if trace_on_disk and sampler == "nutpie" else None,
                           float32_vars=("x",),  # read back into memory before the store is removed
                           sampler=sampler, moves=blocks, pooled_warmup=pooled_warmup)
    table = convergence_table(fit.trace, keep=["x"])  # every latent once, each coordinate's R-hat and ESS kept
    return {"trace": fit.trace, "summary": sampling_summary(fit.trace, ["x"], table=table),
            "pooled_warmup": None if fit.pooled is None else fit.pooled.as_dict(),
            "rhat_x": table["rhat_x"].values if chains > 1 else None, "ess_bulk_x": table["ess_bulk_x"].values,
            "moves": None if blocks is None else move_counts(fit.trace, len(blocks)), "sample_s": fit.sample_s,
            "pixel_noise": float(model.gimbal_init.values["obs_sigma"]), "start": model.gimbal_init.positions}


def train_prior(n_states: int, seed: int = 0):
    """A pose prior fitted on the training recording's ground truth (another seed of the generator)."""
    from gimbal.datasets import load_dataset
    from gimbal.model.prior import fit_prior

    train = load_dataset(TRAIN)
    names = [str(k) for k in train["keypoint"].values]
    return fit_prior(train["positions_true"].values, train["parents"].values, [names.index(h) for h in HEADING],
                     n_states=n_states, keypoint_names=names, consecutive=True, seed=seed,
                     source=f"{TRAIN} ground truth")


def oracle_triangulation(ds) -> np.ndarray:
    """``(T, K, 3)``: each point at the minimum of the reprojection error of its true inlier detections (those the
    simulated detector neither corrupted nor dropped), found by Gauss-Newton from the truth; NaN where fewer than two.

    What frame-by-frame triangulation reaches when it knows which detections are wrong: the yardstick for how much of
    a model's gain over robust triangulation is rejecting outliers and how much is the pose prior and the walk.
    """
    from gimbal.model.cameras import refine_triangulation

    obs = np.moveaxis(ds["observations"].values, 1, 2)  # (T, K, C, 2)
    used = np.isfinite(obs).all(-1) & ~np.moveaxis(ds["is_outlier"].values, 1, 2)
    x = refine_triangulation(ds["positions_true"].values, obs, ds["camera_matrix"].values, used, iterations=10)
    x[used.sum(-1) < 2] = np.nan
    return x


def variant_options(n_states: int = 4, variants: list[str] | None = None) -> dict[str, dict]:
    """Each row's label and its model options: :data:`VARIANTS`, some of them with a prior trained with ``n_states``
    states, and the reference rows; only ``variants`` where given (an unknown label is a ValueError naming the
    labels there are)."""
    chosen = dict(VARIANTS)
    for base in (list(VARIANTS)[0], DEFAULT_VARIANT, OFFSETS_VARIANT, RELATIVE_STEPS_VARIANT, WORLD_STEPS_VARIANT,
                 STUDENT_T3_VARIANT, GAUSSIAN_STEPS_VARIANT, WHITENED_VARIANT, WHITENED_T_VARIANT):
        chosen[f"{base} {PRIOR_ROW} ({n_states} states)"] = dict(VARIANTS[base], prior="trained")
    # the default model with the trained prior on the detections the simulated detector left intact, and on those
    # without its systematic offsets: what is left when the observation model's job (finding the outliers) is done
    for detections, text in REFERENCE_ROWS.items():
        chosen[f"{DEFAULT_VARIANT} {PRIOR_ROW} ({n_states} states), {text}"] = dict(
            VARIANTS[DEFAULT_VARIANT], prior="trained", detections=detections)
    if variants:
        unknown = sorted(set(variants) - set(chosen))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {list(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in variants}
    return chosen


def run(*, T: int = 100, n_states: int = 4, chains: int = 4, tune: int = 1000, draws: int = 1000, seed: int = 0,
        variants: list[str] | None = None, quick: bool = False, out: bool = True, maxdepth: int = 10,
        target_accept: float = 0.8, trace_on_disk: bool = False, moves: bool = False, sampler: str = "nutpie",
        window: int | None = None, overlap: int = 10, pooled_warmup: bool = True) -> dict:
    """Fit every variant on the first ``T`` frames; returns (and writes) the result.

    ``maxdepth``, ``target_accept`` and ``trace_on_disk`` are the sampler settings of the sampling benchmark (the
    T = 1800 rows there use maxdepth 5, target accept 0.7 and draws on disk on 2 CPUs). With ``moves`` each variant
    runs on PyMC's NUTS with the moves between explanations (:mod:`gimbal.model.moves`; draws in memory) and its row
    is labelled ``... + moves (PyMC NUTS)`` (steps in the world: the moves score the walk there); with
    ``sampler="pymc"`` alone, on PyMC's NUTS without them (``...
    (PyMC NUTS)``, the control). The rows merge with those of the same settings. With ``window`` the sequence is
    sampled in overlapping windows (:func:`gimbal.model.windowed.sample_windowed`, ``overlap`` frames either side;
    rows labelled ``..., windows of N frames``, written to ``..._window{N}.json``): every position's R-hat is that of
    its own window's chains, divergences are summed and the globals' R-hat and ESS are the windows' worst. With
    ``pooled_warmup=False`` every fit warms up in one stage (rows labelled ``..., one-stage warm-up``); otherwise each
    row records what the pooled warm-up took (:mod:`gimbal.model.pooling`; None where it does not run).
    """
    sampler = "pymc" if moves else sampler
    chosen = variant_options(n_states, variants)  # an unknown label fails here, before any work
    from gimbal.datasets import load_dataset
    from gimbal.model.initialization import triangulate_sequence
    from gimbal.diagnostics.chance import rhat_exceedances
    from gimbal.model.support import unconverged_support
    from arviz_stats import ess, rhat

    if quick:
        T, chains, tune, draws = 20, 2, 150, 100
    ds = load_dataset(DATASET, max_T=T)
    truth = ds["positions_true"].values
    wrong = wrong_in_cameras(ds)
    rows = {}
    # the baseline is plain robust triangulation (consensus, no refinement); the model starts from the initialization
    baseline = triangulate_sequence(ds, skeleton_consistent=False, refine=False, normalize=True)
    for label, tri in (("triangulation", baseline), (INIT_ROW, triangulate_sequence(ds)),
                       (ORACLE_ROW, oracle_triangulation(ds))):
        rows[label] = {"errors": _errors(tri, truth), "errors_wrong_in_3_cameras": _errors(tri[wrong], truth[wrong])}
    prior = train_prior(n_states, seed) if any(o.get("prior") for o in chosen.values()) else None
    for label, options in chosen.items():
        options = {**options, "prior": prior} if options.get("prior") else options
        data, model_options = row_data(ds, options)
        if moves:  # the moves score each position's random walk in the world (gimbal.model.moves)
            model_options = {**model_options, "step_frame": "world"}
        label = f"{label}{MOVES_ROW}" if moves else (f"{label}{PYMC_ROW}" if sampler == "pymc" else label)
        label = f"{label}{WINDOW_ROW.format(window)}" if window else label
        label = label if pooled_warmup else f"{label}{ONE_STAGE_ROW}"
        t0 = time.perf_counter()
        sampled = _sample(data, model_options, window=window, overlap=overlap, chains=chains, tune=tune, draws=draws,
                          seed=seed, maxdepth=maxdepth, target_accept=target_accept, trace_on_disk=trace_on_disk,
                          moves=moves, sampler=sampler, pooled_warmup=pooled_warmup)
        trace, summary = sampled["trace"], sampled["summary"]
        post = trace.posterior
        x = post["x"].mean(dim=("chain", "draw")).values
        r, ess_x = sampled.get("rhat_x"), sampled.get("ess_bulk_x")
        if r is None and window and chains > 1:  # the stitched windows: each position's R-hat is its window's chains'
            r, ess_x = rhat(post["x"]).values, ess(post["x"], method="bulk").values
        rows[label] = {
            "options": {k: (v if k != "prior" else (v.source if v is not None else None)) for k, v in options.items()},
            "errors": _errors(x, truth),
            "errors_wrong_in_3_cameras": _errors(x[wrong], truth[wrong]),
            "divergences": int(summary["divergences"]),
            "max_rhat_all": summary.get("max_rhat_all"),
            "max_rhat_variable": summary.get("max_rhat_all_var"),
            "min_ess_bulk_all": summary.get("min_ess_bulk_all"),
            "min_ess_bulk_variable": summary.get("min_ess_bulk_all_var"),
            "fraction_x_rhat_above_1.01": float(np.mean(r > 1.01)) if r is not None else None,
            "x_rhat_above_1.01": _unconverged(post, r, ds, wrong, baseline, sampled.get("start")) if r is not None else None,
            "unconverged_by_support": None if r is None else unconverged_support(
                trace, data, sampled["pixel_noise"], rhat_x=r).to_json(),
            # R-hat above 1.01 against what converged chains mixing as fast would show (stitched windows: each
            # position's chains are its own window's)
            "rhat_exceedances": None if r is None else rhat_exceedances(post["x"], r, ess_x).as_dict(),
            "outlier_rate_correlation": None if options.get("detections") else _rate_recovery(post, ds),
            "moves": sampled["moves"],
            "pooled_warmup": sampled.get("pooled_warmup"),
            "windows": sampled.get("windows"),
            "sample_s": round(sampled["sample_s"], 1),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        print(label, {k: v for k, v in rows[label].items() if k != "options"}, flush=True)
    settings = {"T": int(T), "chains": chains, "tune": tune, "draws": draws, "maxdepth": maxdepth,
                "target_accept": target_accept, "trace_on_disk": trace_on_disk, "n_states": n_states, "seed": seed}
    if window:
        settings.update(window=int(window), overlap=int(overlap))
    name = "observation_models" + ("_quick" if quick else ("" if T == 100 else f"_T{T}"))
    name += f"_window{window}" if window else ""
    earlier = earlier_rows(name, settings) if variants and out else None
    if earlier is not None:  # a run of some variants keeps the others' rows measured with the same settings
        rows = {**earlier, **rows}
    result = {"benchmark": "observation_models", "dataset": DATASET, "train": TRAIN, **settings,
              "heading": list(HEADING), "rows": rows, "machine": machine(), "quick": quick}
    if out:
        write_result(name, result)
    return result
