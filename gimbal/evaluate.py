"""Validation without ground truth: leave one camera out.

For each camera ``c``: the model is fitted to the other cameras' detections only;
the posterior mean is projected into ``c`` (raw pixels, its lens distortion
included when the dataset has it) and compared with ``c``'s confident detections.
Robust triangulation from the same remaining cameras is scored the same way, on the same detections, so
each row says whether the model places keypoints better than triangulation where
it could not see them. Held-out detections of keypoints that fewer than two remaining cameras see have no
triangulation: the posterior's errors there (the prior and one ray place them) are reported on their own
(``posterior_only``), never mixed into the paired comparison. Bone-length stability (the coefficient of variation of
each bone's length over frames; a rigid skeleton has 0) is reported for both.
Detections of the held-out camera are themselves noisy, so neither error reaches 0.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ._atomic import write_text_atomic
from .model.cameras import triangulate_least_squares, triangulate_robust
from .datasets import load_dataset, skeleton_of
from .settings import SamplerSettings

__all__ = ["CameraScore", "LocoReport", "leave_one_camera_out", "heldout_errors", "bone_length_cv", "ratio_interval",
           "DEFAULT_OUT"]

DEFAULT_OUT = Path("benchmarks") / "results"


@dataclass(frozen=True)
class ErrorStats:
    """Reprojection errors in pixels."""

    n: int
    mean: float | None
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, err: np.ndarray) -> "ErrorStats":
        err = err[np.isfinite(err)]
        if not err.size:
            return cls(0, None, None, None)
        return cls(int(err.size), float(err.mean()), float(np.median(err)), float(np.percentile(err, 90)))


@dataclass(frozen=True)
class CameraScore:
    """One held-out camera."""

    camera: str
    posterior: ErrorStats
    triangulation: ErrorStats
    bone_cv_posterior: float | None  # median over bones of sd/mean of the bone's length over frames
    bone_cv_triangulation: float | None
    divergences: int
    max_rhat: float | None
    min_ess_bulk: float | None
    fit_s: float
    triangulation_least_squares: ErrorStats | None = None  # the consensus refined to the reprojection minimum
    # the held-out detections that only the posterior places (fewer than two remaining cameras see the keypoint)
    posterior_only: ErrorStats | None = None
    # share of the paired detections that the posterior mean reprojects closer to than robust triangulation does: a
    # paired view next to the ratio of medians, which compares two pooled distributions
    posterior_closer: float | None = None
    # keypoints whose paired detections' median error is lower for the posterior, of those with paired detections:
    # the comparison per landmark, where the pooled median mixes keypoints of different difficulty
    keypoints_lower: int | None = None
    keypoints_compared: int | None = None
    # a 90% moving-block bootstrap interval over frames of the ratio of medians (:func:`ratio_interval`): how far the
    # ratio moves with the frames that happened to be recorded
    ratio_median_interval: tuple[float, float] | None = None
    # the ratio with each chain's own mean in place of the posterior mean, on the same detections: where chains sit
    # in different regions (R-hat well above 1), whether the comparison holds in each of them
    ratio_median_by_chain: list[float] | None = None

    @property
    def ratio_median(self) -> float | None:
        p, t = self.posterior.median, self.triangulation.median
        return p / t if p is not None and t else None


@dataclass
class LocoReport:
    """Leave-one-camera-out results for a dataset."""

    dataset: str
    T: int
    K: int
    cameras: list[CameraScore]
    settings: dict
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        rows = []
        for c in self.cameras:
            row = asdict(c)
            row["ratio_median_posterior_to_triangulation"] = c.ratio_median
            rows.append(row)
        return {"benchmark": "loco", "dataset": self.dataset, "T": self.T, "K": self.K, "settings": self.settings,
                "rows": rows, "notes": self.notes, "machine": _machine()}

    def text(self) -> str:
        left_out = self.settings.get("excluded_detections")
        lines = [f"leave-one-camera-out on {self.dataset} (T={self.T}, K={self.K}"
                 + (f"; left out, neither fitted nor scored: {left_out}" if left_out else "")
                 + "): held-out reprojection error, px",
                 f"  {'camera':>10s} {'n':>6s} {'posterior median':>17s} {'triang. median':>15s} {'ratio':>6s} "
                 f"{'90% interval':>12s} {'post. p90':>10s} {'tri. p90':>9s} {'bone CV post/tri':>17s} "
                 f"{'least-sq. tri. median/p90':>26s} "
                 f"{'posterior only: n, median':>26s} {'post. closer':>12s} {'kp lower':>9s}  ratio per chain"]
        for c in self.cameras:
            f = lambda v, s=".1f": "n/a" if v is None else format(v, s)  # noqa: E731
            ls, only = c.triangulation_least_squares, c.posterior_only
            closer = "n/a" if c.posterior_closer is None else f"{100 * c.posterior_closer:.0f}%"
            lower = "n/a" if not c.keypoints_compared else f"{c.keypoints_lower}/{c.keypoints_compared}"
            band = "n/a" if c.ratio_median_interval is None else "{:.2f}-{:.2f}".format(*c.ratio_median_interval)
            chains = "n/a" if not c.ratio_median_by_chain else " ".join(f"{r:.2f}" for r in c.ratio_median_by_chain)
            lines.append(f"  {c.camera:>10s} {c.posterior.n:6d} {f(c.posterior.median):>17s} {f(c.triangulation.median):>15s} "
                         f"{f(c.ratio_median, '.2f'):>6s} {band:>12s} {f(c.posterior.p90):>10s} "
                         f"{f(c.triangulation.p90):>9s} "
                         f"{f(c.bone_cv_posterior, '.3f') + ' / ' + f(c.bone_cv_triangulation, '.3f'):>17s} "
                         f"{(f(ls.median) + ' / ' + f(ls.p90)) if ls else 'n/a':>26s} "
                         f"{(str(only.n) + ', ' + f(only.median)) if only else 'n/a':>26s} "
                         f"{closer:>12s} {lower:>9s}  {chains}")
        lines.append("  (n: held-out detections every method places, scored for each; 90% interval: of the ratio, "
                     "resampling blocks of frames; posterior only: the ones of "
                     "keypoints fewer than two remaining cameras see, which no triangulation places; post. closer: "
                     "share of the n where the posterior reprojects closer than triangulation; kp lower: keypoints "
                     "whose median over those detections is lower for the posterior, of the keypoints scored; ratio "
                     "per chain: with each chain's own mean, which tells where chains disagree whether each region "
                     "leads)")
        return "\n".join(lines)


def _machine() -> dict:
    import os
    import platform

    return {"platform": platform.platform(), "cpu_count": os.cpu_count()}


def heldout_errors(points: np.ndarray, dataset: xr.Dataset, camera: str, min_confidence: float | None) -> np.ndarray:
    """Pixel distance between ``points`` (T, K, 3) projected into ``camera`` and its confident detections."""
    from .io.export import reproject_raw

    c = [str(n) for n in dataset["camera"].values].index(camera)
    raw_name = "observations_raw" if "observations_raw" in dataset else "observations"
    det = dataset[raw_name].values[:, c]  # (T, K, 2)
    if min_confidence is not None and "confidence" in dataset:
        det = np.where((dataset["confidence"].values[:, c] >= min_confidence)[..., None], det, np.nan)
    one = dataset.isel(camera=[c])
    proj = reproject_raw(points, one)[:, 0]
    return np.linalg.norm(proj - det, axis=-1)


def bone_length_cv(points: np.ndarray, dataset: xr.Dataset) -> float | None:
    """Median over bones of (sd / mean) of the bone's length over frames."""
    skel = skeleton_of(dataset)
    lengths = np.linalg.norm(skel.bone_vectors(points), axis=-1)  # (T, B)
    lengths = lengths[:, np.isfinite(lengths).sum(axis=0) >= 2]  # a bone no triangulation placed twice has no spread
    with np.errstate(all="ignore"):
        cv = np.nanstd(lengths, axis=0) / np.nanmean(lengths, axis=0)
    cv = cv[np.isfinite(cv)]
    return float(np.median(cv)) if cv.size else None


