"""The observation model: how 2D detections depend on the 3D keypoints.

Every detection ``y[t, c, k]`` is either an inlier, Gaussian around the projection of ``x[t, k]`` into
camera ``c`` with noise ``omega`` pixels, or an outlier, with inlier probability ``sigmoid(logodds)``.
Three choices shape it (:class:`~gimbal.model.build.ModelConfig`):

* ``observation`` - ``"shared"``: one noise ``obs_sigma`` for every camera and keypoint and one inlier
  log-odds per keypoint (``logodds_inlier``); ``"camera_keypoint"``: both per (camera, keypoint). The inlier
  log-odds ``logodds_inlier_ck`` is free per pair, pooled towards its keypoint's ``logodds_inlier`` with a fixed
  spread (:data:`LOGODDS_POOL_SD`), so that a pair with few detections stays near its keypoint's value and a pair
  a detector nearly always gets wrong can still reach a 95% outlier rate. The noise ``obs_sigma_ck`` is
  ``obs_sigma * exp(log_noise_camera[c] + log_noise_keypoint[k])``: a camera factor (resolution, distance, blur)
  times a keypoint factor (how sharp the landmark is), each zero-sum with spread :data:`NOISE_POOL_SD`
  (``log_noise_camera_free``, ``log_noise_keypoint_free``: the factors' coordinates in a zero-sum basis). A noise
  free per pair does not converge: for a pair the detector mostly gets wrong, "many outliers and a small noise"
  and "fewer outliers and a large noise" explain its detections equally well, and chains settle in either (R-hat
  1.5 on ``rodent18_realistic``); the factors are pinned by every pair of their camera or keypoint. The spreads
  are fixed, not learned: a learned spread jointly with the values it spreads is a funnel. The pair's noise
  never falls below :data:`NOISE_FLOOR_PX` (added in quadrature): any one camera's residuals can be zeroed by
  putting every point on its rays, so without a floor the likelihood grows without bound as that camera's noise
  shrinks, and where the positions are free enough to follow (Student-t steps, two good views) chains run off
  towards it (DeepFly3D with ``cam5`` held out: ``cam4``'s factor fell to exp(-2.84), 0.2 px, R-hat 2.2). The floor
  is not enough where few frames leave the points free (the real multi-view session, 3 frames: ``top`` at 0.18x
  the shared noise), so by default (``camera_noise="floored"``) each camera's factor is also kept above its
  held-out estimate (:mod:`gimbal.model.camera_noise`); it can still rise above it (a camera worse than its
  residuals show: a broken calibration).
* ``outlier_model`` - the outlier class: ``"uniform"`` over the camera's image (the seed's), ``"gaussian"``
  around the projection with standard deviation :data:`OUTLIER_SD_FRACTION` of the image diagonal (the
  original GIMBAL's wide Gaussian: a wrong detection is usually on or near the animal), or ``"student_t"``
  (no classes, one heavy-tailed likelihood; plain graph only).
* ``confidence`` - the detector's score as a covariate of the inlier log-odds:
  ``logodds[t, c, k] = logodds[c, k] + confidence_slope * z[t, c, k]`` with ``z`` the centred logit of the
  score (:func:`confidence_covariate`); the slope is learned, so a score that says nothing gets a slope near 0.

Missing detections contribute exactly 0 (masked, never multiplied by NaN).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr
from scipy.special import gammaln

from ._inputs import data_input as _data
from .cameras import split_missing
from .kernels import observation_logp

__all__ = [
    "NOISE_POOL_SD",
    "NOISE_FLOOR_PX",
    "FLOOR_WALL_SD",
    "FLOOR_WALL_SOFTNESS",
    "LOGODDS_POOL_SD",
    "OUTLIER_SD_FRACTION",
    "STUDENT_T_DOF",
    "has_scores",
    "zero_sum_basis",
    "confidence_covariate",
    "outlier_scale",
    "observation_parameters",
    "observation_loglik",
    "project_points",
    "student_t_2d_logp",
]

NOISE_POOL_SD = 0.5  # spread of the camera and keypoint factors of the log noise: each within ~x2.7 of the shared one
LOGODDS_POOL_SD = 2.0  # sd of logodds_inlier_ck around logodds_inlier[k]: outlier rates 5%-95% stay within reach
NOISE_FLOOR_PX = 0.5  # the inlier noise sd of a (camera, keypoint) pair is at least this (pixels)
FLOOR_WALL_SD = 0.05  # below its floor a camera's log noise factor pays a half-Gaussian of this sd (a 5% wall)
FLOOR_WALL_SOFTNESS = 0.005  # the wall's corner at the floor, rounded over this width: its curvature is continuous
OUTLIER_SD_FRACTION = 0.125  # the Gaussian outlier class's sd, as a fraction of the image diagonal (~200 px at 1280x1024)
STUDENT_T_DOF = 3.0  # heavy enough that a detection 100 sigma away pulls like an inlier 0.05 sigma off
_CONFIDENCE_CLIP = 1e-3  # scores are clipped to [clip, 1 - clip] before the logit (SLEAP's can exceed 1)


def has_scores(dataset: xr.Dataset) -> bool:
    """Whether the dataset carries detector scores (a ``confidence`` variable with at least one value)."""
    return "confidence" in dataset and bool(np.isfinite(dataset["confidence"].values).any())


def confidence_covariate(dataset: xr.Dataset) -> np.ndarray:
    """The detector's scores as a covariate of the inlier log-odds, shape ``(T, C, K)``.

    The logit of the score (clipped to ``[0.001, 0.999]``), minus its mean over the detections that have one;
    0 where there is no score or no detection. Raises ``ValueError`` when the dataset has no scores.
    """
    if not has_scores(dataset):
        raise ValueError(
            "confidence=True needs the detector's scores (a 'confidence' variable); this dataset has none. "
            "Import the detections with `gimbal import` from files that carry scores, or leave confidence off."
        )
    conf = dataset["confidence"].values.astype(float)
    seen = split_missing(dataset["observations"].values)[1] & np.isfinite(conf)
    p = np.clip(np.where(seen, conf, 0.5), _CONFIDENCE_CLIP, 1 - _CONFIDENCE_CLIP)
    z = np.log(p) - np.log1p(-p)
    z = np.where(seen, z - z[seen].mean(), 0.0)
    return z


def outlier_scale(dataset: xr.Dataset, outlier_model: str) -> np.ndarray:
    """The outlier class's parameter per camera, shape ``(C, 1)``: its log density (uniform) or sd in pixels."""
    size = dataset["image_size"].values.astype(float)  # (C, 2) width, height
    if outlier_model == "gaussian":
        return (OUTLIER_SD_FRACTION * np.hypot(size[:, 0], size[:, 1]))[:, None]
    return -np.log(size.prod(axis=-1))[:, None]


