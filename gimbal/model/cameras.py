"""Pinhole cameras: projection and DLT triangulation (numpy only).

Conventions: a camera is a 3x4 matrix ``P = K [R | t]`` mapping homogeneous world
points to homogeneous pixels; a stack of ``C`` cameras is a ``(C, 3, 4)`` array.
2D observations are pixels, ``NaN`` where a camera did not see a point. No lens
distortion is modelled: undistort detections before using them.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

__all__ = [
    "split_missing",
    "intrinsics",
    "look_at",
    "camera_matrix",
    "project",
    "triangulate_dlt",
    "triangulate_robust",
    "reprojection_error",
]


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


def triangulate_dlt(observations, cameras) -> np.ndarray:
    """Linear (DLT) triangulation from every camera that sees a point.

    Parameters
    ----------
    observations : (..., C, 2) array_like
        Pixels; ``NaN`` marks a camera that did not see the point.
    cameras : (C, 3, 4) array_like

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
    A, n_seen = _dlt_rows(flat, cameras)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        pts = X[:, :3] / X[:, 3:4]
    pts[n_seen < 2] = np.nan
    return pts.reshape(*lead, 3)


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
    obs = np.asarray(observations, float)
    cameras = np.asarray(cameras, float)
    C = cameras.shape[0]
    lead = obs.shape[:-2]
    flat = obs.reshape(-1, C, 2)
    N = flat.shape[0]
    if C < 2:
        return np.full((*lead, 3), np.nan)
    proposals = []
    for i, j in combinations(range(C), 2):
        pair = np.full_like(flat, np.nan)
        pair[:, [i, j]] = flat[:, [i, j]]
        proposals.append(triangulate_dlt(pair, cameras))
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
    score = np.where(np.isfinite(spread), n_in - spread / (threshold_px + 1.0), -np.inf)
    best = np.argmax(score, axis=0)  # (N,)
    keep = inlier[best, np.arange(N)]  # (N, C)
    refit = triangulate_dlt(np.where(keep[..., None], flat, np.nan), cameras)
    out = np.where((keep.sum(-1) >= 2)[:, None], refit, median)
    return out.reshape(*lead, 3)
