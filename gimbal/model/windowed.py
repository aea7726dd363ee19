"""Windowed inference for long recordings: overlapping windows sampled independently, then stitched.

Full-sequence NUTS on ``T`` frames has ``T x K x 3`` position parameters; its step
size shrinks roughly like ``d^(-1/4)``, so trajectories get longer as ``T`` grows.
Windows of a few hundred frames keep every run small. Each window is extended by
``overlap`` frames on both sides so that its kept core frames see the temporal
prior from both directions; the margins are sampled and discarded.

With ``sampler="pymc"`` and ``moves=True`` each window runs PyMC's NUTS with the Metropolis moves between
explanations (:mod:`gimbal.model.moves`), their candidates found in the window's own detections.

The approximation: global parameters (bone lengths, noise, outlier odds, HMM
transitions) are estimated per window instead of jointly; with a few hundred
frames per window each of them is already tightly identified. Windows are
independent, so they can run on several machines through Dask distributed
(pass a ``distributed.Client``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..diagnostics.report import fmt

__all__ = ["window_bounds", "WindowedResult", "sample_windowed"]


def window_bounds(n_frames: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split ``n_frames`` into windows.

    Returns
    -------
    list of (start, stop, keep_start, keep_stop)
        Frames ``[start, stop)`` are sampled; frames ``[keep_start, keep_stop)``
        (the window's core, of length ``window`` except possibly the last) are kept.
        The cores tile ``[0, n_frames)`` exactly once.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 frames, got {window}.")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}.")
    if n_frames < 1:
        raise ValueError("the dataset has no frames.")
    out = []
    for keep_start in range(0, n_frames, window):
        keep_stop = min(keep_start + window, n_frames)
        out.append((max(0, keep_start - overlap), min(n_frames, keep_stop + overlap), keep_start, keep_stop))
    # a short last core is merged into the previous window rather than sampled alone
    if len(out) > 1 and out[-1][3] - out[-1][2] < window // 2:
        last = out.pop()
        s, _, ks, _ = out.pop()
        out.append((s, min(n_frames, last[3] + overlap), ks, last[3]))
    return out


@dataclass
class WindowedResult:
    """Stitched posterior of the kept frames and one summary per window."""

    posterior: xr.Dataset  # per-frame variables over all frames; globals with a "window" dimension
    windows: list[dict]
    wall_s: float


def _fit_window(dataset: xr.Dataset, bounds, model_options: dict, sampler_options: dict, seed: int) -> dict:
    from ..diagnostics.sampling import sampling_summary
    from .initialization import check_initial_point
    from .fitting import latent_names, sample_model
    from .build import build_model
    from .moves import explanation_blocks, move_counts
    from .regions import chain_findings

    start, stop, keep_start, keep_stop = bounds
    part = dataset.isel(frame=slice(start, stop))
    t0 = time.perf_counter()
    # the up-front validation compiles three extra functions per window; run it only to explain a failed start
    model = build_model(part, seed=seed, validate=False, **model_options)
    sampler_options = dict(sampler_options)
    blocks = None
    if sampler_options.pop("moves", False):  # candidates from this window's own detections
        blocks = explanation_blocks(part, pixel_noise=float(model.gimbal_init.values["obs_sigma"]))
    try:
        fit = sample_model(model, seed=seed, progress=False, save_warmup=False, moves=blocks, **sampler_options)
    except (ValueError, ImportError):  # bad options: their message already names the fix
        raise
    except Exception as err:
        check_initial_point(model)  # raises InitializationError naming the non-finite terms, if that is the cause
        raise RuntimeError(f"window frames {start}-{stop - 1} failed to sample: {err}") from err
    post = fit.trace["posterior"].to_dataset()
    latent = latent_names(model)
    summary = sampling_summary(fit.trace, selected_vars=latent, max_treedepth=sampler_options["maxdepth"],
                               wall_time_s=fit.sample_s)
    chains = chain_findings(fit.trace, part)  # a split is the window's own: its globals are its own
    core = slice(keep_start - start, keep_stop - start)
    kept = post.isel(frame=core) if "frame" in post.dims else post
    # positions in float32: enough for a posterior of millimetre-scale coordinates, half the memory
    kept = kept.assign({v: kept[v].astype(np.float32) for v in kept.data_vars if "frame" in kept[v].dims})
    info = {
        "start": start, "stop": stop, "keep_start": keep_start, "keep_stop": keep_stop,
        "compile_s": fit.compile_s, "sample_s": fit.sample_s, "total_s": time.perf_counter() - t0,
        "divergences": summary["divergences"], "max_rhat": summary["max_rhat_selected"],
        "max_rhat_var": summary["max_rhat_selected_var"], "min_ess_bulk": summary["min_ess_bulk_selected"],
        "min_ess_tail": summary["min_ess_tail_selected"], "mean_grad_evals_per_draw": summary["mean_grad_evals_per_draw"],
        "max_treedepth_fraction": summary["max_treedepth_fraction"],
        "min_ebfmi": summary["min_ebfmi"],
        "pixel_noise": float(model.gimbal_init.values["obs_sigma"]),  # the start's estimate of the detections' noise
        "moves": None if blocks is None else move_counts(fit.trace, len(blocks)),
        "chain_regions": chains.regions,
        "stranded_chains": chains.stranded,
    }
    return {"info": info, "posterior": kept.drop_vars("frame", errors="ignore")}


def sample_windowed(
    dataset: xr.Dataset,
    *,
    window: int = 200,
    overlap: int = 10,
    model_options: dict | None = None,
    chains: int = 4,
    tune: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    target_accept: float = 0.8,
    adaptation: str = "diag",
    maxdepth: int = 10,
    sampler: str = "nutpie",
    moves: bool = False,
    client=None,
    progress: bool = True,
    pooled_warmup: bool = True,
) -> WindowedResult:
    """Sample overlapping windows of a long recording and stitch the kept frames.

    Parameters
    ----------
    dataset : xarray.Dataset
        A gimbal dataset (:func:`gimbal.datasets.load_dataset`).
    window, overlap : int
        Kept frames per window, and extra frames sampled on each side of it.
    model_options : dict, optional
        Passed to :func:`gimbal.model.build.build_model` (e.g. ``{"use_mixture": False}``).
    chains, tune, draws, seed, target_accept, adaptation, maxdepth, sampler, pooled_warmup :
        Passed to :func:`gimbal.model.fitting.sample_model` (window ``i`` uses ``seed + i``).
    moves : bool
        With ``sampler="pymc"``: Metropolis moves between each keypoint's explanations next to NUTS
        (:mod:`gimbal.model.moves`), their candidates found in each window's own detections.
    client : distributed.Client, optional
        Run the windows as Dask tasks (on a cluster: one window per worker).
        Without it the windows run one after another in this process.
    progress : bool
        Print one line per finished window.

    Returns
    -------
    WindowedResult
        ``posterior`` holds every per-frame variable over all ``T`` frames
        (float32) and every global variable with a leading ``window`` dimension.
    """
    if moves and sampler != "pymc":
        raise ValueError("moves run inside PyMC's compound sampler: use them with sampler='pymc' (nutpie runs NUTS "
                         "alone).")
    bounds = window_bounds(dataset.sizes["frame"], window, overlap)
    model_options = dict(model_options or {})
    sampler_options = {"chains": chains, "tune": tune, "draws": draws, "target_accept": target_accept,
                       "adaptation": adaptation, "maxdepth": maxdepth, "sampler": sampler, "moves": bool(moves),
                       "pooled_warmup": bool(pooled_warmup)}
    t0 = time.perf_counter()
    if client is not None:
        futures = [client.submit(_fit_window, dataset, b, model_options, sampler_options, seed + i, pure=False)
                   for i, b in enumerate(bounds)]
        results = client.gather(futures)
    else:
        results = []
        for i, b in enumerate(bounds):
            results.append(_fit_window(dataset, b, model_options, sampler_options, seed + i))
            if progress:
                w = results[-1]["info"]
                split = "" if not w["chain_regions"] else f", chains in {len(w['chain_regions']['regions'])} regions"
                print(f"window {i + 1}/{len(bounds)} frames {w['keep_start']}-{w['keep_stop'] - 1}: {w['divergences']} div, "
                      f"max R-hat {fmt(w['max_rhat'], 4)}, min ESS {fmt(w['min_ess_bulk'], 3)}{split}, "
                      f"{w['total_s']:.0f} s", flush=True)  # R-hat and ESS are None with one chain or too few draws
    posterior = _stitch([r["posterior"] for r in results], dataset["frame"].values)
    return WindowedResult(posterior=posterior, windows=[r["info"] for r in results], wall_s=time.perf_counter() - t0)


# free variables that re-express per-frame positions in a window's own coordinates (root_dynamics="noncentered"):
# the stitched deterministic ``x`` holds what they encode, and their lengths differ between windows
WINDOW_LOCAL = ("root_steps", "root_start", "x_nonroot")


def _stitch(parts: list[xr.Dataset], frames: np.ndarray) -> xr.Dataset:
    """Per-frame variables joined along ``frame``; global ones stacked along a new ``window`` dimension."""
    per_frame = [v for v in parts[0].data_vars if "frame" in parts[0][v].dims]
    stitched = {v: xr.concat([p[v] for p in parts], dim="frame") for v in per_frame}
    globals_ = {v: xr.concat([p[v] for p in parts], dim="window") for v in parts[0].data_vars
                if v not in per_frame and v not in WINDOW_LOCAL}
    out = xr.Dataset({**stitched, **globals_})
    return out.assign_coords(frame=frames, window=np.arange(len(parts)))
