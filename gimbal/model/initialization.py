"""Initial values from robust triangulation, and the validation gate.

Every chain starts from an outlier-resistant reconstruction: camera-pair consensus
triangulation with reprojection-error rejection; among the candidates, each keypoint's
track through frames that best weighs camera support against bone lengths and
continuity; least-squares refinement; then temporal spike removal and gap filling (on sparse labelled
frames, which have no temporal neighbours: wrong and missing points replaced from the skeleton).
Scale parameters (bone lengths, positional spread, per-frame step size, 2D noise, inlier fraction) and the
pose states (clusters of bone directions, as the original GIMBAL fits them
from training data) are estimated from that reconstruction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pytensor.tensor as pt
import xarray as xr
from scipy.cluster.vq import kmeans2

from .cameras import (Candidates, camera_centres, project, ray_directions, refine_triangulation, reprojection_error,
                      select_candidates, triangulation_candidates, triangulation_covariance)
from .observation import NOISE_FLOOR_PX, NOISE_POOL_SD
from .skeleton import in_step_frames
from .whitening import TrackWhitening
from ..datasets import skeleton_of

__all__ = [
    "Initialization",
    "PoseStates",
    "InitializationError",
    "initialize_from_observations_dlt",
    "smoothed_start",
    "start_covariance",
    "triangulate_sequence",
    "continuous_track",
    "fit_pose_states",
    "check_initial_point",
    "off_exact_zeros",
    "exact_reprojection_text",
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
    start: str = "tracks"  # "smoothed" once :func:`smoothed_start` has made the tracks consistent with the priors


def _fill_gaps(track: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN frames of a (T, 3) track (edges: nearest value)."""
    t = np.arange(track.shape[0])
    ok = np.all(np.isfinite(track), axis=-1)
    if not ok.any():
        return track
    return np.stack([np.interp(t, t[ok], track[ok, d]) for d in range(3)], axis=-1)


