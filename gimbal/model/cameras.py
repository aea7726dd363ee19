"""Pinhole cameras: projection and DLT triangulation (numpy only).

Conventions: a camera is a 3x4 matrix ``P = K [R | t]`` mapping homogeneous world
points to homogeneous pixels; a stack of ``C`` cameras is a ``(C, 3, 4)`` array.
2D observations are pixels, ``NaN`` where a camera did not see a point. No lens
distortion is modelled: undistort detections before using them.
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import numpy as np

__all__ = [
    "split_missing",
    "detections_and_start",
    "intrinsics",
    "look_at",
    "camera_matrix",
    "project",
    "triangulate_dlt",
    "triangulate_robust",
    "triangulate_least_squares",
    "triangulation_candidates",
    "Candidates",
    "triangulation_covariance",
    "refine_triangulation",
    "projection_jacobian",
    "select_candidates",
    "reprojection_error",
    "camera_centres",
    "ray_directions",
]


def detections_and_start(observations, cameras, positions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``observations`` ``(T, C, K, 2)``, ``cameras`` ``(C, 3, 4)`` and a start's ``positions`` ``(T, K, 3)`` as float
    arrays; ``ValueError`` naming the shapes where they do not fit together."""
    obs = np.asarray(observations, float)
    P = np.asarray(cameras, float)
    x = np.asarray(positions, float)
    if obs.ndim != 4 or obs.shape[-1] != 2 or x.shape != (obs.shape[0], obs.shape[2], 3):
        raise ValueError(f"observations must be (T, C, K, 2) and positions (T, K, 3); got {obs.shape} and {x.shape}.")
    return obs, P, x


def split_missing(observations) -> tuple[np.ndarray, np.ndarray]:
    """Detections with missing entries filled, and the mask of seen ones.

    Parameters
    ----------
    observations : array_like, shape (..., 2)
        Pixel coordinates, NaN where a keypoint was not detected.

    Returns
    -------
    filled : ndarray, shape (..., 2)
        ``observations`` with every missing entry set to 0 (a finite placeholder
        that the likelihood masks out; never multiplied by a NaN).
    seen : ndarray of bool, shape (...)
        True where both coordinates are finite.
    """
    obs = np.asarray(observations, dtype=float)
    seen = np.all(np.isfinite(obs), axis=-1)
    return np.where(seen[..., None], obs, 0.0), seen


