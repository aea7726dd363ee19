"""The cameras' noise factors from held-out residuals (gimbal.model.camera_noise) and their place in the model."""

import argparse

import numpy as np
import pytest

from gimbal.datasets import load_dataset
from gimbal.model.build import ModelConfig, build_model
from gimbal.model.camera_noise import cross_validated_camera_noise
from gimbal.model.cameras import project, projection_jacobian
from gimbal.model.observation import FLOOR_WALL_SD, FLOOR_WALL_SOFTNESS, zero_sum_basis


def _rig(T=200):
    """The realistic rodent's true positions (T frames, 18 keypoints) and its six cameras, clean projections."""
    ds = load_dataset("rodent18_realistic", max_T=T)
    x = ds["positions_true"].values
    P = ds["camera_matrix"].values
    return ds, x, P, project(x, P)


SD = np.array([1.0, 1.0, 2.0, 1.0, 4.0, 1.5])  # each camera's pixel noise


def _noisy(clean, seed=0):
    rng = np.random.default_rng(seed)
    return clean + rng.normal(size=clean.shape) * SD[None, :, None, None]


def test_camera_noise_ratios_err_towards_equal_cameras():
    """Six cameras with 1-4 px of noise: the other cameras' triangulation error, part of every held-out residual,
    pulls the factors towards equal (measured 0.68-0.84 for the 1 px cameras, 0.66 true; 1.96 for the 4 px one, 2.64
    true), never past the truth: a floor under the sampled factors that the noisy cameras can rise above."""
    ds, x, P, clean = _rig()
    est = cross_validated_camera_noise(_noisy(clean), P, x)
    truth = np.log(SD) - np.log(SD).mean()
    assert np.argmax(est) == 4 and set(np.argsort(est)[:3]) == {0, 1, 3}
    assert np.all(np.abs(est) <= np.abs(truth) + 0.06)  # towards 0 (equal cameras), not beyond the truth
    np.testing.assert_allclose(np.exp(est), np.exp(truth), rtol=0.3)
    assert np.exp(est[4] - est[[0, 1, 3]].max()) > 2.0  # the 4 px camera still stands out


def test_a_start_on_one_cameras_rays_does_not_make_it_precise():
    """The reason the factors are not sampled: every point moved onto camera 0's rays zeroes its in-sample
    residuals. Its held-out residuals, against the point the other cameras place, stay what they were."""
    ds, x, P, clean = _rig()
    obs = _noisy(clean, seed=1)
    reference = cross_validated_camera_noise(obs, P, x)
    uv, J = projection_jacobian(x, P)  # (T, K, C, 2), (T, K, C, 2, 3)
    r0 = obs[:, 0] - uv[:, :, 0]  # camera 0's residuals (T, K, 2)
    on_rays = x + np.einsum("tkia,tka->tki", np.linalg.pinv(J[:, :, 0]), r0)  # the smallest 3D move that zeroes them
    assert np.median(np.linalg.norm(obs[:, 0] - project(on_rays, P)[:, 0], axis=-1)) < 0.05
    moved = cross_validated_camera_noise(obs, P, on_rays)
    np.testing.assert_allclose(moved, reference, atol=0.05)
    truth = np.log(SD) - np.log(SD).mean()
    assert moved[0] >= truth[0] - 0.05  # not below its true factor: no collapse


def test_outliers_beyond_the_threshold_do_not_count():
    ds, x, P, clean = _rig()
    obs = _noisy(clean, seed=2)
    reference = cross_validated_camera_noise(obs, P, x)
    rng = np.random.default_rng(3)
    wrong = rng.random(obs.shape[:3]) < 0.2
    wrong[:, 1:] = False  # a fifth of camera 0's detections 40-200 px off
    obs[wrong] += rng.uniform(40, 200, (wrong.sum(), 1)) * rng.choice([-1, 1], (wrong.sum(), 2))
    obs[rng.random(obs.shape[:3]) < 0.05] = np.nan
    np.testing.assert_allclose(cross_validated_camera_noise(obs, P, x), reference, atol=0.1)


def test_too_few_cameras_give_equal_factors():
    """A held-out residual needs two other cameras: with two cameras every factor is 0."""
    ds, x, P, clean = _rig(T=20)
    assert np.all(cross_validated_camera_noise(_noisy(clean)[:, :2], P[:2], x) == 0)
    with pytest.raises(ValueError, match=r"observations must be \(T, C, K, 2\)"):
        cross_validated_camera_noise(clean[0], P, x)


def test_model_walls_the_camera_factors_below_their_floor():
    """The floored model's log density is the freely sampled model's plus the wall: about 0 where every camera's
    factor is above its floor, -1/2 sum((factor - floor) / FLOOR_WALL_SD)^2 over the cameras below it, its corner
    rounded over FLOOR_WALL_SOFTNESS. The factors start at the floor."""
    ds = load_dataset("rodent18_realistic", max_T=20)
    model = build_model(ds, validate=False)
    assert model.gimbal_config.camera_noise == "floored" and "camera_noise_floor" in model.named_vars
    floor = model.gimbal_camera_noise
    C = ds.sizes["camera"]
    assert floor.shape == (C,) and abs(floor.sum()) < 1e-9 and np.ptp(floor) > 0.05
    basis = zero_sum_basis(C)
    start = model.initial_point()
    np.testing.assert_allclose(basis @ start["log_noise_camera_free"], floor, atol=1e-12)
    sampled = build_model(ds, camera_noise="sampled", validate=False, init=model.gimbal_init)
    assert sampled.gimbal_camera_noise is None and "camera_noise_floor" not in sampled.named_vars
    logp, logp_free = model.compile_logp(), sampled.compile_logp()
    rng = np.random.default_rng(0)
    for factors in (floor + 0.3 * (np.arange(C) == 2), floor + rng.normal(0, 0.3, C), floor - 0.2 * (np.arange(C) == 1)):
        factors = factors - factors.mean()  # zero-sum
        point = {**start, "log_noise_camera_free": basis.T @ factors}
        below = FLOOR_WALL_SOFTNESS * np.logaddexp(0.0, (floor - factors) / FLOOR_WALL_SOFTNESS)
        np.testing.assert_allclose(logp(point) - logp_free(point), -0.5 * np.sum(below**2) / FLOOR_WALL_SD**2,
                                   rtol=1e-9, atol=1e-7)
        hard = -0.5 * np.sum(np.minimum(factors - floor, 0.0) ** 2) / FLOOR_WALL_SD**2  # the wall without its rounding
        rounding = C * 0.5 * (FLOOR_WALL_SOFTNESS * np.log(2) / FLOOR_WALL_SD) ** 2  # at most, at the floor
        assert abs(logp(point) - logp_free(point) - hard) < rounding + 0.01 * abs(hard)
    shared = build_model(ds, observation="shared", validate=False, init=model.gimbal_init)
    assert shared.gimbal_camera_noise is None
    with pytest.raises(ValueError, match=r"camera_noise must be one of \('floored', 'sampled'\)"):
        ModelConfig(camera_noise="learned")


def test_cli_camera_noise_flag_reaches_the_model_options():
    from gimbal.cli import _add_model_args, _model_options

    p = argparse.ArgumentParser()
    _add_model_args(p)
    ds = load_dataset("rodent18_realistic", max_T=5)
    assert _model_options(p.parse_args([]), ds, "x")["camera_noise"] == "floored"
    assert _model_options(p.parse_args(["--camera-noise", "sampled"]), ds, "x")["camera_noise"] == "sampled"
