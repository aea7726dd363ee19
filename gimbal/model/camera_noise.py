"""Each camera's pixel noise, relative to the others, from its residuals against the other cameras' point.

The per-(camera, keypoint) observation model's noise is ``obs_sigma * exp(log_noise_camera[c] +
log_noise_keypoint[k])`` (:mod:`gimbal.model.observation`). Sampled, the camera factors have a direction that the
data do not bound: any one camera's residuals can be zeroed by putting every point on that camera's rays (a point has
three coordinates, one camera's detection pins two), so the likelihood keeps rising as that camera's noise shrinks
until the noise floor stops it, and the posterior then follows that camera where least squares would average all of
them. Sampled on real recordings, the factors did exactly that:

* the SLEAP multi-view session (8 cameras, 3 frames), ``midL`` held out: ``top`` at 0.18x the shared noise (0.6 px)
  and ``sideL`` at 4.1x, where the residuals against the other cameras' point (all eight cameras, medians) are
  3.6 px for ``top`` and 3.2-4.3 px for ``backL``, ``mid``, ``midL`` and ``topL``;
* the SLEAP + Anipose mouse (4 cameras, 120 frames), ``back`` held out: ``mid`` at 0.39x (0.8 px) and ``top`` at
  0.79x, where their residuals against the other cameras (all four) are the same (6.1 px median each).

A held-out residual cannot be zeroed that way. :func:`cross_validated_camera_noise` estimates each camera's factor
from its held-out residuals: for each detection an inlier of the start (within ``threshold_px``) and each keypoint at
least :data:`MIN_OTHER_CAMERAS` other inlier cameras see, the point is re-fitted to the other cameras (one
Gauss-Newton step from the start, equal weights) and the detection's squared distance to its projection is its
camera's sample; ``log E|e|^2 / 2 = 2 (s + camera[c] + keypoint[k])`` is fitted by alternating weighted means (the
keypoint factors only so that a camera that sees the hard keypoints does not look noisy). The other cameras' own
error is part of every sample, which pulls the factors towards each other (six simulated cameras of 1-4 px: 0.68-0.84
for the 1 px cameras against 0.66 true, 1.96 for the 4 px one against 2.64): the estimate errs towards equal cameras.
Factors are clipped to +-3 x ``NOISE_POOL_SD`` (as the start's) and centred (zero sum).

The model (``build_model(camera_noise="floored")``, the default) keeps each sampled factor above this estimate, not at
it: fixed at the estimate (a first version, within 0.04 of these factors), the real mouse's held-out
``mid`` / ``side`` / ``top`` went from 0.63 / 0.80 / 0.65 of triangulation to 0.79 / 0.99 / 1.00. Its ``side`` camera has
a broken calibration, a systematic error that the sampled factor finds (3.3x the shared noise with ``back`` held out,
against 1.8x from the held-out residuals) and a residual-based noise estimate does not. The floor lets a factor rise
to that and stops it falling onto one camera's rays: below it the factor pays a steep half-Gaussian wall
(:data:`~gimbal.model.observation.FLOOR_WALL_SD`).
"""

from __future__ import annotations

import numpy as np

from .cameras import detections_and_start, project, projection_jacobian
from .observation import NOISE_POOL_SD

__all__ = ["MIN_OTHER_CAMERAS", "cross_validated_camera_noise"]

MIN_OTHER_CAMERAS = 2  # a detection counts where at least this many other cameras place the point (two rays cross)
_CHUNK = 512  # frames per batch (memory: chunk x K x C x 2 x 3 doubles for the Jacobian)
_SWEEPS = 10


