import numpy as np
import pytest
import xarray as xr

from gimbal.model.cameras import project
from gimbal.datasets import (
    DatasetFileError,
    DeepFly3DUnavailable,
    cache_dir,
    from_arrays,
    list_datasets,
    load_dataset,
    save_dataset,
    skeleton_of,
)
from gimbal.datasets.deepfly3d import load_deepfly3d
from gimbal.datasets.synthetic import SYNTHETIC, generate


def test_default_dataset_matches_its_description():
    ds = load_dataset("v0.2.1_L00_minimal")
    assert dict(ds.sizes)["frame"] == 1800 and ds.sizes["camera"] == 3 and ds.sizes["keypoint"] == 4
    assert list(ds["parents"].values) == [-1, 0, 1, 1]
    np.testing.assert_allclose(ds["bone_lengths_true"].values, [0, 10, 8, 8])
    assert ds.attrs["fps"] == 60.0 and ds.attrs["n_states"] == 1
    assert np.isfinite(ds["observations"].values).all()  # no missing data
    assert not ds["is_outlier"].values.any()
    truth = ds["positions_true"].values
    lengths = np.linalg.norm(truth[:, 1:] - truth[:, [0, 1, 1]], axis=-1)
    np.testing.assert_allclose(np.median(lengths, axis=0), [10, 8, 8], atol=0.1)
    resid = ds["observations"].values - project(truth, ds["camera_matrix"].values)
    assert np.std(resid) == pytest.approx(2.0, rel=0.05)  # 2 px noise
    size = ds["image_size"].values
    assert np.all((ds["observations"].values >= 0) & (ds["observations"].values <= size[None, :, None, :]))


def test_siblings_each_raise_one_difficulty():
    out = load_dataset("v0.2.1_L02_outliers")
    assert out["is_outlier"].values.mean() == pytest.approx(0.10, abs=0.01)
    miss = load_dataset("v0.2.1_L03_missingness")
    assert np.isnan(miss["observations"].values[..., 0]).mean() == pytest.approx(0.15, abs=0.01)
    rat = load_dataset("rodent18_multistate")
    assert rat.sizes["keypoint"] == 18 and rat.sizes["camera"] == 6 and rat.attrs["n_states"] == 4
    assert len(np.unique(rat["states_true"].values)) == 4
    assert 0.04 < np.isnan(rat["observations"].values[..., 0]).mean() < 0.06


def test_generation_is_deterministic_and_cached():
    a = generate(SYNTHETIC["v0.2.1_L01_noise"])
    b = generate(SYNTHETIC["v0.2.1_L01_noise"])
    xr.testing.assert_identical(a, b)
    first = load_dataset("v0.2.1_L01_noise")
    again = load_dataset("v0.2.1_L01_noise")
    xr.testing.assert_identical(first, again)
    xr.testing.assert_allclose(first, a)


def test_the_cache_is_keyed_by_the_spec_and_the_generator(monkeypatch, tmp_path):
    """A changed spec is a new cache file, generated again, never the earlier version's data."""
    from dataclasses import replace

    import gimbal.datasets as datasets
    from gimbal.datasets.synthetic import cache_key

    spec = SYNTHETIC["v0.2.1_L01_noise"]
    assert cache_key(spec) == cache_key(replace(spec))
    noisier = replace(spec, noise_px=spec.noise_px + 1.0)
    assert cache_key(noisier) != cache_key(spec)
    assert cache_key(replace(spec, cameras=(spec.cameras[0] + 1e-9, *spec.cameras[1:]))) != cache_key(spec)
    monkeypatch.setenv("GIMBAL_CACHE_DIR", str(tmp_path))
    first = load_dataset("v0.2.1_L01_noise", max_T=50)
    monkeypatch.setitem(datasets.SYNTHETIC, "v0.2.1_L01_noise", noisier)
    second = load_dataset("v0.2.1_L01_noise", max_T=50)
    assert len(list((tmp_path / "datasets").glob("v0.2.1_L01_noise__gen*.nc"))) == 2
    assert not np.allclose(first["observations"].values, second["observations"].values, equal_nan=True)


def test_save_load_round_trip_is_lossless(tmp_path):
    ds = load_dataset("v0.2.1_L03_missingness", max_T=50)
    path = save_dataset(ds, tmp_path / "ds.nc")
    back = load_dataset(path)
    xr.testing.assert_identical(back, ds)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_dataset(ds, path)
    save_dataset(ds, path, overwrite=True)


def test_truncation():
    ds = load_dataset("rodent18_multistate", max_T=20, max_K=5)
    assert ds.sizes["frame"] == 20 and ds.sizes["keypoint"] == 5 and ds.sizes["bone"] == 4
    assert skeleton_of(ds).parents == (-1, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="max_T=5000 is outside"):
        load_dataset("v0.2.1_L00_minimal", max_T=5000)
    with pytest.raises(ValueError, match="max_K=9"):
        load_dataset("v0.2.1_L00_minimal", max_K=9)


