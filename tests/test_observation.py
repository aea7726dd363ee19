"""The observation model's options and the simulated detector they are judged on."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import mannwhitneyu

from gimbal.datasets import load_dataset
from gimbal.datasets.detector_errors import DetectorErrors, add_detector_errors
from gimbal.diagnostics.checks import compile_logp_and_grad


def _run_lengths(series):
    """Lengths of the runs of True in a 1D boolean series."""
    padded = np.concatenate([[False], series, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def test_detector_errors_rates_runs_swaps_offsets_and_scores():
    T, C = 6000, 3
    names = ["Root", "PawL", "PawR", "Tail"]
    rng = np.random.default_rng(0)
    clean = rng.uniform(200, 800, size=(T, C, len(names), 2))
    errors = DetectorErrors(hard_keypoints=("Tail",), hard_cameras=1, run_frames=20.0, missing_rate=0.0,
                            missing_in_run=0.0, swap_rate=0.05, offset_pairs=0.5)
    sim = add_detector_errors(clean, np.full((C, 2), 1000.0), names, errors, seed=1)
    tail = names.index("Tail")
    assert sim.outlier_rate[:, tail].max() >= 0.5  # one camera sees the tail badly
    others = np.delete(sim.outlier_rate, tail, axis=1)
    assert others.min() >= 0.05 and others.max() <= 0.15
    # each pair's realized rate of wrong detections (swaps excluded: Root and Tail have no partner) is its rate
    for c in range(C):
        for k in (0, tail):
            realized = sim.is_outlier[:, c, k].mean()
            assert realized == pytest.approx(sim.outlier_rate[c, k], abs=0.06)
    # occlusions come in runs of about run_frames
    lengths = np.concatenate([_run_lengths(sim.is_outlier[:, c, 0]) for c in range(C)])
    assert 12 < lengths.mean() < 28
    # a swap puts the right paw's point on the left paw (and vice versa), in runs
    swapped = np.isclose(sim.observations[..., 1, :] - sim.offset[None, :, 1],
                         clean[..., 2, :], atol=6 * errors.noise_px * np.exp(3 * errors.camera_noise_spread)).all(-1)
    assert 0.02 < swapped.mean() < 0.08
    # biased pairs are off by offset_px on average, the others are not
    inlier = ~sim.is_outlier & np.isfinite(sim.observations).all(-1)
    bias = np.nanmean(np.where(inlier[..., None], sim.observations - clean, np.nan), axis=0)  # (C, K, 2)
    biased = np.linalg.norm(sim.offset, axis=-1) > 0
    assert biased.any() and (~biased).any()
    np.testing.assert_allclose(bias[biased], sim.offset[biased], atol=0.5)
    assert np.abs(bias[~biased]).max() < 0.5
    # scores are informative but overlap
    seen = np.isfinite(sim.confidence)
    good, bad = sim.confidence[seen & ~sim.is_outlier], sim.confidence[seen & sim.is_outlier]
    auc = mannwhitneyu(good, bad).statistic / (good.size * bad.size)
    assert 0.8 < auc < 0.99


def test_detector_errors_name_unknown_hard_keypoints():
    with pytest.raises(ValueError, match="Elbow"):
        add_detector_errors(np.zeros((5, 2, 2, 2)), np.full((2, 2), 100.0), ["a", "b"],
                            DetectorErrors(hard_keypoints=("Elbow",)))


def test_realistic_recording_turns_and_has_scores():
    ds = load_dataset("rodent18_realistic", max_T=1800)
    heading = ds["heading_true"].values
    assert np.ptp(heading) > 2 * np.pi  # the animal faces every way
    rates = ds["outlier_rate_true"].values
    assert rates.min() < 0.07 and rates.max() > 0.8
    assert np.isfinite(ds["confidence"].values).mean() > 0.85
    train = load_dataset("rodent18_realistic_train", max_T=50)
    assert not np.allclose(train["positions_true"].values, ds["positions_true"].values[:50])


def _map_observation_params(ds, **options):
    """MAP of the observation parameters with the 3D positions frozen at the truth (scipy L-BFGS)."""
    from gimbal.model.build import build_model

    model = build_model(ds, freeze_latents="truth", **options)
    f = compile_logp_and_grad(model)
    start = f.flatten(model.initial_point())
    res = minimize(lambda q: -f.logp(q), start, jac=lambda q: -f.dlogp(q), method="L-BFGS-B")
    assert res.success, res.message
    return f.unflatten(res.x)


def test_per_pair_model_recovers_outlier_rates_and_score_slope():
    """With positions known, the per-(camera, keypoint) rates track the simulated ones; the shared model cannot."""
    ds = load_dataset("rodent18_realistic", max_T=600)
    true_rate = ds["outlier_rate_true"].values  # (C, K)
    seen = np.isfinite(ds["observations"].values).all(-1)
    realized = ds["is_outlier"].values.sum(axis=0) / seen.sum(axis=0)  # what these 600 frames hold
    # without the scores (the default uses them): with them the pair's log-odds is its rate at the mean score
    per_pair = _map_observation_params(ds, observation="camera_keypoint", confidence=False)
    est = 1 - expit(per_pair["logodds_inlier_ck"])
    assert np.corrcoef(est.ravel(), realized.ravel())[0, 1] > 0.85
    hard = true_rate > 0.5
    # detections 40 px off or at a neighbouring keypoint are partly absorbed by a larger per-pair noise: the hard
    # pairs' rates come out low, but far above the ordinary pairs'
    assert np.median(est[hard]) > 0.3 and np.median(est[~hard]) < 0.15
    shared = _map_observation_params(ds, confidence=False)
    shared_est = np.broadcast_to(1 - expit(shared["logodds_inlier"]), true_rate.shape)
    assert np.abs(shared_est - realized)[hard].mean() > 1.5 * np.abs(est - realized)[hard].mean()
    scored = _map_observation_params(ds, observation="camera_keypoint", confidence=True)
    assert scored["confidence_slope"] > 0.5  # higher scores, more likely inliers


def test_confidence_without_scores_is_a_usage_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gimbal.cli", "fit", "--dataset", "v0.2.1_L02_outliers", "--max-T", "10",
         "--confidence", "--out", str(tmp_path / "fit"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "--confidence needs the detector's scores" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "fit").exists()


def test_noise_factors_are_zero_sum_normals():
    """The camera/keypoint noise factors: an orthonormal zero-sum basis, so the free values' N(0, s) is PyMC's
    ZeroSumNormal(s) on the factors (same log density up to a constant)."""
    import pymc as pm

    from gimbal.model.observation import NOISE_POOL_SD, zero_sum_basis

    B = zero_sum_basis(6)
    np.testing.assert_allclose(B.T @ B, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(B.sum(axis=0), 0.0, atol=1e-12)
    rng = np.random.default_rng(0)
    v = [rng.normal(size=5) for _ in range(3)]
    ours = [float(pm.logp(pm.Normal.dist(0.0, NOISE_POOL_SD, shape=5), z).sum().eval()) for z in v]
    ref = [float(pm.logp(pm.ZeroSumNormal.dist(sigma=NOISE_POOL_SD, shape=6), B @ z).eval()) for z in v]
    np.testing.assert_allclose(np.diff(ours), np.diff(ref), rtol=1e-10)


def test_the_default_uses_the_detectors_scores_where_the_dataset_has_them():
    """confidence=None (the default): scores in the model where the dataset has them and the mixture can use them;
    the choice is recorded in the model's config; False leaves them out."""
    from gimbal.datasets import load_dataset
    from gimbal.model.build import ModelConfig, build_model

    assert ModelConfig.confidence is None
    scored = load_dataset("rodent18_realistic", max_T=6)
    model = build_model(scored, validate=False)
    assert model.gimbal_config.confidence is True and "confidence_slope" in model.named_vars
    plain = build_model(scored, validate=False, confidence=False)
    assert plain.gimbal_config.confidence is False and "confidence_slope" not in plain.named_vars
    no_mixture = build_model(scored, validate=False, use_mixture=False)
    assert no_mixture.gimbal_config.confidence is False
    unscored = build_model(load_dataset("v0.2.1_L02_outliers", max_T=6), validate=False)
    assert unscored.gimbal_config.confidence is False and "confidence_slope" not in unscored.named_vars