def zero_sum_basis(n: int) -> np.ndarray:
    """An ``(n, n - 1)`` matrix whose orthonormal columns span the vectors that sum to zero (Helmert's contrasts)."""
    basis = np.zeros((n, n - 1))
    for j in range(1, n):
        basis[:j, j - 1] = 1.0
        basis[j, j - 1] = -j
        basis[:, j - 1] /= np.sqrt(j * (j + 1))
    return basis


def _zero_sum_normal(name: str, initval: np.ndarray, dim: str):
    """``name`` (dims ``dim``): isotropic Normal(0, NOISE_POOL_SD) on the zero-sum vectors, ``n - 1`` free values.

    The same distribution as :class:`pymc.ZeroSumNormal`, written as a fixed basis times free values so that the
    graph is a matrix product (PyMC's transform slices by a symbolic length, which JAX cannot trace). The basis is
    a shared input, not a constant, so that one compiled function serves every recording.
    """
    initval = np.asarray(initval, float)
    if initval.size < 2:  # one camera or keypoint: its factor is 0
        return pm.Deterministic(name, pt.zeros(initval.size), dims=dim)
    basis = zero_sum_basis(initval.size)
    free = pm.Normal(f"{name}_free", 0.0, NOISE_POOL_SD, shape=initval.size - 1, initval=basis.T @ initval)
    return pm.Deterministic(name, pt.dot(_data(basis, f"{name}_basis"), free), dims=dim)


def observation_parameters(dataset: xr.Dataset, init, config, noise_floor=None):
    """The noise ``(C, K)``-broadcastable, the inlier log-odds ``(T, C, K)``-broadcastable, as model variables.

    ``noise_floor`` ``(C,)``: a floor under the cameras' sampled log noise factors (:mod:`gimbal.model.camera_noise`):
    the factors start there, and below it each pays a half-Gaussian wall of sd :data:`FLOOR_WALL_SD` (a wall, not a
    maximum: a maximum leaves a factor below its floor without a likelihood, a flat region that mixed slowly), its
    corner rounded over :data:`FLOOR_WALL_SOFTNESS` (the start sits on it: a corner breaks finite-difference checks of
    the gradient there); None: no floor. Returns ``(omega, logodds)``; ``logodds`` is None without the two-class mixture.
    """
    omega0 = float(init.values["obs_sigma"])
    omega = pm.LogNormal("obs_sigma", mu=pt.log(_data(omega0, "obs_sigma_prior")), sigma=1.0, initval=omega0)
    per_pair = config.observation == "camera_keypoint"
    if per_pair:
        if noise_floor is None:
            camera = _zero_sum_normal("log_noise_camera", init.values["log_noise_camera"], "camera")
        else:  # sampled from the floor up; below it a steep half-Gaussian wall
            camera = _zero_sum_normal("log_noise_camera", noise_floor, "camera")
            floor = _data(np.asarray(noise_floor, float), "log_noise_camera_floor")
            below = FLOOR_WALL_SOFTNESS * pt.softplus((floor - camera) / FLOOR_WALL_SOFTNESS)  # a smooth max(floor - f, 0)
            pm.Potential("camera_noise_floor", -0.5 * pt.sum(below**2) / FLOOR_WALL_SD**2)
        keypoint = _zero_sum_normal("log_noise_keypoint", init.values["log_noise_keypoint"], "keypoint")
        factored = omega * pt.exp(camera[:, None] + keypoint[None, :])
        omega = pm.Deterministic("obs_sigma_ck", pt.sqrt(NOISE_FLOOR_PX**2 + factored**2), dims=("camera", "keypoint"))
    if not config.use_mixture or config.outlier_model == "student_t":
        return omega, None
    logodds = pm.Normal("logodds_inlier", mu=2.0, sigma=1.5, dims="keypoint", initval=init.values["logodds_inlier"])
    if per_pair:
        logodds = pm.Normal("logodds_inlier_ck", mu=logodds[None, :], sigma=LOGODDS_POOL_SD, dims=("camera", "keypoint"),
                            initval=init.values["logodds_inlier_ck"])
    if config.confidence:
        z = _data(confidence_covariate(dataset), "confidence_covariate", per_frame=True)
        slope = pm.Normal("confidence_slope", mu=0.0, sigma=2.0, initval=init.values.get("confidence_slope", 0.5))
        logodds = (logodds[None, None, :] if logodds.ndim == 1 else logodds[None]) + slope * z
    return omega, logodds


