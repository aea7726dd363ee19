"""Initial values from robust triangulation, and the validation gate.

Every chain starts from a skeleton-free but outlier-resistant reconstruction:
median-of-camera-pairs triangulation with reprojection-error rejection, then
temporal spike removal and gap filling. Scale parameters (bone lengths,
positional spread, per-frame step size, 2D noise, inlier fraction) and the
pose states (clusters of bone directions, as the original GIMBAL fits them
from training data) are estimated from that reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy.cluster.vq import kmeans2

from .cameras import project, triangulate_robust
from ..datasets import skeleton_of

__all__ = [
    "Initialization",
    "PoseStates",
    "InitializationError",
    "initialize_from_observations_dlt",
    "triangulate_sequence",
    "fit_pose_states",
    "check_initial_point",
]

KAPPA_RANGE = (0.1, 500.0)


class InitializationError(ValueError):
    """The model's log density or gradient is not finite at the initial point."""


@dataclass
class PoseStates:
    """Per-state mean bone directions and concentrations, with the frame labels they came from.

    The directions are in the world frame, or - when ``heading_keypoints`` is set (a trained
    :class:`~gimbal.model.prior.PosePrior`) - in each frame's body frame (see
    :func:`gimbal.model.prior.canonical_positions`). ``transition_counts`` and ``initial`` are the Dirichlet
    pseudo-counts of the transition rows and the first frame's state probabilities; None means the model's
    defaults (sticky counts, uniform start).
    """

    mean_directions: np.ndarray  # (S, B, 3) unit vectors
    kappa: np.ndarray  # (S, B)
    labels: np.ndarray  # (T,)
    transition: np.ndarray  # (S, S) row-stochastic
    transition_counts: np.ndarray | None = None  # (S, S)
    initial: np.ndarray | None = None  # (S,)
    heading_keypoints: np.ndarray | None = None  # (2,) base and tip keypoint of the heading
    frame_axes: np.ndarray | None = None  # (3, 3) rows: reference axis, second axis, vertical

    @property
    def n_states(self) -> int:
        return self.kappa.shape[0]


@dataclass
class Initialization:
    """Initial values (constrained scale, keyed like the model's variables) and data-derived constants."""

    positions: np.ndarray  # (T, K, 3) robust reconstruction
    values: dict = field(default_factory=dict)
    pose_states: PoseStates | None = None
    center: np.ndarray | None = None  # (3,) robust centre of the root trajectory
    triangulation_residual_px: float = float("nan")