def intrinsics(focal: float, cx: float, cy: float) -> np.ndarray:
    """Intrinsic matrix with square pixels and no skew."""
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def look_at(center, target, up=(0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation of a camera at ``center`` looking at ``target``.

    The camera's z axis points at the target, its y axis points "down" in the
    image (OpenCV convention), so world ``up`` appears upward in the image.

    Returns
    -------
    R : (3, 3) ndarray
    t : (3,) ndarray
        With ``x_cam = R @ x_world + t``.
    """
    center = np.asarray(center, float)
    z = np.asarray(target, float) - center
    z /= np.linalg.norm(z)
    up = np.asarray(up, float)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking along `up`: pick any perpendicular
        x = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center


def camera_matrix(K, R, t) -> np.ndarray:
    """``P = K [R | t]`` as a (3, 4) array."""
    return np.asarray(K, float) @ np.hstack([np.asarray(R, float), np.asarray(t, float).reshape(3, 1)])


def project(points, cameras) -> np.ndarray:
    """Project 3D points into every camera.

    Parameters
    ----------
    points : (..., K, 3) array_like
    cameras : (C, 3, 4) array_like

    Returns
    -------
    (..., C, K, 2) ndarray
        Pixel coordinates; points at or behind a camera's centre give ``NaN``.
    """
    points = np.asarray(points, float)
    cameras = np.asarray(cameras, float)
    homog = np.einsum("cij,...kj->...cki", cameras[:, :, :3], points) + cameras[:, None, :, 3]
    depth = homog[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = homog[..., :2] / depth
    return np.where(depth > 0, pix, np.nan)


def camera_centres(cameras) -> np.ndarray:
    """Each camera's centre of projection, ``(C, 3)``: the point ``P`` maps to zero, ``-M^-1 p4`` for ``P = [M | p4]``."""
    cameras = np.asarray(cameras, float)
    return -np.linalg.solve(cameras[:, :, :3], cameras[:, :, 3:])[..., 0]


def ray_directions(observations, cameras) -> np.ndarray:
    """Unit direction of each detection's back-projected ray, pointing in front of its camera.

    ``observations``: ``(..., C, K, 2)`` pixels; returns ``(..., C, K, 3)`` (NaN where missing). The ray of camera
    ``c`` is ``camera_centres(cameras)[c] + s * direction`` for ``s > 0``.
    """
    M = np.asarray(cameras, float)[:, :, :3]  # (C, 3, 3)
    obs = np.asarray(observations, float)
    uv1 = np.concatenate([obs, np.ones(obs.shape[:-1] + (1,))], axis=-1)
    d = np.einsum("cij,...ckj->...cki", np.linalg.inv(M), uv1)  # M d = (u, v, 1): depth 1 > 0, in front
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _dlt_rows(y, cameras):
    """Two DLT rows per camera; rows of unseen cameras are zero, which leaves the null space unchanged."""
    # y: (N, C, 2), cameras: (C, 3, 4) -> (N, 2C, 4)
    seen = np.all(np.isfinite(y), axis=-1)
    y0 = np.where(seen[..., None], y, 0.0)
    r1 = y0[..., 0:1] * cameras[None, :, 2, :] - cameras[None, :, 0, :]
    r2 = y0[..., 1:2] * cameras[None, :, 2, :] - cameras[None, :, 1, :]
    rows = np.stack([r1, r2], axis=2)  # (N, C, 2, 4)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    rows = np.where(norms > 0, rows / np.where(norms > 0, norms, 1.0), 0.0)  # equilibrate
    rows = rows * seen[..., None, None]
    return rows.reshape(rows.shape[0], -1, 4), seen.sum(axis=-1)


def triangulate_dlt(observations, cameras, normalize: bool = True) -> np.ndarray:
    """Linear (DLT) triangulation from every camera that sees a point.

    Parameters
    ----------
    observations : (..., C, 2) array_like
        Pixels; ``NaN`` marks a camera that did not see the point.
    cameras : (C, 3, 4) array_like
    normalize : bool
        Solve in world coordinates centred on the cameras and scaled by their spread (Hartley and Zisserman's
        normalization, :func:`_world_normalization`). Without it (world units as they are) the solve's minimum can
        slide towards the plane at infinity where pixel noise times depth is large; the chains' start keeps that
        solve for its candidates (see :func:`gimbal.model.initialization.triangulate_sequence`).

    Returns
    -------
    (..., 3) ndarray
        ``NaN`` where fewer than two cameras saw the point.
    """
    obs = np.asarray(observations, float)
    cameras = np.asarray(cameras, float)
    if obs.shape[-2:] != (cameras.shape[0], 2):
        raise ValueError(
            f"observations must end in (C, 2) = ({cameras.shape[0]}, 2) to match the cameras, got {obs.shape}."
        )
    lead = obs.shape[:-2]
    flat = obs.reshape(-1, cameras.shape[0], 2)
    centre, scale = _world_normalization(cameras) if normalize else (np.zeros(3), 1.0)
    to_world = np.eye(4)
    to_world[:3, :3] *= scale
    to_world[:3, 3] = centre
    A, n_seen = _dlt_rows(flat, cameras @ to_world)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        pts = centre + scale * X[:, :3] / X[:, 3:4]
    pts[n_seen < 2] = np.nan
    return pts.reshape(*lead, 3)


def _world_normalization(cameras) -> tuple[np.ndarray, float]:
    """The centre and scale of the cameras' centres, for the linear solve of :func:`triangulate_dlt`.

    The DLT minimizes an algebraic error over homogeneous points ``(X, W)`` of unit norm. In world units (mm,
    cameras ~1 m away) a detection's pixel noise times the depth outweighs what moving ``X`` costs, and the
    minimum can lie near ``W = 0``: a point metres away, behind the cameras. In coordinates where the cameras are
    about one unit from the origin ``W`` stays comparable to ``X``.
    """
    centres = camera_centres(cameras)
    centre = centres.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((centres - centre) ** 2, axis=-1))))
    return centre, (scale if np.isfinite(scale) and scale > 0 else 1.0)