@dataclass(frozen=True)
class _HeldOutFit:
    """One fit without a camera: the remaining cameras' dataset, the posterior mean, its summary, time, model."""

    rest: xr.Dataset
    mean: np.ndarray  # (T, K, 3) posterior mean of the positions
    summary: dict
    fit_s: float
    model: dict  # the ModelConfig as built (choices left to the data resolved)
    chain_means: np.ndarray | None = None  # (chains, T, K, 3): each chain's own mean


def _fit_without(dataset: xr.Dataset, camera: str, *, sampler: SamplerSettings, progress, model_options) -> _HeldOutFit:
    from .diagnostics.sampling import sampling_summary
    from .model.fitting import backend_model_options, sample_model
    from .model.build import build_model

    keep = [str(n) for n in dataset["camera"].values if str(n) != camera]
    rest = dataset.sel(camera=keep)
    t0 = time.perf_counter()
    options = {**(model_options or {}), **backend_model_options(sampler.backend)}  # as `gimbal fit`: the backend's needs win
    model = build_model(rest, seed=sampler.seed, **options)
    fit = sample_model(model, chains=sampler.chains, tune=sampler.tune, draws=sampler.draws, seed=sampler.seed,
                       sampler=sampler.sampler, target_accept=sampler.target_accept, maxdepth=sampler.maxdepth,
                       adaptation=sampler.adaptation, backend=sampler.backend, progress=progress,
                       pooled_warmup=sampler.pooled_warmup)
    summary = sampling_summary(fit.trace, ["x"])
    chain_means = fit.trace["posterior"]["x"].mean("draw").values
    return _HeldOutFit(rest, chain_means.mean(axis=0), summary, time.perf_counter() - t0, model.gimbal_config.as_dict(),
                       chain_means)