def _fill_gaps(track: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN frames of a (T, 3) track (edges: nearest value)."""
    t = np.arange(track.shape[0])
    ok = np.all(np.isfinite(track), axis=-1)
    if not ok.any():
        return track
    return np.stack([np.interp(t, t[ok], track[ok, d]) for d in range(3)], axis=-1)


def _remove_spikes(track: np.ndarray, window: int = 5, n_mad: float = 6.0) -> np.ndarray:
    """Blank frames that jump far from their temporal running median."""
    T = track.shape[0]
    if T < window:
        return track
    pad = window // 2
    padded = np.pad(track, ((pad, pad), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (T, 3, window)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(windows, axis=-1)
    dev = np.linalg.norm(track - med, axis=-1)
    finite = np.isfinite(dev)
    if finite.sum() < 3:
        return track
    mad = np.median(dev[finite]) + 1e-9
    out = track.copy()
    out[finite & (dev > n_mad * 1.4826 * mad + 1e-6)] = np.nan
    return out


def triangulate_sequence(dataset: xr.Dataset, threshold_px: float = 20.0) -> np.ndarray:
    """Robust 3D reconstruction of every frame and keypoint, gaps filled.

    Keypoints seen by fewer than two cameras in a frame are interpolated in
    time; a keypoint never triangulated is placed one median bone length
    above its parent (the root, if never seen, at the centroid of the others).
    """
    obs = dataset["observations"].values  # (T, C, K, 2)
    P = dataset["camera_matrix"].values
    x = triangulate_robust(np.moveaxis(obs, 1, 2), P, threshold_px=threshold_px)  # (T, K, 3)
    skel = skeleton_of(dataset)
    for k in range(x.shape[1]):
        x[:, k] = _fill_gaps(_remove_spikes(x[:, k]))
    never = [k for k in range(x.shape[1]) if not np.isfinite(x[:, k]).all()]
    if len(never) == x.shape[1]:
        raise InitializationError(
            "no keypoint is seen by two cameras in any frame: triangulation is impossible. "
            "Check the camera matrices and that observations are (T, C, K, 2) pixels."
        )
    if never:
        seen_lengths = np.linalg.norm(skel.bone_vectors(x), axis=-1)
        step = np.nanmedian(seen_lengths) if np.isfinite(seen_lengths).any() else 1.0
        if 0 in never:
            x[:, 0] = np.nanmean(x[:, 1:], axis=1)
        for k in never:
            if k > 0:
                x[:, k] = x[:, skel.parents[k]] + np.array([0.0, 0.0, step])
    return x


def _vmf_kappa(mean_resultant: np.ndarray) -> np.ndarray:
    """Banerjee et al. (2005) approximation of the vMF MLE on S^2."""
    r = np.clip(mean_resultant, 1e-6, 1 - 1e-6)
    return np.clip(r * (3 - r**2) / (1 - r**2), *KAPPA_RANGE)


def fit_pose_states(directions: np.ndarray, n_states: int, seed: int = 0, stickiness: float = 10.0) -> PoseStates:
    """Cluster per-frame bone directions into pose states and fit a vMF per state and bone.

    Parameters
    ----------
    directions : (T, B, 3) array
        Unit bone directions (e.g. from triangulation).
    n_states : int
        Number of pose states ``S``.
    seed : int
        Seed of the k-means++ initialisation.
    stickiness : float
        Pseudo-counts added to the diagonal of the empirical transition counts.
    """
    T, B, _ = directions.shape
    if n_states < 1:
        raise ValueError(f"n_states must be >= 1, got {n_states}.")
    if n_states == 1 or T < n_states:
        labels = np.zeros(T, dtype=np.int64)
    else:
        _, labels = kmeans2(directions.reshape(T, -1), n_states, minit="++", seed=seed)
    S = max(n_states, 1)
    global_mean = directions.mean(axis=0)
    means, kappas = np.empty((S, B, 3)), np.empty((S, B))
    for s in range(S):
        members = directions[labels == s] if np.any(labels == s) else directions
        m = members.mean(axis=0) if len(members) else global_mean
        r = np.linalg.norm(m, axis=-1)
        means[s] = m / np.maximum(r, 1e-12)[:, None]
        kappas[s] = _vmf_kappa(r)
    counts = np.full((S, S), 1.0) + stickiness * np.eye(S)
    np.add.at(counts, (labels[:-1], labels[1:]), 1.0)
    return PoseStates(means, kappas, labels.astype(np.int64), counts / counts.sum(axis=1, keepdims=True))


def _per_pair_observation(resid, seen, inlier, sigma, frac, pseudo: float = 4.0):
    """Per (camera, keypoint) noise and inlier log-odds, shrunk towards the shared values.

    Each pair's inlier fraction is ``(inliers + pseudo * frac[k]) / (detections + pseudo)`` and its noise the
    Rayleigh estimate of its inliers' residuals, weighted against ``sigma`` the same way. A pair with no
    detections (no inliers, for the noise) would sit exactly at its prior's centre, where the gradient of its
    value is 0 and nutpie cannot start: it is moved 0.05 (log noise) and 0.1 (log-odds) off.
    """
    n_seen, n_in = seen.sum(axis=0), inlier.sum(axis=0)  # (C, K)
    p = np.clip((n_in + pseudo * frac[None, :]) / (n_seen + pseudo), 0.02, 0.98)
    logodds = np.log(p) - np.log1p(-p)
    r2 = np.where(inlier, resid, 0.0) ** 2
    # Rayleigh: E[r^2] = 2 sigma^2 per inlier
    var = (r2.sum(axis=0) / 2.0 + pseudo * sigma**2) / (n_in + pseudo)
    noise = np.clip(np.sqrt(var), sigma / 3, 3 * sigma)
    empty = n_seen == 0
    logodds[empty] = np.log(frac / (1 - frac))[np.nonzero(empty)[1]] + 0.1
    noise[n_in == 0] = sigma * np.exp(0.05)  # no inliers: the detections (if any) barely inform the noise
    return noise, logodds


def initialize_from_observations_dlt(
    dataset: xr.Dataset,
    *,
    n_states: int = 1,
    threshold_px: float = 20.0,
    model=None,
    seed: int = 0,
) -> Initialization:
    """Robust triangulation-based initial values for every free variable of the model.

    Parameters
    ----------
    dataset : xarray.Dataset
        A GIMBAL dataset.
    n_states : int
        Number of pose states to fit (directions clustered by k-means).
    threshold_px : float
        Reprojection error above which a detection is treated as an outlier.
    model : pymc.Model, optional
        When given, the values are checked against it (validation gate):
        :class:`InitializationError` names every non-finite log-density term
        and every variable with a non-finite gradient.
    seed : int
        Seed for the pose-state clustering.

    Returns
    -------
    Initialization
    """
    skel = skeleton_of(dataset)
    x = triangulate_sequence(dataset, threshold_px=threshold_px)
    T, K, _ = x.shape
    delta = skel.bone_vectors(x)  # (T, B, 3)
    lengths = np.linalg.norm(delta, axis=-1)
    rho = np.maximum(np.median(lengths, axis=0), 1e-3)
    mad = 1.4826 * np.median(np.abs(lengths - rho), axis=0)
    sigma = np.maximum(mad, 0.02 * rho)
    if T > 1:
        steps = np.linalg.norm(np.diff(x, axis=0), axis=-1)  # (T-1, K)
        scale_ref = np.median(rho) if rho.size else 1.0
        step_sigma = np.maximum(np.median(steps, axis=0) / np.sqrt(3), 1e-3 * scale_ref)
    else:
        step_sigma = np.ones(K)
    # 2D residuals of the reconstruction: noise scale and inlier fraction per keypoint
    obs = dataset["observations"].values
    resid = np.linalg.norm(project(x, dataset["camera_matrix"].values) - obs, axis=-1)  # (T, C, K)
    seen = np.isfinite(resid)
    inlier = seen & (resid < threshold_px)
    # 2D isotropic Gaussian residual norms are Rayleigh(sigma), whose median is sigma * sqrt(2 ln 2)
    obs_sigma = float(np.median(resid[inlier]) / np.sqrt(2 * np.log(2))) if inlier.any() else threshold_px / 3
    frac = inlier.sum(axis=(0, 1)) / np.maximum(seen.sum(axis=(0, 1)), 1)
    frac = np.clip(frac, 0.5, 0.98)
    sigma_ck, logodds_ck = _per_pair_observation(resid, seen, inlier, max(obs_sigma, 0.1), frac)
    directions = delta / np.maximum(lengths, 1e-12)[..., None]
    states = fit_pose_states(directions, n_states, seed=seed)
    values = {
        "x": x,
        "bone_length": rho,
        "bone_sigma": sigma,
        "step_sigma": step_sigma,
        "obs_sigma": np.asarray(max(obs_sigma, 0.1)),
        "logodds_inlier": np.log(frac / (1 - frac)),
        "obs_sigma_ck": sigma_ck,
        "logodds_inlier_ck": logodds_ck,
        "transition": states.transition,
        "state_mean_raw": states.mean_directions,
        "state_kappa": states.kappa,
        "direction_raw": directions,
    }
    init = Initialization(
        positions=x,
        values=values,
        pose_states=states,
        center=np.median(x[:, 0], axis=0),
        triangulation_residual_px=float(np.median(resid[inlier])) if inlier.any() else float("nan"),
    )
    if model is not None:
        check_initial_point(model, init_point_for(model, init))
    return init


def init_point_for(model, init: Initialization) -> dict:
    """The model's initial point with the free variables that ``init`` knows set from it."""
    point = model.initial_point()
    for rv in model.free_RVs:
        if rv.name not in init.values:
            continue
        value_var = model.rvs_to_values[rv]
        transform = model.rvs_to_transforms.get(rv)
        val = np.asarray(init.values[rv.name], dtype=value_var.dtype)
        if transform is not None:
            val = transform.forward(val, *rv.owner.inputs).eval()
        point[value_var.name] = np.asarray(val, dtype=value_var.dtype)
    return point


def check_initial_point(model, point=None) -> None:
    """Raise :class:`InitializationError` where nutpie would refuse to start from ``point``.

    That is: a non-finite log-density term, a non-finite gradient, or a gradient component that is exactly zero
    (nutpie scales its initial mass matrix by 1/|gradient|); each problem names its variables.
    """
    from ..diagnostics.checks import compile_logp_and_grad, gradient_report, safe_point_logps

    point = model.initial_point() if point is None else point
    logps = safe_point_logps(model, point)
    problems = []
    if not logps["finite"]:
        problems.append(
            "non-finite log-density terms: "
            + ", ".join(f"{k}={logps['terms'][k]}" for k in logps["nonfinite_terms"])
        )
    grad = gradient_report(compile_logp_and_grad(model, point), point)
    if not grad["finite"]:
        bad = [f"{k} ({v['nan']} NaN, {v['inf']} inf of {v['size']})" for k, v in grad["per_variable"].items() if v["nan"] or v["inf"]]
        problems.append("non-finite gradient in: " + ", ".join(bad))
    if grad["zero_count"]:
        problems.append(
            f"{grad['zero_count']} gradient component(s) exactly zero ({', '.join(grad['zero_components'])}"
            + (", ..." if grad["zero_count"] > len(grad["zero_components"]) else "")
            + "): nothing in the data informs them at this point (a keypoint no camera detects?), and nutpie "
            "cannot start there"
        )
    if problems:
        raise InitializationError(
            "the initial point is invalid; " + "; ".join(problems)
            + ". Check the data (units, camera matrices, NaN for missing detections) or pass other initial values."
        )
