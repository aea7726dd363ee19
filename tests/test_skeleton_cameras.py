import numpy as np
import pytest

from gimbal.model.cameras import (camera_centres, camera_matrix, intrinsics, look_at, project, ray_directions,
                                  reprojection_error, triangulate_dlt, triangulate_robust)
from gimbal.model.skeleton import Skeleton, validate_parents


@pytest.mark.parametrize(
    "parents, match",
    [
        ([0, 0, 1], "parents\\[0\\] must be -1"),
        ([-1, 0, -1], "exactly one root"),
        ([-1, 2, 0], "keypoint 1 has parent 2"),
        ([-1, 0, 5], "keypoint 2 has parent 5"),
        ([-1, 0.5], "integers"),
    ],
)
def test_invalid_parents_name_the_problem(parents, match):
    with pytest.raises(ValueError, match=match):
        validate_parents(parents)


def test_skeleton_truncation_keeps_a_tree():
    sk = Skeleton.from_parents([-1, 0, 1, 1, 0], names=list("abcde"))
    assert sk.truncate(3).parents == (-1, 0, 1)
    assert sk.bone_names[0] == "a->b"
    with pytest.raises(ValueError, match="larger than"):
        sk.truncate(6)


def _ring_cameras(C=4, radius=200.0):
    cams = []
    for c in range(C):
        a = 2 * np.pi * c / C
        R, t = look_at([radius * np.cos(a), radius * np.sin(a), 60.0], [0, 0, 0])
        cams.append(camera_matrix(intrinsics(1000.0, 640, 360), R, t))
    return np.stack(cams)


def test_project_then_triangulate_round_trip():
    rng = np.random.default_rng(0)
    P = _ring_cameras()
    X = rng.normal(scale=10, size=(50, 3))
    y = project(X, P)  # (C, 50, 2)
    Xhat = triangulate_dlt(np.moveaxis(y, 0, 1), P)
    np.testing.assert_allclose(Xhat, X, atol=1e-8)
    # a point seen by one camera only cannot be triangulated
    y1 = np.moveaxis(y, 0, 1).copy()
    y1[0, 1:] = np.nan
    assert np.isnan(triangulate_dlt(y1, P)[0]).all()


def test_rays_run_from_opencvs_camera_centres_through_the_points_in_front():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    P = _ring_cameras() * rng.uniform(0.5, 2.0, size=(1, 1, 1))  # any scale of P
    X = rng.normal(scale=10, size=(20, 3))
    centres = camera_centres(P)
    for c in range(len(P)):
        h = cv2.decomposeProjectionMatrix(P[c])[2].ravel()  # the centre, homogeneous
        np.testing.assert_allclose(centres[c], h[:3] / h[3], atol=1e-8)
    d = ray_directions(project(X, P), P)  # (C, 20, 3)
    v = X[None] - centres[:, None]
    depth = np.einsum("ckd,ckd->ck", v, d)
    assert (depth > 0).all()
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0)
    np.testing.assert_allclose(centres[:, None] + depth[..., None] * d, np.broadcast_to(X, v.shape), atol=1e-8)


def test_dlt_matches_opencv_on_noisy_pairs():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    P = _ring_cameras(4)[:2]  # two views 90 degrees apart
    X = rng.normal(scale=10, size=(30, 3))
    clean = project(X, P)

    def opencv(y):
        ref = cv2.triangulatePoints(P[0], P[1], y[0].T.copy(), y[1].T.copy())
        return (ref[:3] / ref[3]).T

    np.testing.assert_allclose(triangulate_dlt(np.moveaxis(clean, 0, 1), P), opencv(clean), atol=1e-6)
    y = clean + rng.normal(scale=1.0, size=(2, 30, 2))
    ref = opencv(y)
    ours = triangulate_dlt(np.moveaxis(y, 0, 1), P)
    # with noise the two algebraic solutions weight rows differently: compare their accuracy instead
    ours_err = np.median(np.linalg.norm(ours - X, axis=-1))
    ref_err = np.median(np.linalg.norm(ref - X, axis=-1))
    assert ours_err < 1.25 * ref_err
    assert ours_err < 0.5