def _remove_spikes(track: np.ndarray, window: int = 5, n_mad: float = 6.0,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """Blank frames that jump far from their temporal running median, except those in ``keep`` ``(T,)``."""
    T = track.shape[0]
    if T < window:
        return track
    pad = window // 2
    padded = np.pad(track, ((pad, pad), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (T, 3, window)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(windows, axis=-1)
    dev = np.linalg.norm(track - med, axis=-1)
    finite = np.isfinite(dev)
    if finite.sum() < 3:
        return track
    mad = np.median(dev[finite]) + 1e-9
    out = track.copy()
    spike = finite & (dev > n_mad * 1.4826 * mad + 1e-6)
    out[spike if keep is None else spike & ~keep] = np.nan
    return out


def triangulate_sequence(dataset: xr.Dataset, threshold_px: float = 20.0, skeleton_consistent: bool = True,
                         refine: bool = True, temporal: bool | None = None, normalize: bool = False) -> np.ndarray:
    """Robust 3D reconstruction of every frame and keypoint, gaps filled.

    Each point is the best-supported camera-pair consensus (:func:`~gimbal.model.cameras.triangulate_robust`; by
    default from the unnormalized linear solve, as the chains' start uses it, for the reason given in
    :func:`_reconstruct`; ``normalize=True`` for the normalized one, as the benchmarks' triangulation baseline); with
    ``skeleton_consistent`` the choice among the consensus candidates also weighs the bone lengths
    (:func:`_prefer_consistent_bones`), so that where the cameras disagree the point the skeleton allows wins,
    and with ``temporal`` each keypoint's choices form the track through frames that best trades camera support
    against continuity (:func:`continuous_track`), so that a tie the skeleton cannot see (three cameras for a
    left/right swap, three for the truth) goes to the explanation of the frames around it (default: when the
    dataset's frames are consecutive, i.e. not sparse labelled frames with ``attrs['frames_consecutive'] = 0``);
    with ``refine`` each point then moves to the minimum of its inlier cameras' reprojection error
    (:func:`~gimbal.model.cameras.refine_triangulation`; linear triangulation's error can be several times that).
    With ``temporal``, points far from their 5-frame running median are taken for wrong choices and interpolated
    over, except where every camera that detected the point agrees on it and its bones keep their lengths (a fly's
    leg in swing seen by two cameras moves that fast).
    Keypoints seen by fewer than two cameras in a frame are interpolated in time (without ``temporal``: placed
    from the skeleton, and points far off their bones replaced, :func:`_skeleton_cleaned`, instead of the temporal
    spike removal); a keypoint never triangulated
    is placed on the ray of a camera that sees it (:func:`_on_single_rays`), in frames no camera sees it
    interpolated in time (without ``temporal``, and where no camera ever sees it: one median bone length above its
    parent); the root, if never triangulated, at the centroid of the others.
    """
    return _reconstruct(dataset, threshold_px, skeleton_consistent, refine, temporal, normalize)[0]


def _reconstruct(dataset: xr.Dataset, threshold_px: float, skeleton_consistent: bool, refine: bool,
                 temporal: bool | None, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`triangulate_sequence`'s points ``(T, K, 3)``, and ``(T, K)`` which of them every camera that detected
    them agrees on (:func:`_unanimous`)."""
    obs = dataset["observations"].values  # (T, C, K, 2)
    P = dataset["camera_matrix"].values
    # The start's candidates keep the unnormalized linear solve (normalize=False): on the SLEAP mouse its
    # three-camera refits leave out the worst-calibrated camera where the normalized ones compromise with it, and
    # chains from the normalized start settle 2,400 log-density units lower (README, *The linear triangulation is
    # normalized*). The baselines and checks (triangulate_robust) use the normalized solve.
    candidates = triangulation_candidates(np.moveaxis(obs, 1, 2), P, threshold_px=threshold_px, normalize=normalize)
    skel = skeleton_of(dataset)
    if temporal is None:
        temporal = bool(dataset.attrs.get("frames_consecutive", 1))
    x = select_candidates(candidates)  # (T, K, 3)
    agreed = _unanimous(candidates)
    if temporal:
        keep = agreed & _bones_hold(x, skel.parents, _unanimous_bone_lengths(agreed, x, skel.parents))
        clean = lambda points: _cleaned(points, keep)  # noqa: E731
    else:
        clean = lambda points: _skeleton_cleaned(points, skel.parents)  # noqa: E731
    x = clean(x)
    if skeleton_consistent and x.shape[1] > 1:
        x = clean(_prefer_consistent_bones(candidates, x, skel.parents, agreed, temporal=temporal))
    if refine:  # the chosen points' cameras (those within threshold_px), to the reprojection-error minimum
        per_point = np.moveaxis(obs, 1, 2)  # (T, K, C, 2)
        with np.errstate(invalid="ignore"):
            used = reprojection_error(x, per_point, P) <= threshold_px  # (T, K, C); NaN compares False
        x = refine_triangulation(x, per_point, P, used)
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
                placed = _on_single_rays(x[:, skel.parents[k]], obs[:, :, k], P, step)
                if temporal:
                    placed = _fill_gaps(placed)
                vertical = x[:, skel.parents[k]] + np.array([0.0, 0.0, step])
                x[:, k] = np.where(np.isfinite(placed).all(axis=-1, keepdims=True), placed, vertical)
    return x, agreed


def _on_single_rays(parent: np.ndarray, observations: np.ndarray, cameras: np.ndarray, length: float) -> np.ndarray:
    """A keypoint no two cameras triangulate, placed where one camera sees it: at the point of that camera's ray
    nearest its parent, moved along the ray away from the camera where that would leave a bone shorter than half of
    ``length``. It reprojects onto the one detection instead of starting where no camera saw it (``length`` above the
    parent, which made that camera's detections outliers at the start, and on the earlier port's explicit directions
    an exactly vertical bone whose gradient is exactly zero). On the real SLEAP mouse (60 frames, each of 14
    keypoints left to each one of its 4 cameras in turn) the start lies 13.0 mm (median; p90 25.2) from the point
    all four cameras triangulate, against 30.1 (39.5) mm above the parent.

    ``parent``: ``(T, 3)``; ``observations``: ``(T, C, 2)``, this keypoint's detections; returns ``(T, 3)``, NaN in
    frames no camera sees it. A frame seen by several cameras (that did not triangulate) uses the first.
    """
    seen = np.isfinite(observations).all(axis=-1)  # (T, C)
    out = np.full(parent.shape, np.nan)
    frames = np.flatnonzero(seen.any(axis=1) & np.isfinite(parent).all(axis=-1))
    if not frames.size:
        return out
    camera = seen[frames].argmax(axis=1)
    centre = camera_centres(cameras)[camera]  # (n, 3)
    direction = ray_directions(observations[:, :, None], cameras)[frames, camera, 0]  # (n, 3)
    depth = np.einsum("nd,nd->n", parent[frames] - centre, direction)  # of the ray's point nearest the parent
    miss = np.linalg.norm(parent[frames] - centre - depth[:, None] * direction, axis=-1)
    depth = depth + np.sqrt(np.maximum((length / 2) ** 2 - miss**2, 0.0))  # a bone at least half the length
    front = depth > 0
    out[frames[front]] = centre[front] + depth[front, None] * direction[front]
    return out


def _cleaned(x: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Temporal spikes removed and gaps filled, per keypoint (a copy); points in ``keep`` ``(T, K)`` stay."""
    x = x.copy()
    for k in range(x.shape[1]):
        x[:, k] = _fill_gaps(_remove_spikes(x[:, k], keep=None if keep is None else keep[:, k]))
    return x


def _unanimous(candidates: Candidates) -> np.ndarray:
    """``(T, K)`` bool: points whose best candidate every camera that detected them (at least two) supports."""
    best = np.argmax(candidates.score, axis=0)  # (T, K)
    support = np.take_along_axis(candidates.support, best[None], axis=0)[0]
    return (support == candidates.seen) & (candidates.seen >= 2)


SPARSE_BONE_TOLERANCE = 3.0  # on sparse frames, a bone this far (relative) from its median length is a wrong point


def _skeleton_cleaned(x: np.ndarray, parents, tolerance: float = SPARSE_BONE_TOLERANCE) -> np.ndarray:
    """Wrong or missing points of frames that are not consecutive, replaced from the skeleton.

    Frames far apart in time (sparse labelled frames) have no temporal neighbours to judge a point by, so a point
    is judged by its bone to its parent (keypoints root first, parents already cleaned): a point is wrong when
    the bone's length is off its median over frames by more than ``tolerance`` (relative), or, where the parent
    itself was replaced, when it lies farther from the nearest kept ancestor than the bones between them allow.
    A wrong or missing point is placed one median bone length from its parent, along the bone's median offset over
    the kept frames. The root is judged by its offset from the median of the frame's other points (wrong when that
    offset is farther from its median over frames than ``1 + tolerance`` times the larger of the offsets' median
    deviation and the median bone length) and placed at that centre plus the median offset. Returns a copy.
    """
    x, parents = x.copy(), np.asarray(parents)
    T, K = x.shape[:2]
    kept = np.ones((T, K), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN keypoints or frames
        median = np.array([np.nan] + [np.nanmedian(np.linalg.norm(x[:, k] - x[:, parents[k]], axis=-1))
                                      for k in range(1, K)])
        if K > 1:  # the root, judged by its offset from the other points' centre, and placed by it where wrong
            centre = np.nanmedian(x[:, 1:], axis=1)  # (T, 3)
            offset = x[:, 0] - centre
            typical = np.nanmedian(offset, axis=0)
            far = np.linalg.norm(offset - typical, axis=-1)
            reach = (1.0 + tolerance) * max(float(np.nanmedian(far)), float(np.nan_to_num(np.nanmedian(median))))
            kept[:, 0] = far <= reach  # NaN compares False
            x[~kept[:, 0], 0] = centre[~kept[:, 0]] + typical  # NaN where the frame has no other point
    x[:, 0] = _fill_gaps(x[:, 0])
    for k in range(1, K):
        p = parents[k]
        anchor, reach = x[:, p].copy(), np.full(T, median[k])  # the nearest kept ancestor, and the path's length
        a = np.full(T, p)
        for _ in range(K):  # walk up past replaced parents
            up = ~kept[np.arange(T), a] & (a > 0)
            if not up.any():
                break
            reach[up] += median[a[up]]
            a[up] = parents[a[up]]
            anchor[up] = x[up, a[up]]
        dist = np.linalg.norm(x[:, k] - anchor, axis=-1)
        direct = a == p
        with np.errstate(invalid="ignore"):
            wrong = np.where(direct, np.abs(dist / median[k] - 1.0) > tolerance, dist > (1.0 + tolerance) * reach)
        kept[:, k] = np.isfinite(dist) & ~wrong
        if kept[:, k].all() or not np.isfinite(median[k]):
            continue  # nothing to replace, or never triangulated: left NaN for the caller's fallback
        ok = kept[:, k] & kept[:, p]
        direction = np.median(x[ok, k] - x[ok, p], axis=0) if ok.any() else np.zeros(3)
        size = np.linalg.norm(direction)
        offset = median[k] * (direction / size if size > 0 else np.array([0.0, 0.0, 1.0]))
        x[~kept[:, k], k] = x[~kept[:, k], p] + offset
    return x


BONE_TOLERANCE = 0.2  # relative bone-length deviation a candidate may have at no cost (bodies stretch)
BONE_WEIGHT = 3.0  # cost, in supporting cameras, of each further 100% of deviation


def _prefer_consistent_bones(candidates: Candidates, x, parents, agreed, temporal: bool = True) -> np.ndarray:
    """Re-choose each point among its consensus candidates, weighing camera support against bone lengths.

    A candidate's score (supporting cameras, :class:`~gimbal.model.cameras.Candidates`) loses ``BONE_WEIGHT``
    per unit of relative deviation beyond ``BONE_TOLERANCE`` of each bone it forms with its parent (already
    re-chosen: keypoints go root first) and its children (from ``x``) against the bone's reference length
    (:func:`_unanimous_bone_lengths`). Points with no candidate keep their value in ``x``. With ``temporal``
    the choice is made for each keypoint's whole track at once (:func:`continuous_track`), not frame by frame.

    Parameters
    ----------
    candidates : Candidates
        Over ``(T, K)`` points.
    x : (T, K, 3) ndarray
        The plain choice, gaps filled.
    parents : (K,) ndarray
    agreed : (T, K) bool ndarray
        The unanimous points (:func:`_unanimous`), whose bones give the reference lengths.
    temporal : bool
        Choose tracks (default) rather than points.
    """
    K = x.shape[1]
    children = [np.flatnonzero(parents == k) for k in range(K)]
    length = _unanimous_bone_lengths(agreed, x, parents)
    points, out = candidates.points, x.copy()

    def cost(candidate, other, bone):
        if not np.isfinite(length[bone]) or length[bone] <= 0:
            return 0.0
        dev = np.abs(np.linalg.norm(candidate - other, axis=-1) / length[bone] - 1.0)
        return BONE_WEIGHT * np.nan_to_num(np.maximum(dev - BONE_TOLERANCE, 0.0))

    temporal = temporal and x.shape[0] > 1  # one frame has no track
    step = _step_scale(x) if temporal else None
    for k in range(K):
        total = candidates.score[:, :, k].copy()  # (pairs, T)
        if k > 0:
            total -= cost(points[:, :, k], out[None, :, parents[k]], k)
        for c in children[k]:
            total -= cost(points[:, :, k], x[None, :, c], c)
        if temporal:
            out[:, k] = continuous_track(points[:, :, k], total, x[:, k], step[k])
            continue
        best = np.argmax(total, axis=0)
        usable = np.isfinite(np.take_along_axis(total, best[None], axis=0)[0])
        chosen = np.take_along_axis(points[:, :, k], best[None, :, None], axis=0)[0]
        out[:, k] = np.where(usable[:, None], chosen, x[:, k])
    return out


STEP_CAMERAS = 4.0  # the jump cost, in supporting cameras, is capped here: a jump that many cameras support is taken
CAMERA_NATS = 4.0  # a supporting camera's worth in log density (an inlier at ~3 px against a ~200 px outlier: ~8)


def _step_scale(x: np.ndarray) -> np.ndarray:
    """Each keypoint's per-axis frame-to-frame step scale from the median step length, shape ``(K,)``.

    For a 3D Gaussian step with per-axis sd ``s`` the median length is ``1.538 s``; the median ignores the few
    jumps a wrong choice makes. Floored at a thousandth of the median step over all keypoints.
    """
    steps = np.linalg.norm(np.diff(x, axis=0), axis=-1)  # (T - 1, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a keypoint never triangulated: all-NaN
        med = np.nanmedian(steps, axis=0) / 1.538
        floor = 1e-3 * max(float(np.nan_to_num(np.nanmedian(steps), nan=1.0)), 1e-9)
    return np.maximum(np.nan_to_num(med, nan=floor), floor)


def continuous_track(points: np.ndarray, score: np.ndarray, fallback: np.ndarray, step: float) -> np.ndarray:
    """One keypoint's track through its candidates that best trades camera support against continuity.

    The Viterbi path over frames: a frame's options are its candidates with a finite ``score`` (in supporting
    cameras), or, where it has none, ``fallback`` (score 0); moving by ``d`` between frames costs
    ``min(0.5 (d / step)^2 / CAMERA_NATS, STEP_CAMERAS)`` cameras. Where three cameras see a left/right swap and
    three the truth, the per-frame choice is a coin toss; the path keeps the explanation of the frames around it.

    Parameters
    ----------
    points : (P, T, 3) ndarray
        The candidates (camera pairs' consensus points).
    score : (P, T) ndarray
        Their scores, ``-inf`` where a candidate is unusable.
    fallback : (T, 3) ndarray
        The track where a frame has no usable candidate (finite).
    step : float
        Per-axis step scale (:func:`_step_scale`).

    Returns
    -------
    (T, 3) ndarray
    """
    usable = np.isfinite(score)
    if not usable.any():  # nothing to choose from (a keypoint never triangulated: the fallback is NaN)
        return fallback.copy()
    opts = np.concatenate([points, fallback[None]], axis=0)  # (P + 1, T, 3)
    node = np.concatenate([np.where(usable, score, -np.inf), np.where(usable.any(0), -np.inf, 0.0)[None]], axis=0)
    opts = np.where(np.isfinite(node)[..., None], opts, 0.0)  # unusable options: any finite point, never chosen
    T = node.shape[1]
    value = node[:, 0].copy()
    back = np.zeros(node.shape, dtype=np.int64)
    for t in range(1, T):
        d2 = np.sum((opts[:, t, None] - opts[None, :, t - 1]) ** 2, axis=-1)  # (now, before)
        jump = np.minimum(0.5 * d2 / step**2 / CAMERA_NATS, STEP_CAMERAS)
        total = value[None, :] - jump
        back[:, t] = np.argmax(total, axis=1)
        value = total[np.arange(total.shape[0]), back[:, t]] + node[:, t]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(np.argmax(value))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[path[t], t]
    return opts[path, np.arange(T)]


def _bones_hold(x: np.ndarray, parents: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``(T, K)`` bool: points whose every bone (to the parent and to each child) is within ``BONE_TOLERANCE``
    (relative) of its ``length``; a NaN point or length holds none."""
    held = np.ones(x.shape[:2], bool)
    for k in range(1, x.shape[1]):  # bone k, from its parent to keypoint k
        with np.errstate(invalid="ignore", divide="ignore"):
            bone = np.abs(np.linalg.norm(x[:, k] - x[:, parents[k]], axis=-1) / length[k] - 1.0) <= BONE_TOLERANCE
        held[:, k] &= bone
        held[:, parents[k]] &= bone
    return held


def _unanimous_bone_lengths(unanimous: np.ndarray, x, parents, min_frames: int = 5) -> np.ndarray:
    """Each bone's median length over the frames where both ends are ``unanimous`` ``(T, K)``, shape ``(K,)`` (entry 0
    unused).

    A point is unanimous when its best candidate is supported by every camera that detected it (at least two,
    :func:`_unanimous`):
    where the cameras disagree, the plain choice may be wrong for most of a recording (an occluded elbow), and a
    median over all frames would learn the wrong length. With fewer than ``min_frames`` such frames the median
    over all frames is used.
    """
    length = np.full(x.shape[1], np.nan)
    for k in range(1, x.shape[1]):
        d = np.linalg.norm(x[:, k] - x[:, parents[k]], axis=-1)
        both = unanimous[:, k] & unanimous[:, parents[k]] & np.isfinite(d)
        pool = d[both] if both.sum() >= min_frames else d[np.isfinite(d)]
        length[k] = np.median(pool) if pool.size else np.nan
    return length


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
    """The per-(camera, keypoint) observation model's values: noise factors and inlier log-odds.

    Returns the camera and keypoint factors of the log noise (:func:`_noise_factors`) and each pair's inlier
    log-odds, from its inlier fraction ``(inliers + pseudo * frac[k]) / (detections + pseudo)``. A pair with no
    detections would sit exactly at its prior's centre, where the gradient of its value is 0 and nutpie cannot
    start: it is moved 0.1 off.
    """
    n_seen, n_in = seen.sum(axis=0), inlier.sum(axis=0)  # (C, K)
    p = np.clip((n_in + pseudo * frac[None, :]) / (n_seen + pseudo), 0.02, 0.98)
    logodds = np.log(p) - np.log1p(-p)
    empty = n_seen == 0
    logodds[empty] = np.log(frac / (1 - frac))[np.nonzero(empty)[1]] + 0.1
    camera, keypoint = _noise_factors(resid, inlier, sigma, pseudo)
    return camera, keypoint, logodds


def _noise_factors(resid, inlier, sigma, pseudo: float, sweeps: int = 10):
    """Camera and keypoint factors of the log noise, each centred (zero sum), from the inliers' residuals.

    Each pair's noise is the Rayleigh estimate of its inliers' residuals, shrunk towards ``sigma`` with
    ``pseudo`` pseudo-inliers; ``log noise[c, k] - log sigma`` is then fitted as ``camera[c] + keypoint[k]`` by
    alternating weighted means (weights: inliers + pseudo), clipped to +-3 x :data:`NOISE_POOL_SD`.
    """
    n_in = inlier.sum(axis=0)
    r2 = np.where(inlier, resid, 0.0) ** 2
    var = (r2.sum(axis=0) / 2.0 + pseudo * sigma**2) / (n_in + pseudo)  # Rayleigh: E[r^2] = 2 sigma^2 per inlier
    log_ratio = 0.5 * np.log(var) - np.log(sigma)
    w = n_in + pseudo
    camera, keypoint = np.zeros(log_ratio.shape[0]), np.zeros(log_ratio.shape[1])
    for _ in range(sweeps):
        camera = ((log_ratio - keypoint[None, :]) * w).sum(axis=1) / w.sum(axis=1)
        camera -= camera.mean()
        keypoint = ((log_ratio - camera[:, None]) * w).sum(axis=0) / w.sum(axis=0)
        keypoint -= keypoint.mean()
    bound = 3 * NOISE_POOL_SD
    camera, keypoint = np.clip(camera, -bound, bound), np.clip(keypoint, -bound, bound)
    return camera - camera.mean(), keypoint - keypoint.mean()


def _pixel_noise(resid: np.ndarray, inlier: np.ndarray) -> float:
    """The detections' pixel noise from the inliers' residuals ``(T, C, K)`` at the triangulated points.

    A point fitted to ``n`` cameras leaves ``2n - 3`` of its ``2n`` residual coordinates free, so each residual
    is scaled by ``sqrt(2n / (2n - 3))``; 2D isotropic Gaussian residual norms are then Rayleigh(sigma), whose
    median is ``sigma * sqrt(2 ln 2)``.
    """
    n = inlier.sum(axis=1, keepdims=True)  # (T, 1, K)
    usable = inlier & (n >= 2)
    if not usable.any():
        return float(np.median(resid[inlier]) / np.sqrt(2 * np.log(2)))
    scaled = resid * np.sqrt(2 * n / np.maximum(2 * n - 3, 1))
    return float(np.median(scaled[usable]) / np.sqrt(2 * np.log(2)))


MIN_PIXEL_NOISE = 0.1  # the detections' noise estimate is at least this (pixels)
SCALE_FLOOR = 0.25  # a scale less its triangulation noise keeps at least this fraction of its raw estimate
EXACT_RESIDUAL_PX = 0.01  # a median triangulation residual below this: the 2D points are reprojections, not detections
EXACT_FIX = ("Fit the model to a detector's output; use 3D labels as training data (`gimbal prior fit --source truth`), "
             "or score the model on them with detector-like noise added to their 2D points.")


def exact_reprojection_text(residual_px: float) -> str | None:
    """What it means that the 2D points are exact reprojections of 3D points (the start's median triangulation
    residual below :data:`EXACT_RESIDUAL_PX`), else None. Label3D's 2D labels are (DANNCE mice: 2e-10 px)."""
    if not residual_px < EXACT_RESIDUAL_PX:
        return None
    return (f"The 2D points are exact reprojections of 3D points (median triangulation residual {residual_px:.1g} px): "
            "labels made in 3D, not a detector's output. The pixel noise sits at its floor "
            f"({MIN_PIXEL_NOISE} px shared, {NOISE_FLOOR_PX} px per camera and keypoint), so the likelihood pins "
            "every position to a fraction of a pixel and the "
            "posterior is sharply curved, which the sampler reads as ill-conditioning.")


def _less_noise(raw_sd: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """``sqrt(raw_sd^2 - noise_var)``, at least ``SCALE_FLOOR * raw_sd`` (unknown noise counts as 0)."""
    return np.sqrt(np.maximum(raw_sd**2 - np.nan_to_num(noise_var), (SCALE_FLOOR * raw_sd) ** 2))


def _median_over_frames(v: np.ndarray) -> np.ndarray:
    finite = np.isfinite(v)
    return np.array([np.median(v[finite[:, j], j]) if finite[:, j].any() else np.nan for j in range(v.shape[1])])


def _step_noise_var(cov: np.ndarray) -> np.ndarray:
    """Per keypoint, the per-axis variance triangulation noise adds to a frame-to-frame step, shape ``(K,)``."""
    per_axis = np.trace(cov, axis1=-2, axis2=-1) / 3  # (T, K)
    return _median_over_frames(per_axis[1:] + per_axis[:-1])


def _bone_noise_var(delta: np.ndarray, cov: np.ndarray, children: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Per bone, the variance triangulation noise adds to its length (along the bone), shape ``(B,)``."""
    u = delta / np.maximum(np.linalg.norm(delta, axis=-1, keepdims=True), 1e-12)  # (T, B, 3)
    both = cov[:, children] + cov[:, parents]  # (T, B, 3, 3): child and parent, independent
    return _median_over_frames(np.einsum("tbi,tbij,tbj->tb", u, both, u))


def _step_scale_fit(steps: np.ndarray, dof: float | None, iterations: int = 200) -> np.ndarray:
    """Per keypoint, the per-axis scale of its 3D frame-to-frame steps ``(T - 1, K, 3)``, shape ``(K,)``.

    Gaussian steps (``dof=None``): the median step length over ``sqrt(3)`` (the median ignores the few jumps a wrong
    choice makes; a 3D Gaussian step's median length is 1.538 per-axis sds, so this is 0.89 sd). Student-t steps:
    the maximum-likelihood scale of the multivariate Student-t with ``dof`` degrees of freedom, the model's own step
    distribution, by its EM iteration (each step weighted ``(dof + 3) / (dof + |d|^2 / s^2)``). On steady motion
    both follow the sd; where a keypoint mostly holds still and moves in bursts (a leg in stance and swing) the
    median sees the still frames only and the Student-t scale is larger (up to 3.8x on the real recordings; README,
    *Step sizes and fast movements*). NaN for a keypoint without steps.
    """
    squared = np.sum(steps**2, axis=-1)  # (N, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a keypoint never triangulated twice in a row: all-NaN
        scale = np.nanmedian(np.sqrt(squared), axis=0) / np.sqrt(3)
    if dof is None:
        return scale
    known = np.isfinite(squared)
    q = np.where(known, squared, 0.0)
    n = known.sum(axis=0)
    s2 = np.maximum(np.nan_to_num(scale, nan=1.0) ** 2, 1e-30)
    for _ in range(iterations):
        w = np.where(known, (dof + 3) / (dof + q / s2), 0.0)
        s2 = np.maximum(np.sum(w * q, axis=0) / np.maximum(3 * n, 1), 1e-30)
    return np.where(n > 0, np.sqrt(s2), np.nan)


MIN_AGREED_STEPS = 5  # a keypoint with fewer steps between agreed points uses all of its steps


def _step_scales(x: np.ndarray, agreed: np.ndarray, cov: np.ndarray, parents, step_dof: float | None,
                 scale_ref: float, relative: bool) -> np.ndarray:
    """Per keypoint, the scale of its frame-to-frame steps ``(K,)`` in the world (``relative=False``) or relative to
    its parent (the root's in the world either way), net of the triangulation noise.

    A step relative to the parent is the change of the vector from the parent to the keypoint: between points
    every camera agrees on at both ends (Student-t steps), and its noise is the keypoint's and the parent's.
    """
    parents = np.asarray(parents)
    rel = (parents >= 0) if relative else np.zeros(parents.size, bool)
    steps = np.diff(in_step_frames(x, parents, rel), axis=0)
    both = agreed.copy()
    both[:, rel] &= agreed[:, parents[rel]]
    noise = cov.copy()
    noise[:, rel] = cov[:, rel] + cov[:, parents[rel]]
    if step_dof is not None:  # every step counts in the Student-t's scale: only those between agreed points
        steps = _agreed_steps(steps, both)
    return np.maximum(_less_noise(_step_scale_fit(steps, step_dof), _step_noise_var(noise)), 1e-3 * scale_ref)


def _agreed_steps(steps: np.ndarray, agreed: np.ndarray) -> np.ndarray:
    """``steps`` ``(T - 1, K, 3)`` with those not between two points every camera agrees on (``agreed``, ``(T, K)``)
    set to NaN, per keypoint where at least :data:`MIN_AGREED_STEPS` remain. A step from or to a point the cameras
    disagree about may be a wrong choice's jump, not movement (on the real SLEAP mouse, scales fitted to all steps
    sent two of three held-out-`top` fits to a worse region; README, *Step sizes and fast movements*)."""
    both = agreed[1:] & agreed[:-1]
    use = both | (both.sum(axis=0) < MIN_AGREED_STEPS)[None]
    return np.where(use[..., None], steps, np.nan)


def initialize_from_observations_dlt(
    dataset: xr.Dataset,
    *,
    n_states: int = 1,
    threshold_px: float = 20.0,
    model=None,
    seed: int = 0,
    step_dof: float | None = None,
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
    step_dof : float, optional
        The Student-t steps' degrees of freedom: the step sizes are then that distribution's maximum-likelihood
        scales on the steps between points every camera agrees on (:func:`_agreed_steps`); None (Gaussian steps)
        takes them from the median of all steps (:func:`_step_scale_fit`). Both less the triangulation noise, and
        both in the world (``values["step_sigma"]``) and relative to each keypoint's parent
        (``values["step_sigma_parent"]``; :func:`_step_scales`), for ``build_model``'s ``step_frame``.

    Returns
    -------
    Initialization
    """
    skel = skeleton_of(dataset)
    x, agreed = _reconstruct(dataset, threshold_px, skeleton_consistent=True, refine=True, temporal=None,
                             normalize=False)
    T, K, _ = x.shape
    # 2D residuals of the reconstruction: noise scale and inlier fraction per keypoint
    obs = dataset["observations"].values
    resid = np.linalg.norm(project(x, dataset["camera_matrix"].values) - obs, axis=-1)  # (T, C, K)
    seen = np.isfinite(resid)
    inlier = seen & (resid < threshold_px)
    obs_sigma = _pixel_noise(resid, inlier) if inlier.any() else threshold_px / 3
    frac = inlier.sum(axis=(0, 1)) / np.maximum(seen.sum(axis=(0, 1)), 1)
    frac = np.clip(frac, 0.5, 0.98)
    noise = max(obs_sigma, MIN_PIXEL_NOISE)
    noise_camera, noise_keypoint, logodds_ck = _per_pair_observation(resid, seen, inlier, noise, frac)
    # bone lengths and spreads, step sizes: from the reconstruction, less what its own noise adds
    cov = triangulation_covariance(x, dataset["camera_matrix"].values, inlier, noise)
    delta = skel.bone_vectors(x)  # (T, B, 3)
    lengths = np.linalg.norm(delta, axis=-1)
    rho = np.maximum(np.median(lengths, axis=0), 1e-3)
    mad = 1.4826 * np.median(np.abs(lengths - rho), axis=0)
    sigma = np.maximum(_less_noise(mad, _bone_noise_var(delta, cov, skel.bones, skel.bone_parents)), 0.005 * rho)
    if T > 1:
        scale_ref = np.median(rho) if rho.size else 1.0
        step_sigma, step_sigma_parent = (_step_scales(x, agreed, cov, skel.parents, step_dof, scale_ref, relative=rel)
                                         for rel in (False, True))
    else:
        step_sigma = step_sigma_parent = np.ones(K)
    directions = delta / np.maximum(lengths, 1e-12)[..., None]
    states = fit_pose_states(directions, n_states, seed=seed)
    values = {
        "x": x,
        "bone_length": rho,
        "bone_sigma": sigma,
        "step_sigma": step_sigma,
        "step_sigma_parent": step_sigma_parent,
        "obs_sigma": np.asarray(noise),
        "logodds_inlier": np.log(frac / (1 - frac)),
        "log_noise_camera": noise_camera,
        "log_noise_keypoint": noise_keypoint,
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


def _random_walk_map(points: np.ndarray, info: np.ndarray, step_sigma: float) -> np.ndarray:
    """The most probable track ``(T, 3)`` under a Gaussian random walk with step sd ``step_sigma`` given ``points``
    with information matrices ``info`` ``(T, 3, 3)`` (zero where a point says nothing): one sparse
    block-tridiagonal solve."""
    import scipy.sparse as sparse
    from scipy.sparse.linalg import spsolve

    T = points.shape[0]
    w = 1.0 / step_sigma**2
    neighbours = np.full(T, 2.0)
    neighbours[[0, -1]] = 1.0
    # a weak pull towards the points themselves keeps a track without information solvable
    ridge = 1e-9 * w
    blocks = info + (neighbours * w + ridge)[:, None, None] * np.eye(3)
    # frame t's coordinate a is row 3t + a: each coordinate's step to the next frame sits 3 columns off the diagonal
    A = (sparse.block_diag(list(blocks)) + sparse.diags([-w, -w], [-3, 3], shape=(3 * T, 3 * T))).tocsc()
    b = np.einsum("tij,tj->ti", info, points) + ridge * points
    return spsolve(A, b.ravel()).reshape(T, 3)


def start_covariance(init: Initialization, dataset: xr.Dataset, threshold_px: float = 20.0) -> np.ndarray:
    """First-order covariance ``(T, K, 3, 3)`` of the start's points, from the cameras within ``threshold_px`` of
    them at the start's pixel noise (:func:`gimbal.model.cameras.triangulation_covariance`; NaN where fewer than two)."""
    x = np.asarray(init.positions, float)
    P = dataset["camera_matrix"].values
    resid = np.linalg.norm(project(x, P) - dataset["observations"].values, axis=-1)  # (T, C, K)
    with np.errstate(invalid="ignore"):
        inlier = np.isfinite(resid) & (resid < threshold_px)
    return triangulation_covariance(x, P, inlier, float(init.values["obs_sigma"]))


def smoothed_start(init: Initialization, dataset: xr.Dataset, threshold_px: float = 20.0) -> Initialization:
    """``init`` with its tracks made consistent with the temporal prior and the bone lengths it starts from.

    The robust reconstruction jitters from frame to frame by its triangulation noise; where the fitted step sizes are
    far smaller than that noise (an animal that mostly sits still), the random walk prices those jitters at millions
    of log-density units, and warm-up starts far from the typical set. Here each keypoint's track becomes the most
    probable one under the random walk (its ``step_sigma``) given the reconstructed points and their triangulation
    covariance; then every bone is set to its starting length along the smoothed direction, root first. The scales
    are not changed. ``build_model(start="smoothed")`` uses it.
    """
    x = np.asarray(init.positions, float)
    T, K, _ = x.shape
    if T < 2:
        return init
    skel = skeleton_of(dataset)
    cov = start_covariance(init, dataset, threshold_px)
    info = np.zeros_like(cov)
    known = np.isfinite(cov).all(axis=(-1, -2))
    info[known] = np.linalg.inv(cov[known])
    step_sigma = np.broadcast_to(np.asarray(init.values["step_sigma"], float), (K,))
    smooth = np.stack([_random_walk_map(x[:, k], info[:, k], step_sigma[k]) for k in range(K)], axis=1)
    out = smooth.copy()
    rho = np.asarray(init.values["bone_length"], float)
    for b, (child, parent) in enumerate(zip(skel.bones, skel.bone_parents)):  # topological order: parents first
        d = smooth[:, child] - smooth[:, parent]
        out[:, child] = out[:, parent] + rho[b] * d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    return Initialization(positions=out, values={**init.values, "x": out}, pose_states=init.pose_states,
                          center=init.center, triangulation_residual_px=init.triangulation_residual_px,
                          start="smoothed")


def init_point_for(model, init: Initialization) -> dict:
    """The model's initial point with the free variables that ``init`` knows set from it."""
    return value_point(model, init.values)


def value_point(model, values: dict) -> dict:
    """The model's initial point (its value variables) with the free variables in ``values`` (constrained values, by
    variable name) set from them."""
    point = model.initial_point()
    for rv in model.free_RVs:
        if rv.name not in values:
            continue
        value_var = model.rvs_to_values[rv]
        transform = model.rvs_to_transforms.get(rv)
        val = np.asarray(values[rv.name], dtype=value_var.dtype)
        if transform is not None:
            val = transform.forward(pt.as_tensor_variable(val), *rv.owner.inputs).eval()  # some use tensor methods
        point[value_var.name] = np.asarray(val, dtype=value_var.dtype)
    return point


FLAT_GRADIENT = 100 * np.finfo(float).eps  # relative to the largest component: a flat direction up to round-off
FLAT_NUDGE = 0.01  # unconstrained units a variable other than the positions moves off a flat direction


def off_exact_zeros(model, init: Initialization, checker) -> Initialization:
    """``init`` with free positions ``x`` moved off exactly-zero components of the gradient, and the other free
    variables off components that are zero up to round-off.

    nutpie scales its initial mass matrix by 1/|gradient|, so it cannot start where a component is exactly zero. The
    start fills frames no camera saw by linear interpolation, and in the middle of such a gap the random walk's
    pulls from both sides can cancel exactly while no other term moves that coordinate (measured on the real SLEAP
    mouse with 5 frames dropped: frame 12's ``Haunch_left`` x and y, when a keypoint no two cameras see still started
    one bone straight above its parent; :func:`_on_single_rays` removed that case, this guards the others). Each
    such coordinate moves by one random-walk step sd of its keypoint, well inside its prior; the model's initial
    value follows. Where the tracks are sampled whitened (:mod:`gimbal.model.whitening`, same shape as ``x``), the
    zeros are those of the whitened coordinates and the same positions move. Where ``x`` is not free (non-centered
    root) its free parts count among the other variables below.

    Any other variable whose gradient component is at most ``FLAT_GRADIENT`` times the largest one moves by
    ``FLAT_NUDGE`` in its unconstrained space. Such a component is zero but for round-off: the transition rows of a
    pose state that no frame of a short recording visits sit at their Dirichlet prior's mode, where the HMM adds
    nothing (on 5 frames of ``rodent18_realistic``: components of 1e-16 that the summation order of a run makes
    exactly 0 or not, so that the start gate refused one cold test run and passed the next).

    Parameters
    ----------
    model : pymc.Model
        Built from ``init`` (:func:`gimbal.model.build.build_model`).
    init : Initialization
    checker : gimbal.diagnostics.checks.LogpGrad
        The model's compiled log density and gradient.
    """
    point = init_point_for(model, init)
    grad = checker.dlogp(checker.flatten(point))
    flat_below = FLAT_GRADIENT * max(1.0, float(np.nanmax(np.abs(grad))) if np.isfinite(grad).any() else 1.0)
    rv = next((v for v in model.free_RVs if v.name == "x"), None)
    free_x = rv is not None and isinstance(model.rvs_to_transforms.get(rv), (type(None), TrackWhitening))
    values, offset = dict(init.values), 0
    rv_of = {model.rvs_to_values[v].name: v for v in model.free_RVs}
    for name, _, size, _ in checker.template.point_map_info:
        g, offset = grad[offset:offset + size], offset + size
        var = rv_of[name]
        if var.name == "x":
            zero = np.flatnonzero(g == 0.0) if free_x else np.empty(0, int)
            if zero.size:
                x = np.array(values["x"], dtype=float)
                step = np.broadcast_to(np.asarray(values["step_sigma"], float), (x.shape[1],))
                x.reshape(-1)[zero] += step[np.unravel_index(zero, x.shape)[1]]
                model.set_initval(var, x)
                values["x"] = x
            continue
        flat = np.abs(g) <= flat_below  # NaN compares False: left to check_initial_point
        if not flat.any():
            continue
        moved = np.array(point[name], dtype=float)
        moved.reshape(-1)[flat] += FLAT_NUDGE
        transform = model.rvs_to_transforms.get(var)
        value = moved if transform is None else transform.backward(moved, *var.owner.inputs).eval()
        model.set_initval(var, value)
        if var.name in values:
            values[var.name] = value
    if all(values[k] is init.values[k] for k in init.values):
        return init
    return replace(init, positions=values["x"], values=values)


def check_initial_point(model, point=None, checker=None) -> None:
    """Raise :class:`InitializationError` where nutpie would refuse to start from ``point``.

    That is: a non-finite log-density term, a non-finite gradient, or a gradient component that is exactly zero
    (nutpie scales its initial mass matrix by 1/|gradient|); each problem names its variables. ``checker``: the
    model's compiled :class:`gimbal.diagnostics.checks.LogpGrad`, where the caller has one.
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
    grad = gradient_report(checker or compile_logp_and_grad(model, point), point)
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