def test_a_cameras_noise_cannot_collapse_onto_its_rays():
    """Any one camera's residuals can be zeroed by putting every point on its rays; then a product-of-factors noise
    makes the density grow without bound as that camera's factor falls (DeepFly3D, ``cam5`` held out: ``cam4``'s
    factor ran to exp(-2.84)). The pair's noise has a floor, so past it the density only pays the factor's prior."""
    from gimbal.model.build import build_model
    from gimbal.model.cameras import project
    from gimbal.model.observation import NOISE_FLOOR_PX, zero_sum_basis

    ds = load_dataset("v0.2.1_L02_outliers", max_T=30)
    truth = ds["positions_true"].values
    obs = ds["observations"].values.copy()
    obs[:, 0] = project(truth, ds["camera_matrix"].values)[:, 0]  # camera 0: exactly on the points' rays
    ds = ds.assign(observations=(ds["observations"].dims, obs))
    model = build_model(ds, validate=False, confidence=False, camera_noise="sampled")  # the floored default: test_camera_noise
    logp = model.compile_logp()
    noise = model.compile_fn(model.replace_rvs_by_values([model["obs_sigma_ck"]])[0], inputs=model.value_vars,
                             on_unused_input="ignore")
    C = ds.sizes["camera"]
    B = zero_sum_basis(C)
    point = {**model.initial_point(), "x": truth}
    factors = (-4.0, -8.0, -12.0)
    dens, sigma = [], []
    for factor in factors:
        v = np.full(C, -factor / (C - 1))
        v[0] = factor
        q = {**point, "log_noise_camera_free": B.T @ v}
        dens.append(float(logp(q)))
        sigma.append(noise(q))
    sigma = np.asarray(sigma)
    shared = float(np.exp(point["obs_sigma_log__"]))
    kp = np.exp(zero_sum_basis(ds.sizes["keypoint"]) @ point["log_noise_keypoint_free"])
    for i, factor in enumerate(factors):  # the floor in quadrature: never below NOISE_FLOOR_PX
        np.testing.assert_allclose(sigma[i][0], np.hypot(NOISE_FLOOR_PX, shared * np.exp(factor) * kp), rtol=1e-10)
    # 120 zero residuals: without the floor each halving of the noise would add 120 * 2 * ln 2 = 166 nats
    assert dens[0] > dens[1] > dens[2], dens