def cross_validated_camera_noise(observations, cameras, positions, threshold_px: float = 20.0) -> np.ndarray:
    """Each camera's log noise factor ``(C,)`` (zero sum) from its residuals against the other cameras' point.

    Parameters
    ----------
    observations : (T, C, K, 2) array
        Detections; NaN where missing.
    cameras : (C, 3, 4) array
        Projection matrices.
    positions : (T, K, 3) array
        The start (the robust reconstruction); NaN where unknown.
    threshold_px : float
        A detection farther than this from the start's projection is an outlier and is not counted.

    Returns
    -------
    ndarray
        ``log_noise_camera``: 0 for every camera where none has a held-out residual (fewer than
        ``MIN_OTHER_CAMERAS + 1`` cameras ever see a keypoint as an inlier); a camera without one gets 0 before
        centring.
    """
    obs, P, x = detections_and_start(observations, cameras, positions)
    T, C, K, _ = obs.shape
    sum_sq, count = np.zeros((K, C)), np.zeros((K, C))
    for start in range(0, T, _CHUNK):
        frames = slice(start, start + _CHUNK)
        s, n = _heldout_sums(obs[frames], P, x[frames], threshold_px)
        sum_sq += s
        count += n
    return _factors(sum_sq, count)


def _heldout_sums(obs, P, x, threshold_px):
    """Per (keypoint, camera): the sum of the held-out residuals' squared lengths and how many there are."""
    resid = np.moveaxis(obs - project(x, P), 1, 2)  # (T, K, C, 2)
    with np.errstate(invalid="ignore"):
        used = np.linalg.norm(resid, axis=-1) < threshold_px  # NaN (missing, start unknown) compares False
    _, J = projection_jacobian(np.nan_to_num(x), P)  # (T, K, C, 2, 3)
    J = np.where(used[..., None, None], np.nan_to_num(J), 0.0)
    r = np.where(used[..., None], np.nan_to_num(resid), 0.0)
    normal = np.einsum("tkcai,tkcaj->tkij", J, J)
    gradient = np.einsum("tkcai,tkca->tki", J, r)
    sum_sq, count = np.zeros(used.shape[1:]), np.zeros(used.shape[1:])
    for c in range(P.shape[0]):
        Jc, rc = J[:, :, c], r[:, :, c]
        good = used[..., c] & (used.sum(axis=-1) - 1 >= MIN_OTHER_CAMERAS)
        others = normal - np.einsum("tkai,tkaj->tkij", Jc, Jc)
        others[~good] = np.eye(3)
        rhs = np.where(good[..., None], gradient - np.einsum("tkai,tka->tki", Jc, rc), 0.0)
        shift = np.linalg.solve(others, rhs[..., None])[..., 0]
        e = rc - np.einsum("tkai,tki->tka", Jc, shift)  # the detection less the other cameras' point's projection
        sum_sq[:, c] = np.where(good, (e**2).sum(axis=-1), 0.0).sum(axis=0)
        count[:, c] = good.sum(axis=0)
    return sum_sq, count


def _factors(sum_sq: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``log mean |e|^2 / 2`` per (keypoint, camera) as ``2 (s + keypoint[k] + camera[c])``: the camera factors."""
    C = sum_sq.shape[1]
    if count.sum() == 0:
        return np.zeros(C)
    scale = sum_sq.sum() / count.sum()
    camera, keypoint = np.zeros(C), np.zeros(sum_sq.shape[0])
    by_camera, by_keypoint = count.sum(axis=0), count.sum(axis=1)
    for _ in range(_SWEEPS):
        with np.errstate(divide="ignore", invalid="ignore"):
            camera = 0.5 * np.log((sum_sq / np.exp(2 * keypoint)[:, None]).sum(axis=0) / by_camera / scale)
            camera = np.where(by_camera > 0, camera, 0.0)
            camera -= camera.mean()
            keypoint = 0.5 * np.log((sum_sq / np.exp(2 * camera)[None, :]).sum(axis=1) / by_keypoint / scale)
            keypoint = np.where(by_keypoint > 0, keypoint, 0.0)
            keypoint -= keypoint.mean()
    bound = 3 * NOISE_POOL_SD
    camera = np.clip(np.nan_to_num(camera), -bound, bound)
    return camera - camera.mean()
