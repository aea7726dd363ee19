"""Systematic detector offsets: a (camera, keypoint) pair whose detector marks a point a few pixels off the joint.

A detector trained on one view's labels can mark, in every frame, a point beside the joint (the skin over a knee
seen from one side): a bias, not an outlier, so the inlier/outlier mixture does not remove it. Triangulation then
pulls each 3D point towards that camera's ray and leaves residuals in every camera. On ``rodent18_realistic`` (10% of
pairs 4-8 px off) removing the true offsets took the default model's posterior-mean error from 1.94 to 1.63 mm at
T = 1800; whether the outliers were known changed it by 0.02 mm.

:func:`estimate_offsets` estimates each pair's offset ``o[c, k]`` (pixels) from the start's residuals: per keypoint,

    minimize  1/2 sum_t (r_t - o)' Q_t (r_t - o)  +  sum_c |o_c| / scale

with ``r_t`` the frame's residuals over the cameras that see the keypoint as an inlier and ``Q_t`` the weighted
residual projector ``W - W J (J' W J)^-1 J' W`` (``J`` the projection's Jacobian at the start, ``W`` the inverse
noise variances): a 3D shift of the point costs nothing. A constant offset cannot be told from a 3D shift within
one frame; across frames the Jacobians change, and the penalty, the sum of each camera's offset length (a group
lasso: a Laplace prior of scale ``scale`` pixels on each pair's offset), prefers one camera off over several
cameras off in a pattern that mimics a shift. It is solved by iteratively reweighted least squares.

Measured on ``rodent18_realistic`` (offsets 2.52 px rms over all pairs), from the start the model uses: T = 1800, the
estimate is 0.59 px rms from the truth, pairs without offset get 0.16 px (median); least squares on the true inliers
with the estimated offsets removed, 1.99 / 3.40 mm mean / p90, with the true ones 1.98 / 3.38, without 2.24 / 3.73.
T = 100: 1.34 px rms, 2.02 / 3.48 against 1.99 / 3.47. A prior scale of 0.3 or 3 px instead of 1 changed those 3D
errors by at most 0.03 mm (an earlier version of the estimate, every frame with 3 cameras counted).

Only frames where at least :data:`OFFSET_MIN_CAMERAS` (5) cameras see the keypoint as an inlier count. With three,
the sparsest explanation is close to a coin toss between cameras, and on real recordings it did harm: the
real SLEAP + Anipose mouse (4 cameras, 3 in each leave-one-camera-out fit) with frames of 3 cameras counted moved the
held-out reprojection ratios from 1.05 / 0.63 / 0.80 / 0.65 to 1.07 / 1.08 / 1.04 / 1.04 (on all four cameras that
rule estimates up to 33 px on tail points, where the detectors disagree in ways no constant offset describes), and an
earlier estimator made DeepFly3D's ``cam2`` worse (1.06 to 1.17). On those rigs no pair qualifies (on DeepFly3D no
keypoint is an inlier in 5 of the 7 cameras in 10 frames), and the estimate is 0 everywhere: the model is the one
without offsets. Four is left out too without a measurement of its own (the mouse's full fit would be such a case).

``build_model(offsets="estimated")`` (the default) subtracts the estimate from the detections the model sees; the
estimate is a fixed input (as the original GIMBAL fixes its scales from data), not sampled: a free offset would
move along the shift direction only with every frame's position at once, which the sampler cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import detections_and_start, project, projection_jacobian

__all__ = ["OFFSET_SCALE_PX", "OFFSET_MIN_CAMERAS", "OFFSET_INLIER_SD", "OFFSET_MIN_FRAMES", "OFFSET_REPORT_PX",
           "DetectorOffset", "estimate_offsets", "largest_offsets"]

OFFSET_SCALE_PX = 1.0  # the Laplace prior's scale on a pair's offset length (pixels)
OFFSET_MIN_CAMERAS = 5  # a frame counts for a keypoint where at least this many cameras see it as an inlier: one
# camera off stands against four or more that agree (with three, "one off" and "the other two off" explain the same
# residuals about equally well, and on the real mouse it did harm: see the module's description)
OFFSET_INLIER_SD = 6.0  # a detection is an inlier within this many of its camera's robust residual sds
OFFSET_MIN_FRAMES = 10  # a pair's offset is estimated from at least this many frames (fewer: 0, as for the
# import's offset list): a few frames' mean residual is noise, not a bias
OFFSET_REPORT_PX = 1.0  # offsets at least this long are reported (a fit's summary)
_CHUNK = 512  # frames per batch of the projector sums (memory: chunk x K x (2C)^2 doubles)
_SWEEPS = 100


def estimate_offsets(observations, cameras, positions, *, scale_px: float = OFFSET_SCALE_PX) -> np.ndarray:
    """Each (camera, keypoint) pair's systematic detection offset, shape ``(C, K, 2)`` pixels.

    Parameters
    ----------
    observations : (T, C, K, 2) array
        Detections; NaN where missing.
    cameras : (C, 3, 4) array
        Projection matrices.
    positions : (T, K, 3) array
        A start whose residuals the offsets explain (the robust triangulation); NaN where unknown.
    scale_px : float
        The Laplace prior's scale on each pair's offset length (see the module's description).

    Returns
    -------
    ndarray
        ``o[c, k]``: the detections of camera ``c`` for keypoint ``k`` sit this far from the joint's projection on
        average; 0 where the data do not show one, and for a pair that is an inlier in fewer than
        :data:`OFFSET_MIN_FRAMES` frames where at least :data:`OFFSET_MIN_CAMERAS` cameras see the keypoint as one.
    """
    obs, P, x = detections_and_start(observations, cameras, positions)
    if not (np.isfinite(scale_px) and scale_px > 0):
        raise ValueError(f"scale_px must be a positive number of pixels, got {scale_px!r}.")
    T, C, K, _ = obs.shape
    resid = obs - project(x, P)  # (T, C, K, 2)
    inlier, sd = _inliers(resid)
    A = np.zeros((K, 2 * C, 2 * C))
    b = np.zeros((K, 2 * C))
    frames_used = np.zeros((K, C), int)
    for start in range(0, T, _CHUNK):
        frames = slice(start, start + _CHUNK)
        a, v, n = _projector_sums(resid[frames], inlier[frames], x[frames], P, sd)
        A += a
        b += v
        frames_used += n
    per_keypoint = np.zeros((K, 2 * C))
    for k in range(K):
        free = np.repeat(frames_used[k] >= OFFSET_MIN_FRAMES, 2)
        if free.any():
            per_keypoint[k, free] = _group_lasso(A[k][np.ix_(free, free)], b[k, free], scale_px)
    return np.swapaxes(per_keypoint.reshape(K, C, 2), 0, 1)


def _inliers(resid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T, C, K)``: detections within :data:`OFFSET_INLIER_SD` robust sds of their camera's residuals, and each
    camera's robust residual sd per axis ``(C,)`` (the median absolute residual: the outliers barely move it)."""
    length = np.linalg.norm(resid, axis=-1)  # NaN where missing or the start unknown
    inlier = np.zeros(length.shape, bool)
    sd = np.ones(length.shape[1])
    for c in range(length.shape[1]):
        r = resid[:, c][np.isfinite(length[:, c])]
        if r.size == 0:
            continue
        sd[c] = max(1.4826 * float(np.median(np.abs(r))), 1e-6)
        with np.errstate(invalid="ignore"):
            inlier[:, c] = length[:, c] < OFFSET_INLIER_SD * sd[c]
    return inlier, sd


def _projector_sums(resid, inlier, x, P, sd):
    """Per keypoint, ``sum_t Q_t`` ``(K, 2C, 2C)`` and ``sum_t Q_t r_t`` ``(K, 2C)`` over the frames where at least
    :data:`OFFSET_MIN_CAMERAS` cameras see it as an inlier, each camera weighted by its inverse noise variance, and
    how many frames each (keypoint, camera) counts in ``(K, C)``."""
    T, C, K, _ = resid.shape
    used = np.moveaxis(inlier, 1, 2) & np.isfinite(x).all(axis=-1)[..., None]  # (T, K, C)
    used &= (used.sum(axis=-1) >= OFFSET_MIN_CAMERAS)[..., None]
    with np.errstate(invalid="ignore"):
        _, J = projection_jacobian(np.nan_to_num(x), P)  # (T, K, C, 2, 3)
    w = np.repeat(used / sd**2, 2, axis=-1)  # (T, K, 2C): 0 for a camera not used
    J = np.nan_to_num(J.reshape(T, K, 2 * C, 3))
    WJ = w[..., None] * J
    normal = np.einsum("tkai,tkaj->tkij", J, WJ)
    normal[~used.any(axis=-1)] = np.eye(3)  # a frame without enough cameras adds nothing (its w is 0)
    Q = w[..., :, None] * np.eye(2 * C) - WJ @ np.linalg.solve(normal, np.swapaxes(WJ, -1, -2))  # (T, K, 2C, 2C)
    r = np.where(w > 0, np.nan_to_num(np.moveaxis(resid, 1, 2).reshape(T, K, 2 * C)), 0.0)
    return Q.sum(axis=0), np.einsum("tkab,tkb->ka", Q, r), used.sum(axis=0)


def _group_lasso(A: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """``argmin 1/2 o'Ao - b'o + sum_c |o_c| / scale`` over ``o`` in pairs of coordinates, ``(2C,)``, by iteratively
    reweighted least squares from the least-squares solution."""
    n = A.shape[0]
    o = np.linalg.lstsq(A + 1e-9 * np.eye(n), b, rcond=None)[0]
    for _ in range(_SWEEPS):
        length = np.maximum(np.linalg.norm(o.reshape(-1, 2), axis=1), 1e-6)
        o = np.linalg.solve(A + np.diag(np.repeat(1.0 / (scale * length), 2)), b)
    length = np.linalg.norm(o.reshape(-1, 2), axis=1)
    o.reshape(-1, 2)[length < 1e-3] = 0.0  # reweighting drives a pair the data do not call for towards 0
    return o


@dataclass(frozen=True)
class DetectorOffset:
    """One (camera, keypoint) pair's estimated offset: its detections sit ``(du_px, dv_px)`` from the joint."""

    camera: str
    keypoint: str
    du_px: float
    dv_px: float
    length_px: float


def largest_offsets(offsets, cameras, keypoints, min_px: float = OFFSET_REPORT_PX) -> list[DetectorOffset]:
    """The pairs whose offset ``(C, K, 2)`` is at least ``min_px`` long, largest first, with their names."""
    offsets = np.asarray(offsets, float)
    length = np.linalg.norm(offsets, axis=-1)
    pairs = sorted(zip(*np.nonzero(length >= min_px)), key=lambda ck: -length[ck])
    return [DetectorOffset(str(cameras[c]), str(keypoints[k]), float(offsets[c, k, 0]), float(offsets[c, k, 1]),
                           float(length[c, k])) for c, k in pairs]