def projection_jacobian(points, cameras):
    """Pixels and their Jacobian with respect to the point: ``(..., 3) -> (..., C, 2), (..., C, 2, 3)``."""
    points = np.asarray(points, float)
    cameras = np.asarray(cameras, float)
    homog = np.einsum("cij,...j->...ci", cameras[:, :, :3], points) + cameras[:, :, 3]  # (..., C, 3)
    uv = homog[..., :2] / homog[..., 2:3]
    rows = cameras[:, :2, :3] - uv[..., None] * cameras[:, 2, None, :3]  # (..., C, 2, 3)
    return uv, rows / homog[..., 2, None, None]


def refine_triangulation(points, observations, cameras, used, iterations: int = 5) -> np.ndarray:
    """Gauss-Newton steps on the reprojection error of the cameras in ``used`` (maximum likelihood under
    isotropic pixel noise), starting from ``points``; points with fewer than two used cameras are left as given.

    Linear (DLT) triangulation minimizes an algebraic error, not the pixel error: with few cameras or
    ill-conditioned views its error can be several times the Cramér-Rao bound (:func:`triangulation_covariance`),
    which these steps reach.

    Parameters
    ----------
    points : (..., 3) array_like
    observations : (..., C, 2) array_like
    cameras : (C, 3, 4) array_like
    used : (..., C) bool array_like
    """
    x = np.array(points, float)
    obs = np.asarray(observations, float)
    used = np.asarray(used, bool) & np.isfinite(obs).all(-1)
    ok = (used.sum(-1) >= 2) & np.isfinite(x).all(-1)
    for _ in range(iterations):
        uv, jac = projection_jacobian(x, cameras)
        w = (used & np.isfinite(uv).all(-1) & np.isfinite(jac).all((-1, -2)))[..., None]
        r = np.where(w, uv - np.nan_to_num(obs), 0.0)  # (..., C, 2)
        J = np.where(w[..., None], np.nan_to_num(jac), 0.0)
        JtJ = np.einsum("...cai,...caj->...ij", J, J)
        Jtr = np.einsum("...cai,...ca->...i", J, r)
        good = ok & (np.linalg.cond(JtJ) < 1e12)
        step = np.zeros_like(x)
        step[good] = np.linalg.solve(JtJ[good], Jtr[good][..., None])[..., 0]
        x = x - step
    return x


def triangulation_covariance(points, cameras, used, sigma_px: float) -> np.ndarray:
    """First-order covariance of points triangulated from the cameras in ``used`` with pixel noise ``sigma_px``.

    The inverse of the Fisher information ``sum_c J_c^T J_c / sigma_px^2`` over the used cameras, ``J_c`` the
    Jacobian of camera ``c``'s projection at the point; ``NaN`` where fewer than two cameras are used.

    Parameters
    ----------
    points : (T, K, 3) array_like
    cameras : (C, 3, 4) array_like
    used : (T, C, K) bool array_like
    sigma_px : float

    Returns
    -------
    (T, K, 3, 3) ndarray
    """
    _, jac = projection_jacobian(points, cameras)  # (T, K, C, 2, 3)
    jac = np.moveaxis(jac, 2, 1)  # (T, C, K, 2, 3)
    used = np.asarray(used, bool) & np.isfinite(jac).all(axis=(-1, -2))
    info = np.einsum("tckai,tckaj->tkij", np.where(used[..., None, None], jac, 0.0), np.where(used[..., None, None], jac, 0.0))
    enough = used.sum(axis=1) >= 2  # (T, K)
    cov = np.full(info.shape, np.nan)
    cov[enough] = np.linalg.inv(info[enough]) * sigma_px**2
    return cov


def reprojection_error(points, observations, cameras) -> np.ndarray:
    """Pixel distance between ``project(points)`` and the observations: ``(..., 3) -> (..., C)``."""
    proj = project(np.asarray(points)[..., None, :], cameras)[..., 0, :]  # (..., C, 2)
    return np.linalg.norm(proj - np.asarray(observations, float), axis=-1)


def triangulate_robust(observations, cameras, threshold_px: float = 20.0) -> np.ndarray:
    """Outlier-resistant triangulation: consensus over camera pairs, then an inlier re-fit.

    Every pair of cameras that both see a point proposes a two-view DLT
    estimate. Each proposal is scored by how many cameras reproject within
    ``threshold_px`` of it (ties broken by the median reprojection error of
    those inliers); the best proposal's inlier cameras are re-triangulated
    together. When no proposal has two inliers the coordinate-wise median of
    the proposals is returned.

    Parameters
    ----------
    observations : (..., C, 2) array_like
    cameras : (C, 3, 4) array_like
    threshold_px : float
        Reprojection error above which a detection is treated as an outlier.

    Returns
    -------
    (..., 3) ndarray
    """
    return select_candidates(triangulation_candidates(observations, cameras, threshold_px))