def test_bring_your_own_arrays(tmp_path):
    src = load_dataset("v0.2.1_L00_minimal", max_T=30)
    ds = from_arrays(
        src["observations"].values,
        src["camera_matrix"].values,
        [-1, 0, 1, 1],
        keypoint_names=["a", "b", "c", "d"],
        image_size=(1280, 720),
    )
    assert list(ds["keypoint"].values) == ["a", "b", "c", "d"]
    path = save_dataset(ds, tmp_path / "mine.nc")
    assert load_dataset(str(path), max_T=10).sizes["frame"] == 10


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda o, P, p: (o[..., 0], P, p), "observations must have 4 dimensions"),
        (lambda o, P, p: (o, P[:2], p), "camera_matrices must be \\(C, 3, 4\\)"),
        (lambda o, P, p: (o, P, [-1, 0, 1]), "parents has 3 entries"),
        (lambda o, P, p: (o, P, [-1, 2, 0, 1]), "not a tree"),
        (lambda o, P, p: (o, P, [0, 0, 1, 1]), "root comes first"),
    ],
)
def test_bad_arrays_get_clear_errors(mutate, match):
    src = load_dataset("v0.2.1_L00_minimal", max_T=10)
    obs, P, parents = mutate(src["observations"].values, src["camera_matrix"].values, [-1, 0, 1, 1])
    with pytest.raises(ValueError, match=match):
        from_arrays(obs, P, parents)


def test_a_camera_that_sees_nothing_is_an_error():
    src = load_dataset("v0.2.1_L00_minimal", max_T=10)
    obs = src["observations"].values.copy()
    obs[:, 1] = np.nan
    with pytest.raises(ValueError, match="cam1.*see no keypoint"):
        from_arrays(obs, src["camera_matrix"].values, [-1, 0, 1, 1])


def test_unknown_name_and_corrupted_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'v9_nope'.*v0.2.1_L00_minimal"):
        load_dataset("v9_nope")
    bad = tmp_path / "broken.nc"
    good = save_dataset(load_dataset("v0.2.1_L00_minimal", max_T=10), tmp_path / "good.nc")
    bad.write_bytes(good.read_bytes()[:2000])  # truncated copy
    with pytest.raises(DatasetFileError, match="truncated or corrupted"):
        load_dataset(bad)
    with pytest.raises(DatasetFileError, match="does not exist"):
        load_dataset(tmp_path / "missing.nc")
    assert "deepfly3d" in list_datasets()


@pytest.mark.network
def test_deepfly3d_real_data_loads():
    try:
        ds = load_dataset("deepfly3d")
    except DeepFly3DUnavailable as exc:
        pytest.skip(f"offline: {exc}")
    assert ds.sizes["frame"] == 15 and ds.sizes["camera"] == 7 and ds.sizes["keypoint"] == 38
    seen = np.isfinite(ds["observations"].values[..., 0])
    # DeepFly3D's rule: cameras 0-2 and 4-6 see one side each (19 keypoints; 2 and 4 not its 3 stripes), the front
    # camera both sides' front and middle legs below the coxa-femur joint and the antennae (14)
    np.testing.assert_array_equal(seen.any(0).sum(-1), [19, 19, 16, 14, 16, 19, 19])
    raw = load_deepfly3d(cache_dir() / "downloads", visible_only=False)
    raw_seen = np.isfinite(raw["observations"].values[..., 0])
    assert ds.attrs["invisible_detections_dropped"] == (raw_seen & ~seen).sum() == 450 and not (seen & ~raw_seen).any()

    def resid(d):
        P = d["camera_matrix"].values
        return np.linalg.norm(project(d["positions_reference"].values, P) - d["observations"].values, axis=-1)

    # against DeepFly3D's own 3D estimate the kept detections reproject within a few pixels in every camera, the
    # dropped ones (predictions of joints the camera cannot see) far off
    assert np.all(np.nanmedian(resid(ds), axis=(0, 2)) < 6)
    assert np.median(resid(raw)[raw_seen & ~seen]) > 50


def test_excluded_detections_are_missing_and_recorded(tmp_path):
    from gimbal.datasets import exclude_detections, save_dataset

    full = load_dataset("v0.2.1_L00_minimal", max_T=6)
    ds = load_dataset("v0.2.1_L00_minimal", max_T=6, exclude=["cam1:distal_left", " cam2 : distal_right"])
    seen = np.isfinite(ds["observations"].values).all(-1)  # (frame, camera, keypoint)
    expected = np.isfinite(full["observations"].values).all(-1)
    expected[:, 1, 2] = expected[:, 2, 3] = False
    np.testing.assert_array_equal(seen, expected)
    np.testing.assert_array_equal(ds["observations"].values[seen], full["observations"].values[seen])
    assert ds.attrs["excluded_detections"] == "cam1:distal_left,cam2:distal_right"
    again = exclude_detections(ds, [("cam0", "root")])
    assert again.attrs["excluded_detections"] == "cam1:distal_left,cam2:distal_right,cam0:root"
    assert not np.isfinite(again["observations"].values[:, 0, 0]).any()
    save_dataset(again, tmp_path / "left_out.nc")
    assert load_dataset(tmp_path / "left_out.nc").attrs["excluded_detections"].endswith("cam0:root")
    assert exclude_detections(ds, []) is ds


@pytest.mark.parametrize("pair, match", [("cam1", "CAMERA:KEYPOINT"), ("cam9:root", "not a camera of this dataset"),
                                         ("cam1:elbow", "not a keypoint of this dataset"),
                                         ("cam2:*", "not a keypoint of this dataset"),
                                         ("cam0:distal_right,cam1:distal_right,cam2:distal_right",
                                          "leaves a dataset that cannot be fitted")])
def test_excluding_unknown_or_everything_is_a_clear_error(pair, match):
    from gimbal.errors import UsageError

    with pytest.raises(UsageError, match=match):
        load_dataset("v0.2.1_L00_minimal", max_T=6, exclude=pair.split(","))
