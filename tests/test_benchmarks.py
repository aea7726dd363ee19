import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's benchmarks/ package

from benchmarks.common import earlier_rows, write_result  # noqa: E402


def test_a_run_of_some_variants_finds_the_rows_measured_with_the_same_settings(tmp_path):
    """`--variants` runs add their rows to the earlier result; other settings (or no result) give None."""
    settings = {"T": 100, "chains": 4, "tune": 1000, "draws": 1000}
    write_result("observation_models", {**settings, "rows": {"a": {"x": 1}, "b": {"x": 2}}}, out_dir=tmp_path)
    assert json.loads((tmp_path / "observation_models.json").read_text())["rows"]["b"] == {"x": 2}
    assert earlier_rows("observation_models", settings, out_dir=tmp_path) == {"a": {"x": 1}, "b": {"x": 2}}
    assert earlier_rows("observation_models", {**settings, "draws": 500}, out_dir=tmp_path) is None
    assert earlier_rows("ablation_x", settings, out_dir=tmp_path) is None


def test_oracle_triangulation_is_the_least_squares_point_of_the_true_inliers():
    """The observation benchmark's reference row: each point at scipy's reprojection-error minimum over the
    detections the simulated detector left intact; NaN where fewer than two are."""
    import numpy as np
    from scipy.optimize import least_squares

    from benchmarks.observation import oracle_triangulation
    from gimbal.datasets import load_dataset
    from gimbal.model.cameras import project

    ds = load_dataset("rodent18_realistic", max_T=30)  # frames 25 and 29 hold a point with < 2
    x = oracle_triangulation(ds)
    obs = ds["observations"].values  # (T, C, K, 2)
    used = np.isfinite(obs).all(-1) & ~ds["is_outlier"].values  # (T, C, K)
    P = ds["camera_matrix"].values
    few = used.sum(axis=1) < 2
    assert few.any() and np.isnan(x[few]).all() and np.isfinite(x[~few]).all()
    checked = 0
    for t, k in zip(*np.nonzero(~few)):
        cams = np.flatnonzero(used[t, :, k])
        truth = ds["positions_true"].values[t, k]
        res = least_squares(lambda p: (project(p[None], P[cams])[:, 0] - obs[t, cams, k]).ravel(), truth + 5.0)
        assert np.linalg.norm(x[t, k] - res.x) < 1e-3, (t, k, x[t, k], res.x)
        checked += 1
    assert checked > 500


def test_oracle_detections_keep_the_true_inliers_and_take_off_the_offsets_the_generator_planted():
    """The reference rows' data: outliers, swaps and missing detections NaN; ``offset_true`` is each pair's mean
    residual of its true inliers from the true projection (checked independently here), and is taken off."""
    import numpy as np

    from benchmarks.common import oracle_detections
    from gimbal.datasets import load_dataset
    from gimbal.model.cameras import project

    ds = load_dataset("rodent18_realistic", max_T=600)
    obs, wrong = ds["observations"].values, ds["is_outlier"].values
    kept = oracle_detections(ds)["observations"].values
    assert np.isnan(kept[wrong]).all() and np.array_equal(kept[~wrong], obs[~wrong], equal_nan=True)
    residual = obs - project(ds["positions_true"].values, ds["camera_matrix"].values)  # (T, C, K, 2)
    mean = np.nanmean(np.where(wrong[..., None], np.nan, residual), axis=0)  # (C, K, 2)
    planted = np.linalg.norm(ds["offset_true"].values, axis=-1) > 0
    assert 0.05 < planted.mean() < 0.2  # the generator's 10% of pairs
    assert np.abs(mean - ds["offset_true"].values).max() < 0.8  # 3 px noise over ~500 inlier frames
    assert np.linalg.norm(mean[planted], axis=-1).min() > 3.5  # planted offsets are 4-8 px
    clean = oracle_detections(ds, offsets=False)["observations"].values
    assert np.nanmax(np.abs(np.nanmean(clean - project(ds["positions_true"].values, ds["camera_matrix"].values),
                                       axis=0))) < 0.8


def test_a_chain_left_at_a_wrong_start_is_named_with_its_distances_from_the_start_and_the_truth():
    """Four chains, one of which sits 20 mm off the truth at one position, near a start 25 mm off: the split site
    lists that position with each chain's distance from the truth and from the start; slow mixing elsewhere is
    counted but not listed."""
    import numpy as np
    import xarray as xr

    from benchmarks.observation import _unconverged

    rng = np.random.default_rng(0)
    T, K = 6, 3
    truth = rng.normal(scale=50.0, size=(T, K, 3))
    draws = truth + rng.normal(scale=1.0, size=(4, 500, T, K, 3))
    draws[3, :, 2, 1] += [20.0, 0.0, 0.0]  # chain 3 stayed in the wrong explanation at frame 2, keypoint "b"
    start = truth.copy()
    start[2, 1] += [25.0, 0.0, 0.0]
    ds = xr.Dataset({"positions_true": (("frame", "keypoint", "xyz"), truth)}, coords={"keypoint": ["a", "b", "c"]})
    post = xr.Dataset({"x": (("chain", "draw", "frame", "keypoint", "xyz"), draws)})
    rhat = np.full((T, K, 3), 1.001)
    rhat[2, 1, 0] = 1.9  # the split
    rhat[4, 0, 1] = 1.02  # a slow one
    out = _unconverged(post, rhat, ds, np.zeros((T, K), bool), truth, start)
    assert out["pairs"] == 2 and out["patterns"] == {"separate_modes": 1, "slow_mixing": 1}
    assert [(w["frame"], w["keypoint"], w["rhat"]) for w in out["worst_pairs"]] == [(2, "b", 1.9), (4, "a", 1.02)]
    (site,) = out["split_sites"]
    assert (site["frame"], site["keypoint"], site["pattern"]) == (2, "b", "separate_modes")
    assert site["start_error_mm"] == 25.0
    np.testing.assert_allclose(site["chain_errors_mm"], [0.0, 0.0, 0.0, 20.0], atol=0.2)
    np.testing.assert_allclose(site["chain_to_start_mm"], [25.0, 25.0, 25.0, 5.0], atol=0.2)
    assert "start_error_mm" not in _unconverged(post, rhat, ds, np.zeros((T, K), bool), truth)["split_sites"][0]