def triangulate_least_squares(observations, cameras, threshold_px: float = 20.0) -> np.ndarray:
    """:func:`triangulate_robust`, then each point at the least-squares minimum of its inlier cameras' reprojection
    error (:func:`refine_triangulation`): the cameras within ``threshold_px`` of the consensus point.

    Parameters
    ----------
    observations : (..., C, 2) array_like
    cameras : (C, 3, 4) array_like
    threshold_px : float

    Returns
    -------
    (..., 3) ndarray
    """
    obs = np.asarray(observations, float)
    x = triangulate_robust(obs, cameras, threshold_px)
    with np.errstate(invalid="ignore"):
        used = reprojection_error(x, obs, cameras) <= threshold_px  # NaN compares False
    return refine_triangulation(x, obs, cameras, used)


class Candidates(NamedTuple):
    """The candidate 3D points of :func:`triangulate_robust`, one per camera pair (:func:`triangulation_candidates`).

    ``points`` (pairs, ..., 3): the re-fit of each pair's inlier cameras (those reprojecting within the
    threshold of the pair's two-view estimate); ``support`` (pairs, ...): how many cameras are inliers;
    ``score`` (pairs, ...): the support minus the inliers' median reprojection error over ``threshold + 1``,
    ``-inf`` for a pair without two inliers; ``seen`` (...): how many cameras detected the point;
    ``fallback`` (..., 3): the coordinate-wise median of the two-view estimates, for points no pair explains.
    """

    points: np.ndarray
    support: np.ndarray
    score: np.ndarray
    seen: np.ndarray
    fallback: np.ndarray


def select_candidates(candidates: Candidates, score: np.ndarray | None = None) -> np.ndarray:
    """Each point's best candidate by ``score`` (default: the candidates' own), else the fallback."""
    score = candidates.score if score is None else score
    best = np.argmax(score, axis=0)
    chosen = np.take_along_axis(candidates.points, best[None, ..., None], axis=0)[0]
    usable = np.isfinite(np.take_along_axis(score, best[None], axis=0)[0])
    return np.where(usable[..., None], chosen, candidates.fallback)


def triangulation_candidates(observations, cameras, threshold_px: float = 20.0, normalize: bool = True) -> Candidates:
    """One candidate 3D point per camera pair, with its support and score (:class:`Candidates`); ``normalize``
    as in :func:`triangulate_dlt`."""
    obs = np.asarray(observations, float)
    cameras = np.asarray(cameras, float)
    C = cameras.shape[0]
    lead = obs.shape[:-2]
    seen = np.isfinite(obs).all(-1).sum(-1)
    if C < 2:
        return Candidates(np.full((1, *lead, 3), np.nan), np.zeros((1, *lead), int), np.full((1, *lead), -np.inf),
                          seen, np.full((*lead, 3), np.nan))
    flat = obs.reshape(-1, C, 2)
    proposals = []
    for i, j in combinations(range(C), 2):
        pair = np.full_like(flat, np.nan)
        pair[:, [i, j]] = flat[:, [i, j]]
        proposals.append(triangulate_dlt(pair, cameras, normalize))
    proposals = np.stack(proposals)  # (pairs, N, 3)
    err = reprojection_error(proposals, flat[None], cameras)  # (pairs, N, C)
    inlier = np.isfinite(err) & (err <= threshold_px)
    n_in = inlier.sum(-1)  # (pairs, N)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no usable proposal
            spread = np.nanmedian(np.where(inlier, err, np.nan), axis=-1)
            median = np.nanmedian(proposals, axis=0)
    score = np.where(np.isfinite(spread) & (n_in >= 2), n_in - spread / (threshold_px + 1.0), -np.inf)
    refit = triangulate_dlt(np.where(inlier[..., None], flat[None], np.nan), cameras, normalize)  # (pairs, N, 3)
    score = np.where(np.isfinite(refit).all(-1), score, -np.inf)
    n_pairs = proposals.shape[0]
    return Candidates(refit.reshape(n_pairs, *lead, 3), n_in.reshape(n_pairs, *lead), score.reshape(n_pairs, *lead),
                      seen, median.reshape(*lead, 3))