def test_dlt_stays_near_the_maximum_likelihood_point_where_pixel_noise_times_depth_is_large():
    """Four cameras 850 mm away (f = 900 px), 2 px noise: the normalized DLT, and robust triangulation built on it
    (the baselines), stay within a noise-sized distance of the reprojection-error minimum scipy finds, and in front of
    every camera; the solve in world units as they are (``normalize=False``, what the chains' start keeps) strays far
    from it on the same points."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(0)
    K = intrinsics(900.0, 320.0, 240.0)
    P = np.stack([camera_matrix(K, *look_at([800 * np.cos(a), 800 * np.sin(a), 300.0], [0, 0, 0]))
                  for a in np.radians([0, 90, 180, 270])])
    X = rng.normal(scale=15.0, size=(200, 3))
    y = np.moveaxis(project(X, P), 0, 1) + rng.normal(scale=2.0, size=(200, 4, 2))
    ml = np.stack([least_squares(lambda v, o=o: (project(v[None], P)[:, 0] - o).ravel(), x0).x
                   for o, x0 in zip(y, X)])
    dlt = triangulate_dlt(y, P)
    assert np.max(np.linalg.norm(dlt - ml, axis=-1)) < 1.0  # mm; the noise moves points ~2 mm
    depth = np.einsum("cj,nj->nc", P[:, 2, :3], dlt) + P[:, 2, 3]
    assert (depth > 0).all()
    plain = triangulate_dlt(y, P, normalize=False)
    assert np.max(np.linalg.norm(plain - ml, axis=-1)) > 10.0
    robust = triangulate_robust(y, P)  # the baselines' triangulation: every camera is an inlier here
    assert np.max(np.linalg.norm(robust - ml, axis=-1)) < 1.0


def test_robust_triangulation_survives_20_percent_outliers():
    rng = np.random.default_rng(2)
    P = _ring_cameras(6)
    X = rng.normal(scale=10, size=(400, 3))
    y = np.moveaxis(project(X, P), 0, 1) + rng.normal(scale=1.0, size=(400, 6, 2))
    bad = rng.random((400, 6)) < 0.2
    y[bad] = rng.uniform(0, 1280, size=(bad.sum(), 2))
    plain = np.linalg.norm(triangulate_dlt(y, P) - X, axis=-1)
    robust = np.linalg.norm(triangulate_robust(y, P) - X, axis=-1)
    assert np.median(robust) < 0.3
    assert np.median(robust) < 0.2 * np.median(plain)
    assert np.percentile(robust, 95) < 1.0
    assert reprojection_error(X[:1], y[:1], P).shape == (1, 6)


def test_refined_triangulation_is_scipy_least_squares_on_the_used_cameras():
    from scipy.optimize import least_squares

    from gimbal.model.cameras import refine_triangulation

    rng = np.random.default_rng(3)
    P = _ring_cameras(5)
    X = rng.normal(scale=10, size=(40, 3))
    y = np.moveaxis(project(X, P), 0, 1) + rng.normal(scale=2.0, size=(40, 5, 2))  # (N, C, 2)
    used = rng.random((40, 5)) > 0.3
    used[:, :2] = True  # at least two cameras per point
    y[~used] += 300.0  # what the unused cameras see must not matter
    start = triangulate_dlt(np.where(used[..., None], y, np.nan), P)
    ours = refine_triangulation(start, y, P, used)

    def scipy_fit(x0, obs, cams):
        return least_squares(lambda q: (project(q[None], cams)[:, 0] - obs).ravel(), x0, xtol=1e-12, ftol=1e-12).x

    ref = np.stack([scipy_fit(start[n], y[n, used[n]], P[used[n]]) for n in range(40)])
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.abs(start - ref).max() > 1e-2  # linear triangulation is not already the minimum


def test_triangulation_covariance_is_the_spread_of_least_squares_triangulation():
    from gimbal.model.cameras import refine_triangulation, triangulation_covariance

    rng = np.random.default_rng(4)
    P = _ring_cameras(3)
    X = np.array([[3.0, -2.0, 5.0]])
    y = project(X, P)[:, 0] + rng.normal(scale=2.0, size=(4000, 3, 2))  # (draws, C, 2)
    used = np.ones((4000, 3), bool)
    est = refine_triangulation(triangulate_dlt(y, P), y, P, used)
    empirical = np.cov((est - X).T)
    cov = triangulation_covariance(X[None], P, np.ones((1, 3, 1), bool), 2.0)[0, 0]
    np.testing.assert_allclose(np.diag(empirical), np.diag(cov), rtol=0.1)
    # with one camera there is no triangulation, hence no covariance
    assert np.isnan(triangulation_covariance(X[None], P, np.array([[[True], [False], [False]]]), 2.0)).all()
