"""The detector offsets' estimate (gimbal.model.offsets) and its place in the model."""

import argparse

import numpy as np
import pytest

from gimbal.datasets import load_dataset
from gimbal.diagnostics.checks import compile_logp_and_grad
from gimbal.model.build import ModelConfig, build_model
from gimbal.model.cameras import project
from gimbal.model.initialization import init_point_for, triangulate_sequence
from gimbal.model.offsets import _group_lasso, estimate_offsets, largest_offsets


def _rig(T=300, seed=0):
    """The realistic rodent's true positions and cameras, with clean projections."""
    ds = load_dataset("rodent18_realistic", max_T=T)
    x = ds["positions_true"].values
    P = ds["camera_matrix"].values
    return ds, x, P, project(x, P)


def test_planted_offsets_are_recovered_among_noise_and_outliers():
    ds, x, P, clean = _rig()
    rng = np.random.default_rng(1)
    T, C, K, _ = clean.shape
    planted = np.zeros((C, K, 2))
    pairs = [(0, 3), (2, 7), (4, 7), (5, 12), (1, 16)]  # two cameras of keypoint 7: not one camera against the rest
    for c, k in pairs:
        angle = rng.uniform(0, 2 * np.pi)
        planted[c, k] = rng.uniform(4, 8) * np.array([np.cos(angle), np.sin(angle)])
    obs = clean + planted[None] + rng.normal(0, 2.0, clean.shape)
    wrong = rng.random((T, C, K)) < 0.1
    obs[wrong] += rng.uniform(30, 200, (wrong.sum(), 1)) * rng.choice([-1, 1], (wrong.sum(), 2))
    obs[rng.random((T, C, K)) < 0.03] = np.nan
    start = x + rng.normal(0, 1.0, x.shape)  # a start off the truth by triangulation-like errors
    est = estimate_offsets(obs, P, start)
    err = np.linalg.norm(est - planted, axis=-1)
    for c, k in pairs:
        assert err[c, k] < 0.5, (c, k, est[c, k], planted[c, k])
    others = np.ones((C, K), bool)
    others[tuple(np.array(pairs).T)] = False
    assert np.median(err[others]) < 0.1 and err[others].max() < 0.6


def test_a_start_off_in_3d_is_no_offset():
    """What a 3D shift of the point explains (the start's own error, different in every frame) is not an offset:
    the residual projector annihilates the projection's Jacobian."""
    ds, x, P, clean = _rig(T=100)
    rng = np.random.default_rng(2)
    est = estimate_offsets(clean, P, x + rng.normal(0, 0.5, x.shape))
    assert np.abs(est).max() < 0.05


def test_offsets_on_the_realistic_rodent_against_its_truth():
    """The simulated detector's offsets (10% of pairs, 4-8 px) from the start the model uses."""
    ds = load_dataset("rodent18_realistic", max_T=300)
    est = estimate_offsets(ds["observations"].values, ds["camera_matrix"].values, triangulate_sequence(ds))
    true = ds["offset_true"].values
    err, length = np.linalg.norm(est - true, axis=-1), np.linalg.norm(true, axis=-1)
    rms = lambda v: float(np.sqrt(np.mean(v**2)))  # noqa: E731
    assert rms(err) < 0.5 * rms(length), (rms(err), rms(length))  # 0.43 measured (T = 300)
    assert np.median(err[length > 0]) < 1.0
    assert np.median(np.linalg.norm(est, axis=-1)[length == 0]) < 0.3


def test_group_lasso_meets_its_optimality_conditions():
    rng = np.random.default_rng(3)
    M = rng.normal(size=(12, 12))
    A = M @ M.T / 12 + np.diag(np.r_[np.zeros(6), np.ones(6)])  # some directions barely determined
    b = rng.normal(size=12) * 3
    b[4:6] = 0.05  # a pair the data do not call for
    scale = 1.0
    o = _group_lasso(A, b, scale)
    grad = (A @ o - b).reshape(-1, 2)
    for g, oc in zip(grad, o.reshape(-1, 2)):
        n = np.linalg.norm(oc)
        if n > 0:  # stationary: the smooth part's gradient balances the penalty's
            np.testing.assert_allclose(g, -oc / (scale * n), atol=1e-5)
        else:  # at 0: the gradient within the penalty's subdifferential
            assert np.linalg.norm(g) <= 1 / scale + 1e-6


def test_model_takes_the_offsets_off_the_detections():
    """The default model's log density equals the no-offset model's on the detections less the estimate."""
    ds = load_dataset("rodent18_realistic", max_T=20)
    model = build_model(ds, validate=False)
    off = model.gimbal_offsets
    assert model.gimbal_config.offsets == "estimated" and np.abs(off).max() > 1.0
    shifted = ds.copy()
    obs = ds["observations"]
    shifted["observations"] = obs.copy(data=obs.values - off[None])
    plain = build_model(shifted, offsets="none", validate=False, init=model.gimbal_init)
    assert np.all(plain.gimbal_offsets == 0)
    point = init_point_for(model, model.gimbal_init)
    lp = compile_logp_and_grad(model).logp_point(point)
    lp_plain = compile_logp_and_grad(plain).logp_point(point)
    np.testing.assert_allclose(lp, lp_plain, rtol=1e-10)
    none = build_model(ds, offsets="none", validate=False, init=model.gimbal_init)
    assert abs(compile_logp_and_grad(none).logp_point(point) - lp) > 1.0  # the offsets matter


def test_offsets_option_is_validated_and_reported():
    with pytest.raises(ValueError, match=r"offsets must be one of \('estimated', 'none'\)"):
        ModelConfig(offsets="fitted")
    off = np.zeros((2, 3, 2))
    off[1, 2] = [3.0, 4.0]
    off[0, 0] = [0.6, 0.0]
    found = largest_offsets(off, ["a", "b"], ["k0", "k1", "k2"])
    assert [(o.camera, o.keypoint, o.length_px) for o in found] == [("b", "k2", 5.0)]


def test_cli_offsets_flag_reaches_the_model_options():
    from gimbal.cli import _add_model_args, _model_options

    p = argparse.ArgumentParser()
    _add_model_args(p)
    ds = load_dataset("rodent18_realistic", max_T=5)
    assert _model_options(p.parse_args([]), ds, "x")["offsets"] == "estimated"
    assert _model_options(p.parse_args(["--offsets", "none"]), ds, "x")["offsets"] == "none"


def test_a_few_frames_estimate_no_offset():
    """Fewer than OFFSET_MIN_FRAMES frames: their mean residual is noise, every pair stays 0 (a 3-frame session)."""
    ds, x, P, clean = _rig(T=8)
    rng = np.random.default_rng(4)
    planted = np.zeros(clean.shape[1:])
    planted[0, 3] = [6.0, 0.0]
    est = estimate_offsets(clean + planted[None] + rng.normal(0, 2.0, clean.shape), P, x)
    assert np.all(est == 0)


def test_fewer_than_five_cameras_estimate_no_offset():
    """With three or four cameras one camera off and the others off explain the residuals about equally well (on
    the real mouse the estimate made held-out cameras worse): no offsets there."""
    ds, x, P, clean = _rig(T=200)
    rng = np.random.default_rng(5)
    planted = np.zeros(clean.shape[1:])
    planted[0, 3] = [6.0, 0.0]
    obs = clean + planted[None] + rng.normal(0, 2.0, clean.shape)
    assert np.all(estimate_offsets(obs[:, :4], P[:4], x) == 0)
    assert np.linalg.norm(estimate_offsets(obs[:, :5], P[:5], x)[0, 3] - planted[0, 3]) < 0.5