def _keypoints_lower(post: np.ndarray, robust: np.ndarray, paired: np.ndarray) -> dict:
    """Per keypoint (the last axis of the ``(T, K)`` errors), whether the posterior's median over its ``paired``
    detections is lower than triangulation's: ``keypoints_lower`` of ``keypoints_compared``."""
    scored = [k for k in range(paired.shape[1]) if paired[:, k].any()]
    lower = sum(bool(np.median(post[paired[:, k], k]) < np.median(robust[paired[:, k], k])) for k in scored)
    return {"keypoints_lower": lower, "keypoints_compared": len(scored)}


def ratio_interval(post: np.ndarray, robust: np.ndarray, paired: np.ndarray, *, block: int = 1, level: float = 0.9,
                   n_resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the ratio of median errors, resampling frames in blocks.

    The frames of one recording are a sample: another stretch of the same session would give another ratio. Each
    resample draws ``ceil(T / block)`` runs of ``block`` consecutive frames (a moving-block bootstrap, since the
    errors of neighbouring frames are alike; ``block=1`` draws single frames) and takes the ratio of the posterior's
    median to triangulation's over the paired detections of those frames. Only the frames vary: the cameras, the
    keypoints and their calibration errors are those of the recording, so an interval that excludes 1 says the
    comparison would hold on more frames like these, not on another rig.

    Parameters
    ----------
    post, robust : (T, K) ndarray
        Held-out reprojection errors of the posterior mean and of triangulation.
    paired : (T, K) bool ndarray
        The detections both are scored on.
    block : int
        Frames per block (at most T).
    level : float
        Coverage of the interval.
    n_resamples : int
    seed : int

    Returns
    -------
    (low, high), or None without paired detections.
    """
    T = paired.shape[0]
    if not paired.any():
        return None
    block = int(min(max(block, 1), T))
    starts = np.random.default_rng(seed).integers(0, T - block + 1, size=(n_resamples, -(-T // block)))
    frames = (starts[..., None] + np.arange(block)).reshape(n_resamples, -1)[:, :T]
    ratios = np.array([_median_ratio(post[f], robust[f], paired[f]) if paired[f].any() else np.nan for f in frames])
    ratios = ratios[np.isfinite(ratios)]
    if not ratios.size:
        return None
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _ratio_by_chain(chain_means: np.ndarray | None, dataset: xr.Dataset, camera: str, min_confidence: float | None,
                    robust: np.ndarray, paired: np.ndarray) -> list[float] | None:
    """The ratio of medians with each chain's mean ``(chains, T, K, 3)`` in place of the posterior mean, on the
    ``paired`` detections; None without chain means or paired detections."""
    if chain_means is None or not paired.any():
        return None
    return [_median_ratio(heldout_errors(m, dataset, camera, min_confidence), robust, paired) for m in chain_means]


def _median_ratio(post: np.ndarray, robust: np.ndarray, where: np.ndarray) -> float:
    """The posterior's median error over the detections ``where`` divided by triangulation's."""
    return float(np.median(post[where]) / np.median(robust[where]))


def _frame_block(dataset: xr.Dataset) -> int:
    """Frames per bootstrap block: ``T^(1/3)`` rounded for consecutive frames (the usual rate for a moving-block
    bootstrap), 1 for sparse labelled frames."""
    T = int(dataset.sizes["frame"])
    return max(1, round(T ** (1 / 3))) if bool(dataset.attrs.get("frames_consecutive", 1)) else 1


def _describe_options(options: dict) -> dict:
    """Model options as JSON values: a prior object is named by where it came from."""
    prior = options.get("prior")
    if prior is not None and not isinstance(prior, (str, Path)):
        options = {**options, "prior": getattr(prior, "source", None) or "given"}
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def leave_one_camera_out(dataset, *, out=None, max_T: int | None = None, cameras=None,
                         sampler: SamplerSettings | None = None, min_confidence: float | None = 0.5,
                         overwrite: bool = False, progress: bool = True, model_options: dict | None = None,
                         name: str | None = None) -> LocoReport:
    """Fit once per held-out camera and score both the posterior and triangulation in that camera.

    Parameters
    ----------
    dataset : str, path or xarray.Dataset
        A registered name, a ``.nc`` file, or a dataset (needs at least 3 cameras).
    out : path, optional
        JSON to write; default ``benchmarks/results/loco_<name>.json``.
    cameras : list of str, optional
        Cameras to hold out (default: all).
    sampler : SamplerSettings, optional
        Default: 2 chains x (300 warm-up + 200 draws), seed 0.
    min_confidence : float, optional
        Held-out detections scored only at or above this confidence (where the dataset has one).
    name : str, optional
        The recording's name in messages, the JSON and the default file name (default: the registered name, the
        file's stem, or a dataset's ``name`` attribute). Detections left out of the dataset
        (:func:`gimbal.datasets.exclude_detections`) are recorded in ``settings.excluded_detections``, and the default
        file is then ``loco_<name>_excluded.json``: neither fitted nor scored, they make another comparison.
    """
    sampler = sampler or SamplerSettings(chains=2, tune=300, draws=200, seed=0)
    if dataset is None:
        raise ValueError("leave_one_camera_out needs a dataset (--dataset NAME or FILE.nc).")
    ds = dataset if isinstance(dataset, xr.Dataset) else load_dataset(dataset, max_T=max_T)
    label = name or (Path(str(dataset)).stem if not isinstance(dataset, xr.Dataset) else ds.attrs.get("name", "dataset"))
    excluded = ds.attrs.get("excluded_detections") or None
    names = [str(n) for n in ds["camera"].values]
    if len(names) < 3:
        raise ValueError(f"leave-one-camera-out needs >= 3 cameras (2 to fit, 1 to score); {label} has {len(names)}.")
    cameras = list(cameras or names)
    unknown = sorted(set(cameras) - set(names))
    if unknown:
        raise ValueError(f"--cameras {unknown} are not cameras of {label}: {names}.")
    path = Path(out) if out else DEFAULT_OUT / f"loco_{label}{'_excluded' if excluded else ''}.json"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite (or overwrite=True) to replace it.")
    rows, fit = [], None
    for i, cam in enumerate(cameras, 1):
        if progress:
            print(f"[{i}/{len(cameras)}] holding out camera {cam!r}", flush=True)
        fit = _fit_without(ds, cam, sampler=sampler, progress=progress, model_options=model_options)
        rest, mean, summary = fit.rest, fit.mean, fit.summary
        per_point = np.moveaxis(rest["observations"].values, 1, 2)
        tri = triangulate_robust(per_point, rest["camera_matrix"].values)
        tri_ls = triangulate_least_squares(per_point, rest["camera_matrix"].values)
        post, robust, least = (heldout_errors(p, ds, cam, min_confidence) for p in (mean, tri, tri_ls))
        paired = np.isfinite(post) & np.isfinite(robust) & np.isfinite(least)  # every method scored on the same ones
        on = lambda err, where: ErrorStats.of(np.where(where, err, np.nan))  # noqa: E731
        rows.append(CameraScore(
            camera=cam,
            posterior=on(post, paired),
            triangulation=on(robust, paired),
            bone_cv_posterior=bone_length_cv(mean, ds),
            bone_cv_triangulation=bone_length_cv(tri, ds),
            divergences=int(summary["divergences"]),
            max_rhat=summary.get("max_rhat_all"),
            min_ess_bulk=summary.get("min_ess_bulk_all"),
            fit_s=fit.fit_s,
            triangulation_least_squares=on(least, paired),
            posterior_only=on(post, np.isfinite(post) & ~paired),
            posterior_closer=float(np.mean(post[paired] < robust[paired])) if paired.any() else None,
            **_keypoints_lower(post, robust, paired),
            ratio_median_interval=ratio_interval(post, robust, paired, block=_frame_block(ds), seed=sampler.seed),
            ratio_median_by_chain=_ratio_by_chain(fit.chain_means, ds, cam, min_confidence, robust, paired),
        ))
        if progress:
            r = rows[-1]
            print(f"    posterior median {r.posterior.median} px vs triangulation {r.triangulation.median} px", flush=True)
    settings = {**sampler.as_dict(), "min_confidence": min_confidence, "max_T": max_T, "excluded_detections": excluded,
                "model_options": _describe_options(model_options or {}),
                "model": fit.model if fit else None}  # what was built: choices left to the data (e.g. its scores) resolved
    report = LocoReport(label, int(ds.sizes["frame"]), int(ds.sizes["keypoint"]), rows, settings, path)
    write_text_atomic(path, json.dumps(report.to_json(), indent=2, default=float) + "\n")
    return report