def project_points(x, cameras):
    """Project ``(T, K, 3)`` points with ``(C, 3, 4)`` cameras (an array or a tensor) to ``(T, C, K, 2)`` pixels."""
    P = pt.as_tensor_variable(cameras)
    homog = pt.tensordot(x, P[:, :, :3], axes=[[2], [2]]) + P[:, :, 3]  # (T, K, C, 3)
    homog = homog.dimshuffle(0, 2, 1, 3)
    return homog[..., :2] / homog[..., 2:3]


def student_t_2d_logp(resid2, scale, dof: float = STUDENT_T_DOF):
    """Log density of an isotropic bivariate Student-t at squared distance ``resid2`` from its centre.

    ``scale`` is the per-axis scale (pixels); ``dof`` the degrees of freedom.
    """
    if not isinstance(scale, pytensor.graph.basic.Variable):
        scale = np.asarray(scale, dtype=float)  # a Python float would become a float32 constant
    const = gammaln((dof + 2) / 2) - gammaln(dof / 2) - np.log(dof * np.pi)
    return const - 2 * pt.log(scale) - (dof + 2) / 2 * pt.log1p(resid2 / (dof * scale**2))


def _gaussian_2d_logp(resid2, scale):
    return -0.5 * resid2 / scale**2 - 2 * pt.log(scale) - np.log(2 * np.pi)


def observation_loglik(x, dataset: xr.Dataset, init, config, offsets=None, noise_floor=None):
    """Per-frame log-likelihood of the 2D detections, shape ``(T,)`` (see the module's description).

    ``offsets`` ``(C, K, 2)``: pixels taken off each (camera, keypoint) pair's detections (a detector's systematic
    offset, :mod:`gimbal.model.offsets`); none by default. ``noise_floor`` ``(C,)``: the floor under the cameras' log
    noise factors (:func:`observation_parameters`).
    """
    filled, seen_mask = split_missing(dataset["observations"].values)
    if offsets is not None:
        filled = np.where(seen_mask[..., None], filled - np.asarray(offsets, float)[None], filled)
    y = _data(filled, "observations_filled", per_frame=True)
    seen = _data(seen_mask, "observations_seen", "bool", per_frame=True)
    cameras = _data(dataset["camera_matrix"].values, "camera_matrix")
    omega, logodds = observation_parameters(dataset, init, config, noise_floor)
    student_t = config.use_mixture and config.outlier_model == "student_t"
    mixture = config.use_mixture and not student_t
    outlier = _data(outlier_scale(dataset, config.outlier_model), "outlier_scale")  # (C, 1)
    if config.kernels == "fused":
        kind = config.outlier_model if mixture else "none"
        return observation_logp(x, omega, pt.zeros(()) if logodds is None else logodds, cameras, y, outlier, kind,
                                seen=seen)
    if omega.ndim == 2:
        omega = omega[None]  # (1, C, K) against the (T, C, K) residuals
    if logodds is not None and logodds.ndim == 1:
        logodds = logodds[None, None, :]
    elif logodds is not None and logodds.ndim == 2:
        logodds = logodds[None]
    resid2 = pt.sum((project_points(x, cameras) - y) ** 2, axis=-1)  # (T, C, K)
    if student_t:
        per_obs = student_t_2d_logp(resid2, omega)
    elif mixture:
        if config.outlier_model == "gaussian":
            out = _gaussian_2d_logp(resid2, outlier[None])
        else:
            out = outlier[None]
        per_obs = pt.logaddexp(-pt.softplus(-logodds) + _gaussian_2d_logp(resid2, omega), -pt.softplus(logodds) + out)
    else:
        per_obs = _gaussian_2d_logp(resid2, omega)
    return pt.where(seen, per_obs, 0.0).sum(axis=(1, 2))
