"""Whitened tracks (gimbal.model.whitening): the factor, the O(T) solves and the unchanged model density."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from gimbal.datasets import from_arrays, load_dataset
from gimbal.model.cameras import camera_matrix, intrinsics, look_at, project
from gimbal.diagnostics.checks import compile_logp_and_grad, finite_difference_check
from gimbal.model.build import ModelConfig, build_model
from gimbal.model.initialization import initialize_from_observations_dlt
from gimbal.model.whitening import (BidiagonalSolve, to_coordinates, to_positions, track_factor, walk_dominated,
                                    whitened_keypoints, whitening_of)


def _dense(diag, sub, k, d):
    """The lower-bidiagonal ``L`` of one track coordinate as a dense matrix."""
    return np.diag(diag[:, k, d]) + np.diag(sub[1:, k, d], -1)


@pytest.fixture
def factor():
    rng = np.random.default_rng(0)
    T, K = 9, 2
    info = rng.gamma(2.0, 1.0, size=(T, K, 3))
    info[3:6, 0] = 0.0  # a keypoint the cameras lose for three frames
    step = np.array([0.05, 2.0])
    diag, sub = track_factor(info, step, floor=1e-4)
    return info, step, diag, sub


def test_factor_is_the_cholesky_factor_of_the_walk_and_camera_precision(factor):
    info, step, diag, sub = factor
    T = info.shape[0]
    laplacian = 2 * np.eye(T) - np.eye(T, k=1) - np.eye(T, k=-1)
    laplacian[0, 0] = laplacian[-1, -1] = 1.0
    for k in range(2):
        for d in range(3):
            Q = laplacian / step[k] ** 2 + np.diag(info[:, k, d] + 1e-4)
            L = _dense(diag, sub, k, d)
            np.testing.assert_allclose(L @ L.T, Q, rtol=1e-10, atol=1e-10 * np.abs(Q).max())
            np.testing.assert_allclose(L, np.linalg.cholesky(Q), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE"])
def test_solves_match_dense_triangular_solves_and_are_each_others_pullback(factor, mode):
    _, _, diag, sub = factor
    z = pt.tensor3("z")
    f = pytensor.function([z], [BidiagonalSolve()(z, diag, sub), BidiagonalSolve(True)(z, diag, sub)], mode=mode)
    value = np.random.default_rng(1).normal(size=diag.shape)
    upper, lower = f(value)
    for k in range(2):
        for d in range(3):
            L = _dense(diag, sub, k, d)
            np.testing.assert_allclose(upper[:, k, d], np.linalg.solve(L.T, value[:, k, d]), rtol=1e-10)
            np.testing.assert_allclose(lower[:, k, d], np.linalg.solve(L, value[:, k, d]), rtol=1e-10)
    for transpose in (False, True):
        verify_grad(lambda v: BidiagonalSolve(transpose)(v, diag, sub), [value], rng=np.random.default_rng(2),
                    mode=mode)
    mu = np.random.default_rng(3).normal(size=diag.shape)
    np.testing.assert_allclose(to_coordinates(to_positions(value, mu, diag, sub), mu, diag, sub), value, atol=1e-10)


def test_whitened_model_has_the_same_density_over_positions():
    """The sampler's coordinates change, the model does not: at the same positions both models' log densities differ
    by one constant (the map's Jacobian), the trace's x is the positions, and the gradient passes finite differences."""
    ds = load_dataset("v0.2.1_L02_outliers", max_T=15)
    init = initialize_from_observations_dlt(ds, n_states=int(ds.attrs.get("n_states", 1)))
    plain = build_model(ds, init=init)
    white = build_model(ds, init=init, whitened_tracks="all")  # every track ("still" picks none here)
    assert white.gimbal_config.whitened_tracks == "all" and plain.gimbal_config.whitened_tracks == "none"
    assert "x_whitened__" in white.initial_point() and "x" in plain.initial_point()
    arrays = whitening_of(white, white["x"])
    assert arrays is not None and whitening_of(plain, plain["x"]) is None
    rng = np.random.default_rng(4)
    lp_plain, lp_white = plain.compile_logp(), white.compile_logp()
    diffs = []
    for scale in (0.0, 0.2, 1.0):
        x = init.values["x"] + rng.normal(scale=scale, size=init.values["x"].shape)
        pp, pw = plain.initial_point(), white.initial_point()
        pp["x"], pw["x_whitened__"] = x, to_coordinates(x, *arrays)
        diffs.append(float(lp_white(pw)) - float(lp_plain(pp)))
    np.testing.assert_allclose(diffs, diffs[0], rtol=0, atol=1e-6 * abs(float(lp_plain(plain.initial_point()))))
    assert diffs[0] == pytest.approx(-np.log(arrays[1]).sum(), rel=1e-9)
    report = finite_difference_check(compile_logp_and_grad(white), max_components=60, seed=2)
    assert report["passed"], report["worst"][:3]


def test_whitening_is_refused_where_the_tracks_are_not_free_random_walks():
    ds = load_dataset("v0.2.1_L00_minimal", max_T=10)
    for options in (dict(temporal=False), dict(root_dynamics="noncentered", steps="gaussian"), dict(freeze_latents="init")):
        with pytest.raises(ValueError, match="whitened_tracks='all' .* temporal=True"):
            build_model(ds, whitened_tracks="all", validate=False, **options)
    with pytest.raises(ValueError, match="whitened_tracks must be one of"):
        build_model(ds, whitened_tracks=True, validate=False)
    with pytest.raises(ValueError, match="heading"):  # the checks after the new ones still run
        ModelConfig(heading=True, directions="explicit", whitened_tracks="all")
    assert whitened_keypoints(build_model(ds.isel(frame=[0]), whitened_tracks="all", validate=False)) == []  # one frame


def _still_animal(T=40, seed=0):
    """Three keypoints that barely move (0.02 mm steps), seen by four cameras with 2 px noise."""
    rng = np.random.default_rng(seed)
    cams = []
    for az in (0.0, 90.0, 180.0, 270.0):
        a = np.radians(az)
        R, t = look_at(np.array([800 * np.cos(a), 800 * np.sin(a), 300.0]), np.zeros(3))
        cams.append(camera_matrix(intrinsics(900.0, 320.0, 240.0), R, t))
    cams = np.stack(cams)
    pose = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [30.0, 20.0, 5.0]])
    x = pose + np.cumsum(rng.normal(scale=0.02, size=(T, 3, 3)), axis=0)
    obs = project(x, cams) + rng.normal(scale=2.0, size=(T, 4, 3, 2))
    return from_arrays(obs, cams, parents=[-1, 0, 1], keypoint_names=["a", "b", "c"])


def test_still_whitens_the_tracks_of_a_still_animal_not_those_of_a_moving_one():
    """walk_dominated picks keypoints whose step sd is below their triangulation sd: every keypoint of a still animal,
    none of the simulated rodent (triangulation sd / step sd about 0.2), whose model is then the plain one."""
    still = build_model(_still_animal(), whitened_tracks="still", validate=False)
    assert "x_whitened__" in still.initial_point() and whitened_keypoints(still) == ["a", "b", "c"]
    assert "x" in build_model(_still_animal(), validate=False).initial_point()  # the default: none
    moving = build_model(load_dataset("rodent18_realistic", max_T=30), whitened_tracks="still", validate=False)
    assert "x" in moving.initial_point() and whitened_keypoints(moving) == []
    cov = np.full((5, 2, 3, 3), np.nan)
    cov[:, 0] = np.eye(3) * 1.0
    assert walk_dominated(cov, np.array([0.5, 0.5])).tolist() == [True, False]  # no camera pair: not whitened
    assert walk_dominated(cov, np.array([2.0, 0.5])).tolist() == [False, False]


def test_cli_fit_samples_a_still_animal_with_whitened_tracks(tmp_path):
    """`gimbal fit --whitened-tracks still` says which tracks it whitens, records the choice, and its trace holds x."""
    import json
    import subprocess
    import sys

    from gimbal.datasets.io import save_dataset

    path = save_dataset(_still_animal(T=20), tmp_path / "still.nc")
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--dataset", str(path), "--chains", "1", "--tune", "30",
           "--draws", "20", "--whitened-tracks", "still", "--out", str(tmp_path / "fit")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 of 3 keypoints' tracks sampled whitened" in done.stdout
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["model"]["whitened_tracks"] == "still"
    bad = subprocess.run(cmd[:-2] + ["--whitened-tracks", "some", "--out", str(tmp_path / "bad")], capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode != 0 and "invalid choice: 'some'" in bad.stderr
    # JAX samples the positions as they are: asking for both is a usage error, not a silent override
    jax = subprocess.run(cmd[:-2] + ["--backend", "jax", "--out", str(tmp_path / "jax")], capture_output=True,
                         text=True, timeout=600)
    assert jax.returncode == 2 and "--whitened-tracks still needs the numba backend" in jax.stderr
    assert not (tmp_path / "jax").exists()
