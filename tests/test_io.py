"""Import and export against the real tools' own code and files.

References nobody here wrote: aniposelib's ``CameraGroup`` (projection, undistortion,
triangulation, ``dump``), movement's savers and validators, sleap-io's writer, and the
real recordings in ``../shared/data`` (skipped, with the reason, where absent).
"""

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from gimbal.model.cameras import project, triangulate_dlt
from gimbal.io import (
    CalibrationFileError,
    DetectionFileError,
    SessionImportError,
    SkeletonFileError,
    calibration_from_dataset,
    import_session,
    load_calibration,
    load_detections,
    load_skeleton,
)
from gimbal.datasets import read_dataset_file, save_dataset
from gimbal.io.calibration import Camera
from gimbal.io.export import posterior_poses, reproject_raw, to_anipose_csv, to_dlc_files, to_movement, uncertainty_path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GIMBAL_SHARED_DATA", REPO.parent / "shared" / "data"))
SESSION = SHARED / "sleap_anipose_minimal_session"
MULTIVIEW = SHARED / "sleap_multiview_min_session"
DANNCE = SHARED / "dannce_markerless_mouse"
MOUSE_SKELETON = REPO / "examples" / "skeletons" / "sleap_anipose_mouse.yaml"

needs_session = pytest.mark.skipif(not SESSION.is_dir(), reason=f"real recording not found at {SESSION} "
                                   "(set GIMBAL_SHARED_DATA to the shared/data folder)")
needs_multiview = pytest.mark.skipif(not MULTIVIEW.is_dir(), reason=f"SLEAP multiview fixture not found at {MULTIVIEW}")
needs_dannce = pytest.mark.skipif(not DANNCE.is_dir(), reason=f"DANNCE labelled mice not found at {DANNCE}")

aniposelib = pytest.importorskip("aniposelib.cameras")


def _anipose_group(n=3, dist=(-0.28, 0.05, 0.001, -0.002, 0.01), seed=0):
    """A ring of aniposelib cameras around the origin, with distortion, looking at a subject ~300 mm away."""
    import cv2

    rng = np.random.default_rng(seed)
    cams = []
    for i in range(n):
        angle = 2 * np.pi * i / n
        center = 300 * np.array([np.cos(angle), np.sin(angle), 0.3])
        z = -center / np.linalg.norm(center)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        f = 800 + 50 * i
        K = np.array([[f, 0, 639.5], [0, f, 511.5], [0, 0, 1.0]])
        cams.append(aniposelib.Camera(name=f"cam{chr(65 + i)}", size=(1280, 1024), matrix=K,
                                      dist=np.asarray(dist) * (1 + 0.1 * i), rvec=cv2.Rodrigues(R)[0].ravel(),
                                      tvec=-R @ center + rng.normal(0, 1, 3)))
    return aniposelib.CameraGroup(cams)


def _written(path: Path) -> Path:
    """The file movement wrote for ``path``: single-animal DeepLabCut files get the individual's name appended."""
    return path if path.exists() else next(path.parent.glob(f"{path.name.split('.')[0]}_*{path.suffix}"))


def _points(T=30, K=4, seed=1, spread=25.0):
    rng = np.random.default_rng(seed)
    base = rng.normal(0, spread, (K, 3))
    drift = np.cumsum(rng.normal(0, 1.0, (T, 1, 3)), axis=0)
    return base[None] + drift


# --- calibration against aniposelib ---------------------------------------------------------


def test_calibration_matches_aniposelib_projection_undistortion_and_triangulation(tmp_path):
    group = _anipose_group()
    group.dump(str(tmp_path / "calibration.toml"))  # aniposelib's own writer
    calib = load_calibration(tmp_path / "calibration.toml")
    assert calib.names == group.get_names()
    X = _points().reshape(-1, 3)
    theirs = group.project(X)  # (C, N, 2), raw pixels with distortion
    ours = np.stack([c.project(X) for c in calib.cameras])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    for c, (cam, acam) in enumerate(zip(calib.cameras, group.cameras)):
        undist = cam.undistort(theirs[c])  # pinhole pixels
        norm = np.c_[undist, np.ones(len(undist))] @ np.linalg.inv(cam.K).T
        np.testing.assert_allclose(norm[:, :2], acam.undistort_points(theirs[c]).reshape(-1, 2), atol=1e-6)
        np.testing.assert_allclose(undist, cam.project(X, distort=False), atol=1e-5)  # undistort inverts distort
    und = np.stack([cam.undistort(theirs[c]) for c, cam in enumerate(calib.cameras)], axis=1)  # (N, C, 2)
    ours3d = triangulate_dlt(und, calib.pinhole_matrices())
    np.testing.assert_allclose(ours3d, group.triangulate(theirs, undistort=True), atol=1e-4)
    np.testing.assert_allclose(ours3d, X, atol=1e-4)


def _fisheye_group(dist=(0.08, -0.02, 0.004, -0.001)):
    """Three aniposelib cameras, the first two with fisheye lenses (aniposelib's ``FisheyeCamera``), the third not."""
    standard = _anipose_group()
    cams = [aniposelib.FisheyeCamera(name=c.get_name(), size=c.get_size(), matrix=c.get_camera_matrix(),
                                     dist=np.asarray(dist) * (1 + 0.2 * i), rvec=c.get_rotation(),
                                     tvec=c.get_translation()) for i, c in enumerate(standard.cameras[:2])]
    return aniposelib.CameraGroup(cams + [standard.cameras[2]])


def test_fisheye_calibration_matches_aniposelib_and_survives_import_save_and_export(tmp_path):
    from movement.io import save_poses

    group = _fisheye_group()
    group.dump(str(tmp_path / "calibration.toml"))  # aniposelib's own writer: 'fisheye = true' and 4 coefficients
    calib = load_calibration(tmp_path / "calibration.toml")
    assert [c.fisheye for c in calib.cameras] == [True, True, False]
    assert [c.dist.size for c in calib.cameras] == [4, 4, 5]
    bad = tmp_path / "bad.toml"
    bad.write_text((tmp_path / "calibration.toml").read_text().replace("fisheye = true", 'fisheye = "yes"', 1))
    with pytest.raises(CalibrationFileError, match=r"fisheye must be true or false, got 'yes'"):
        load_calibration(bad)
    X = _points(T=10, spread=45.0)
    flat = X.reshape(-1, 3)
    theirs = np.stack([cam.project(flat).reshape(-1, 2) for cam in group.cameras])  # raw pixels
    np.testing.assert_allclose(np.stack([c.project(flat) for c in calib.cameras]), theirs, atol=1e-6)
    for c, (cam, acam) in enumerate(zip(calib.cameras, group.cameras)):
        undist = cam.undistort(theirs[c])
        norm = np.c_[undist, np.ones(len(undist))] @ np.linalg.inv(cam.K).T
        np.testing.assert_allclose(norm[:, :2], acam.undistort_points(theirs[c]).reshape(-1, 2), atol=1e-6)
        np.testing.assert_allclose(undist, cam.project(flat, distort=False), atol=1e-5)
    # the lens model matters: read as OpenCV's standard model, the same four numbers move a detection 400 px from
    # the image centre by pixels (they are k1 k2 k3 k4 of the fisheye model, not k1 k2 p1 p2)
    fish = calib.cameras[0]
    as_standard = Camera("camA", fish.K, fish.R, fish.t, fish.dist, fish.size)
    angle = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = fish.K[:2, 2] + 400 * np.c_[np.cos(angle), np.sin(angle)]
    assert np.linalg.norm(as_standard.undistort(ring) - fish.undistort(ring), axis=-1).min() > 5
    # import -> save -> load -> export: the fisheye lenses are kept and the reprojection is aniposelib's
    files = {}
    kps = ["body", "head", "tail", "paw"]
    for c, name in enumerate(group.get_names()):
        save_poses.to_dlc_file(_movement_2d(theirs[c].reshape(10, 4, 2), np.ones((10, 4)), kps),
                               tmp_path / f"{name}.h5")
        files[name] = _written(tmp_path / f"{name}.h5")
    (tmp_path / "skel.yaml").write_text("keypoints: [body, head, tail, paw]\nparents: [null, body, body, body]\n")
    ds = import_session(files, tmp_path / "calibration.toml", tmp_path / "skel.yaml").dataset
    save_dataset(ds, tmp_path / "ds.nc")
    back = read_dataset_file(tmp_path / "ds.nc")
    assert back.attrs["gimbal_format_version"] == 2
    np.testing.assert_allclose(triangulate_dlt(np.moveaxis(back["observations"].values, 1, 2),
                                               back["camera_matrix"].values), X, atol=1e-3)
    again = calibration_from_dataset(back)
    assert [c.fisheye for c in again.cameras] == [True, True, False]
    np.testing.assert_allclose(reproject_raw(X, back), np.moveaxis(theirs.reshape(3, 10, 4, 2), 0, 1), atol=1e-6)


def test_calibration_errors_name_the_problem(tmp_path):
    group = _anipose_group()
    group.dump(str(tmp_path / "c.toml"))
    text = (tmp_path / "c.toml").read_text()
    bad = tmp_path / "nan.toml"
    first = text.index("translation = [ ") + len("translation = [ ")
    bad.write_text(text[:first] + "nan, " + text[text.index(",", first) + 1:].lstrip())
    with pytest.raises(CalibrationFileError, match="camera 'camA': its translation contains NaN"):
        load_calibration(bad)
    (tmp_path / "long.toml").write_text(text.replace("translation = [ ", "translation = [ 1.0, ", 1))
    with pytest.raises(CalibrationFileError, match="camera 'camA': its translation must have 3 numbers"):
        load_calibration(tmp_path / "long.toml")
    with pytest.raises(CalibrationFileError, match="does not exist"):
        load_calibration(tmp_path / "missing.toml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(CalibrationFileError, match="unknown calibration format"):
        load_calibration(tmp_path / "c.json")


@needs_session
def test_calibration_check_lists_a_steady_offset_first():
    """A constant 13 px offset added to one (camera, keypoint) of a six-camera recording (3 px noise, 10% outliers)
    tops the check's offsets, measured within 20% of its size, with a scatter of the noise; before it, no pair's
    offset reaches 4 px. The listing is in the text and the JSON the dataset keeps."""
    from gimbal.datasets import load_dataset
    from gimbal.io.calibration_check import check_calibration

    ds = load_dataset("rodent18_multistate", max_T=60)
    obs, P = ds["observations"].values.copy(), ds["camera_matrix"].values
    names, kps = [str(c) for c in ds["camera"].values], [str(k) for k in ds["keypoint"].values]
    clean = check_calibration(obs, P, names, keypoints=kps)
    assert max(o.offset_px for o in clean.offsets) < 4.0, clean.text()
    obs[:, 2, 5] += [12.0, -5.0]
    report = check_calibration(obs, P, names, keypoints=kps)
    top = report.offsets[0]
    assert (top.camera, top.keypoint) == (names[2], kps[5]), report.text()
    assert abs(top.offset_px - 13.0) < 0.2 * 13.0 and top.scatter_px < 3 * 3.0, top
    assert f"{names[2]}:{kps[5]}  {top.offset_px:.1f} px" in report.text()
    assert report.to_dict()["largest_offsets"][0]["keypoint"] == kps[5]


def test_real_broken_calibration_is_flagged_by_camera_name_and_valid_one_passes(tmp_path, capsys):
    """The import names the broken camera; the dataset keeps the check, so `gimbal fit` and `gimbal evaluate` say it
    again whoever imported the file (they had fitted it silently)."""
    from gimbal.datasets import save_dataset
    from gimbal.io.calibration_check import flagged_at_import

    imported = import_session(SESSION, SESSION / "calibration.toml", MOUSE_SKELETON)
    broken = imported.calibration_report
    assert [c.name for c in broken.flagged] == ["side"]
    assert "identical to 'top'" in broken.flagged[0].cause
    said = flagged_at_import(imported.dataset)
    assert said.startswith("the calibration check at import flagged camera(s) side ('side' is ") and "biased" in said
    assert flagged_at_import(imported.dataset.sel(camera=["back", "mid", "top"])) is None  # imported without it
    valid = import_session(SESSION, SESSION / "calibration_valid.toml", MOUSE_SKELETON)
    assert valid.calibration_report.ok, valid.calibration_report.text()
    assert all(c.heldout_median_px < 20 for c in valid.calibration_report.cameras), valid.calibration_report.text()
    assert flagged_at_import(valid.dataset) is None
    from gimbal.cli import main

    path = save_dataset(imported.dataset, tmp_path / "broken.nc")
    # evaluate's up-front checks run before any fit: an unknown camera stops it there, after the warning
    assert main(["evaluate", "--dataset", str(path), "--cameras", "nope", "--out", str(tmp_path / "l.json")]) != 0
    assert f"warning: {said}" in capsys.readouterr().err
    # the diagnostic groups: the header records it, the page's header and the summary show it
    from gimbal.divergence.book import generate_pages
    from gimbal.divergence.summary import collect_run

    root = tmp_path / "diag"
    assert main(["diag", "run", "--groups", "1", "--run-id", "cal", "--root", str(root), "--dataset", str(path),
                 "--max-T", "5"]) == 0
    [result] = collect_run(root, "cal")
    assert result["header"]["parameters"]["calibration_flagged"] == said
    out, _ = generate_pages(root, "cal", tmp_path / "project")
    assert f"| calibration | {said}" in (out / "groups" / "group_1_build_only_sanity.md").read_text()
    assert "**Calibration.** The calibration check at import flagged camera(s) side" in (
        out / "report_summary.md").read_text()


@needs_session
def test_real_session_imports_with_undistortion_checked_against_aniposelib():
    from aniposelib.cameras import CameraGroup

    res = import_session(SESSION, SESSION / "calibration_valid.toml", MOUSE_SKELETON, min_confidence=0.2)
    ds = res.dataset
    assert dict(ds.sizes)["frame"] == 120 and ds.sizes["camera"] == 4 and ds.sizes["keypoint"] == 15
    assert list(ds["camera"].values) == ["back", "mid", "side", "top"]
    assert ds["keypoint"].values[0] == "Trunk" and ds["parents"].values[0] == -1
    assert "confidence" in ds and ds["confidence"].dims == ("frame", "camera", "keypoint")
    low = ds["confidence"].values < 0.2
    assert np.isnan(ds["observations"].values[low]).all() and low.any()
    group = CameraGroup.load(str(SESSION / "calibration_valid.toml"))
    for c, name in enumerate(ds["camera"].values):
        acam = group.cameras[group.get_names().index(str(name))]
        raw = ds["observations_raw"].values[:, c].reshape(-1, 2)
        ok = np.isfinite(raw).all(-1)
        K = ds["camera_intrinsics"].values[c]
        norm = np.c_[ds["observations"].values[:, c].reshape(-1, 2)[ok], np.ones(ok.sum())] @ np.linalg.inv(K).T
        # aniposelib runs OpenCV's default 5 iterations; ours iterates to convergence, so it inverts the distortion
        np.testing.assert_allclose(norm[:, :2], acam.undistort_points(raw[ok]).reshape(-1, 2), atol=1e-5)
        redistorted = acam.distort_points(norm[:, :2]).reshape(-1, 2)
        np.testing.assert_allclose(redistorted, raw[ok], atol=1e-6)
    # the SLEAP .slp and its .analysis.h5 export hold the same detections
    a = load_detections(SESSION / "back" / "minimal_back_proofread.slp")
    b = load_detections(SESSION / "back" / "minimal_back_proofread.analysis.h5")
    np.testing.assert_allclose(a["position"].values, b["position"].values, equal_nan=True)


# --- detections through the ecosystem's writers ---------------------------------------------


def _movement_2d(points2d, conf, keypoints, individuals=("mouse",)):
    from movement.io.load_poses import from_numpy

    pos = np.moveaxis(points2d, -1, 1)[..., None]  # (T, 2, K, 1)
    if len(individuals) > 1:
        pos = np.concatenate([pos + 100 * i for i in range(len(individuals))], axis=-1)
        conf = np.repeat(conf[..., None], len(individuals), axis=-1)
    else:
        conf = conf[..., None]
    return from_numpy(pos, conf, individual_names=list(individuals), keypoint_names=list(keypoints))


@pytest.mark.parametrize("writer", ["dlc_h5", "dlc_csv", "lp_csv", "sleap_h5"])
def test_files_written_by_movement_import_and_triangulate(tmp_path, writer):
    from movement.io import save_poses

    group = _anipose_group()
    group.dump(str(tmp_path / "calibration.toml"))
    X = _points()
    kps = ["body", "head", "tail", "paw"]
    raw = np.stack([group.cameras[c].project(X.reshape(-1, 3)).reshape(*X.shape[:2], 2) for c in range(3)], axis=1)
    conf = np.full(raw.shape[:3], 0.9)
    conf[3, 1, 2] = 0.1
    files = {}
    for c, name in enumerate(group.get_names()):
        ds = _movement_2d(raw[:, c], conf[:, c], kps)
        suffix = {"dlc_h5": ".h5", "dlc_csv": ".csv", "lp_csv": ".csv", "sleap_h5": ".analysis.h5"}[writer]
        path = tmp_path / f"{name}{suffix}"
        {"dlc_h5": save_poses.to_dlc_file, "dlc_csv": save_poses.to_dlc_file, "lp_csv": save_poses.to_lp_file,
         "sleap_h5": save_poses.to_sleap_analysis_file}[writer](ds, path)
        files[name] = _written(path)
    (tmp_path / "skel.yaml").write_text("edges: [[body, head], [body, tail], [body, paw]]\nroot: body\n")
    res = import_session(files, tmp_path / "calibration.toml", tmp_path / "skel.yaml", min_confidence=0.5)
    ds = res.dataset
    assert list(ds["keypoint"].values) == ["body", "head", "tail", "paw"]
    order = [kps.index(k) for k in ds["keypoint"].values]
    np.testing.assert_allclose(ds["observations_raw"].values[:, :, :, :][~np.isnan(ds["observations_raw"].values)],
                               raw[:, :, order][~np.isnan(ds["observations_raw"].values)], atol=1e-3)
    assert np.isnan(ds["observations"].values[3, 1, order.index(2)]).all()  # below --min-confidence
    tri = triangulate_dlt(np.moveaxis(ds["observations"].values, 1, 2), ds["camera_matrix"].values)
    np.testing.assert_allclose(tri, X[:, order], atol=1e-2)


def test_multi_animal_file_needs_an_individual(tmp_path):
    from movement.io import save_poses

    ds = _movement_2d(np.random.default_rng(0).uniform(100, 900, (5, 2, 2)), np.ones((5, 2)), ["a", "b"],
                      individuals=("mouse1", "mouse2"))
    path = tmp_path / "two.h5"
    save_poses.to_dlc_file(ds, path, split_individuals=False)
    with pytest.raises(DetectionFileError, match=r"--individual.*|individuals \['mouse1', 'mouse2'\]"):
        load_detections(path)
    one = load_detections(path, individual="mouse2")
    np.testing.assert_allclose(one["position"].values, ds["position"].sel(individual="mouse2").transpose(
        "time", "keypoint", "space").values, atol=1e-4)


def test_openpose_folder_picks_the_most_confident_person(tmp_path):
    for f in range(3):
        weak = [10.0, 20.0, 0.2] * 25
        strong = sum(([100.0 + k, 200.0 + f, 0.9] for k in range(25)), [])
        strong[3:6] = [0.0, 0.0, 0.0]  # OpenPose's "not found"
        people = [{"pose_keypoints_2d": weak}, {"pose_keypoints_2d": strong}]
        (tmp_path / f"clip_{f:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    det = load_detections(tmp_path)
    assert det.sizes["keypoint"] == 25 and str(det["keypoint"].values[1]) == "Neck"
    np.testing.assert_allclose(det["position"].values[2, 0], [100.0, 202.0])
    assert np.isnan(det["position"].values[:, 1]).all()
    np.testing.assert_allclose(det["confidence"].values[0, 0], 0.9)
    first = load_detections(tmp_path, person=0)
    np.testing.assert_allclose(first["position"].values[0, 0], [10.0, 20.0])


def test_slp_written_by_sleap_io_and_a_truncated_one(tmp_path):
    import sleap_io as sio

    skel = sio.Skeleton(["a", "b", "c"], edges=[("a", "b"), ("b", "c")])
    video = sio.Video(filename="fake.mp4")
    pts = np.array([[10.0, 20.0], [30.0, 40.0], [np.nan, np.nan]])
    frames = [sio.LabeledFrame(video=video, frame_idx=i, instances=[sio.PredictedInstance.from_numpy(
        pts + i, skeleton=skel, point_scores=np.array([0.9, 0.8, 0.0]), score=1.0)]) for i in range(4)]
    path = tmp_path / "cam.slp"
    sio.save_slp(sio.Labels(frames, videos=[video], skeletons=[skel]), str(path))
    det = load_detections(path)
    np.testing.assert_allclose(det["position"].values[3, :2], pts[:2] + 3)
    assert np.isnan(det["position"].values[:, 2]).all()
    assert load_skeleton(path, root="a").names == ("a", "b", "c")
    cut = tmp_path / "cut.slp"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DetectionFileError, match="truncated"):
        load_detections(cut)


# --- camera and keypoint matching, bad inputs ----------------------------------------------


@pytest.fixture
def synthetic_files(tmp_path):
    from movement.io import save_poses

    group = _anipose_group()
    group.dump(str(tmp_path / "calibration.toml"))
    X = _points(T=10, spread=45.0)  # away from the image centre, where the lens distortion is a few pixels
    files = {}
    for c, name in enumerate(group.get_names()):
        raw = group.cameras[c].project(X.reshape(-1, 3)).reshape(10, 4, 2)
        save_poses.to_dlc_file(_movement_2d(raw, np.ones((10, 4)), ["body", "head", "tail", "paw"]), tmp_path / f"{name}.h5")
        files[name] = _written(tmp_path / f"{name}.h5")
    (tmp_path / "skel.yaml").write_text("keypoints: [body, head, tail, paw]\nparents: [null, body, body, body]\n")
    return tmp_path, files


def test_an_anipose_project_folder_is_matched_by_its_cam_regex(tmp_path, capsys):
    """anipose names a camera by its cam_regex's group in the file name (``...-camA.h5`` is camera ``A``)."""
    from movement.io import save_poses

    from gimbal.cli import main

    group = _anipose_group()
    for cam, name in zip(group.cameras, "ABC"):
        cam.set_name(name)
    group.dump(str(tmp_path / "calibration.toml"))
    X = _points(T=10, spread=45.0)
    kps = ["body", "head", "tail", "paw"]
    folder = tmp_path / "pose-2d"
    folder.mkdir()
    for c, name in enumerate("ABC"):
        raw = group.cameras[c].project(X.reshape(-1, 3)).reshape(10, 4, 2)
        # anipose names pose-2d files after their videos; DeepLabCut appends its scorer to the video's name
        path = folder / f"2019-08-02-vid01-cam{name}{'DLC_resnet50_mouseJun1shuffle1_100000' if name == 'C' else ''}.h5"
        save_poses.to_dlc_file(_movement_2d(raw, np.ones((10, 4)), kps), path)
        _written(path).rename(path)  # movement appends the individual's name
    (tmp_path / "skel.yaml").write_text("keypoints: [body, head, tail, paw]\nparents: [null, body, body, body]\n")
    config = tmp_path / "config.toml"  # anipose's project config: its cam_regex and constraints
    config.write_text("cam_regex = '-cam([A-Z])$'\n\n[triangulation]\n"
                      "constraints = [['body', 'head'], ['body', 'tail'], ['body', 'paw']]\n")
    with pytest.raises(SessionImportError, match="no detection file named after a calibration camera.*--cam-regex"):
        import_session(folder, tmp_path / "calibration.toml", tmp_path / "skel.yaml")
    for skeleton, cam_regex in ((config, None), (tmp_path / "skel.yaml", "-cam([A-Z])$")):
        ds = import_session(folder, tmp_path / "calibration.toml", skeleton, cam_regex=cam_regex).dataset
        assert list(ds["camera"].values) == ["A", "B", "C"]
        tri = triangulate_dlt(np.moveaxis(ds["observations"].values, 1, 2), ds["camera_matrix"].values)
        np.testing.assert_allclose(tri, X[:, [kps.index(k) for k in ds["keypoint"].values]], atol=1e-2)
    with pytest.raises(SessionImportError, match="has no group"):
        import_session(folder, tmp_path / "calibration.toml", tmp_path / "skel.yaml", cam_regex="-cam[A-Z]$")
    out = tmp_path / "ds.nc"
    assert main(["import", "--detections", str(folder), "--calibration", str(tmp_path / "calibration.toml"),
                 "--skeleton", str(tmp_path / "skel.yaml"), "--cam-regex=-cam([A-Z])$", "--out", str(out)]) == 0
    assert "3 cameras ['A', 'B', 'C']" in capsys.readouterr().out and out.is_file()


def test_unmatched_camera_names_list_both_sides_and_camera_map_fixes_it(synthetic_files):
    tmp, files = synthetic_files
    renamed = {"left": files["camA"], "camB": files["camB"], "camC": files["camC"]}
    with pytest.raises(SessionImportError, match=r"\['left'\].*camA.*--camera-map left=camA"):
        import_session(renamed, tmp / "calibration.toml", tmp / "skel.yaml")
    ds = import_session(renamed, tmp / "calibration.toml", tmp / "skel.yaml", camera_map={"left": "camA"}).dataset
    assert list(ds["camera"].values) == ["camA", "camB", "camC"]
    extra = dict(files, camD=files["camA"])  # one detection file more than the calibration has cameras
    with pytest.raises(SessionImportError, match=r"\['camD'\]"):
        import_session(extra, tmp / "calibration.toml", tmp / "skel.yaml")


def test_bad_inputs_get_clear_errors(synthetic_files):
    tmp, files = synthetic_files
    (tmp / "unknown.yaml").write_text("edges: [[body, head], [body, wing]]\n")
    with pytest.raises(SessionImportError, match=r"\['wing'\].*not in camera"):
        import_session(files, tmp / "calibration.toml", tmp / "unknown.yaml")
    small = (tmp / "calibration.toml").read_text().replace("size = [ 1280, 1024,]", "size = [ 320, 240,]")
    (tmp / "small.toml").write_text(small)
    with pytest.raises(SessionImportError, match="outside its 320x240 image"):
        import_session(files, tmp / "small.toml", tmp / "skel.yaml")
    from movement.io import save_poses

    blind = {}
    for name, path in files.items():
        det = load_detections(path)
        if name != "camA":
            det["position"].loc[{"keypoint": "paw"}] = np.nan  # paw seen by camA alone: no 3D position
        pos = det["position"].values
        ds2 = _movement_2d(pos, np.ones(pos.shape[:2]), [str(k) for k in det["keypoint"].values])
        save_poses.to_dlc_file(ds2, tmp / f"blind_{name}.h5")
        blind[name] = _written(tmp / f"blind_{name}.h5")
    with pytest.raises(SessionImportError, match=r"\['paw'\] are never detected by two cameras"):
        import_session(blind, tmp / "calibration.toml", tmp / "skel.yaml")
    # a detector's guess 8 px past the image's edge is missing, with a note; the rest of the file is imported
    det = load_detections(files["camB"])
    pos = det["position"].values.copy()  # (frame, keypoint, uv)
    pos[3, 1, 0] = -8.0
    save_poses.to_dlc_file(_movement_2d(pos, np.ones(pos.shape[:2]), [str(k) for k in det["keypoint"].values]),
                           tmp / "edge_camB.h5")
    res = import_session(dict(files, camB=_written(tmp / "edge_camB.h5")), tmp / "calibration.toml", tmp / "skel.yaml")
    assert "1 detections outside their camera's image marked missing {'camB': 1}" in res.notes
    raw = res.dataset["observations_raw"].values
    assert np.isnan(raw[3, 1, 1]).all() and np.isfinite(raw[:, 1]).sum() == 2 * (10 * 4 - 1)


def test_skeleton_edges_become_a_tree_and_cycles_are_named(tmp_path):
    (tmp_path / "s.yaml").write_text("edges: [[a, b], [b, c], [c, a], [c, d]]\nroot: a\n")
    with pytest.warns(UserWarning, match="close cycles"):
        skel = load_skeleton(tmp_path / "s.yaml")
    assert skel.names[0] == "a" and len(skel.names) == 4
    (tmp_path / "gap.yaml").write_text("edges: [[a, b], [c, d]]\n")
    with pytest.raises(SkeletonFileError, match="not connected"):
        load_skeleton(tmp_path / "gap.yaml")
    anipose = SHARED / "aniposelib_calibrations" / "7cam-allen-mouse" / "config.toml"
    if anipose.is_file():
        with pytest.raises(SkeletonFileError, match="not connected"):  # its constraints leave the head apart
            load_skeleton(anipose)


# --- DANNCE, SLEAP sessions --------------------------------------------------------------------


@needs_dannce
def test_dannce_calibration_reprojects_its_own_3d_labels_exactly():
    from scipy.io import loadmat

    path = DANNCE / "markerless_mouse_1" / "label3d_dannce.mat"
    calib = load_calibration(path)
    mat = loadmat(path, simplify_cells=True)
    assert calib.names == [str(n) for n in mat["camnames"]]
    for cam, labels in zip(calib.cameras, mat["labelData"]):
        X = labels["data_3d"].reshape(-1, 3)
        y = labels["data_2d"].reshape(-1, 2)
        ok = np.isfinite(X).all(-1) & np.isfinite(y).all(-1)
        np.testing.assert_allclose(cam.project(X[ok]), y[ok], atol=1e-6)  # skew and MATLAB transposes included
        np.testing.assert_allclose(cam.undistort(y[ok]), cam.project(X[ok], distort=False), atol=1e-4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skel = load_skeleton(DANNCE / "mouse22_skeleton.mat")
    assert len(skel.names) == 22 and any("close cycles" in str(w.message) for w in caught)


@needs_multiview
def test_sleap_session_calibration_and_detections():
    calib = load_calibration(MULTIVIEW / "min_session.slp")
    assert calib.names == ["back", "backL", "mid", "midL", "side", "sideL", "top", "topL"]
    toml = load_calibration(MULTIVIEW / "calibration.toml")
    for a, b in zip(calib.cameras, toml.cameras):
        np.testing.assert_allclose(a.pinhole_matrix(), b.pinhole_matrix(), rtol=1e-9)
    with pytest.raises(DetectionFileError, match="--individual"):
        import_session(MULTIVIEW / "min_session.slp", MULTIVIEW / "min_session.slp")
    res = import_session(MULTIVIEW / "min_session.slp", MULTIVIEW / "min_session.slp", individual="track_0")
    assert res.dataset.sizes["camera"] == 8 and res.dataset.sizes["frame"] == 3
    # the same file given as one camera's detections: movement would read its first video only; refused, with the fix
    with pytest.raises(DetectionFileError, match=r"8 videos \(min_session_topL.mp4.*give it alone as the detections"):
        load_detections(MULTIVIEW / "min_session.slp", individual="track_0")


# --- export ------------------------------------------------------------------------------------


def _fake_trace(ds, seed=0):
    rng = np.random.default_rng(seed)
    tri = triangulate_dlt(np.moveaxis(ds["observations"].values, 1, 2), ds["camera_matrix"].values)
    x = tri[None, None] + rng.normal(0, 0.5, (2, 50, *tri.shape))
    post = xr.Dataset({"x": (("chain", "draw", "frame", "keypoint", "xyz"), x)},
                      coords={"frame": ds["frame"].values, "keypoint": ds["keypoint"].values, "xyz": ["x", "y", "z"]})
    return xr.DataTree.from_dict({"posterior": post}), x


def test_exports_load_back_in_movement_and_reproject_with_distortion(synthetic_files):
    from movement.io import load_dataset as mv_load
    from movement.validators.datasets import ValidPosesInputs

    tmp, files = synthetic_files
    ds = import_session(files, tmp / "calibration.toml", tmp / "skel.yaml").dataset
    trace, x = _fake_trace(ds)
    poses = posterior_poses(trace)
    np.testing.assert_allclose(poses.mean.values, x.mean((0, 1)))
    np.testing.assert_allclose(poses.q95.values, np.quantile(x.reshape(-1, *x.shape[2:]), 0.95, axis=0))
    path = to_movement(poses, ds, tmp / "poses.nc")
    with xr.open_dataset(path) as back:
        ValidPosesInputs.validate(back)
        np.testing.assert_allclose(back["position"].values[..., 0], np.moveaxis(x.mean((0, 1)), -1, 1))
        np.testing.assert_allclose(back["position_sd"].values[..., 0], np.moveaxis(x.std((0, 1)), -1, 1), rtol=1e-2)
    with pytest.raises(FileExistsError):
        to_movement(poses, ds, tmp / "poses.nc")
    csv, side = to_anipose_csv(poses, ds, tmp / "pose3d.csv")
    assert side == uncertainty_path(csv) and side.is_file()
    ani = mv_load(csv, source_software="Anipose")
    kp = [str(k) for k in ds["keypoint"].values]
    np.testing.assert_allclose(ani["position"].sel(keypoint=kp).values[..., 0], np.moveaxis(x.mean((0, 1)), -1, 1))
    dlc = to_dlc_files(poses, ds, tmp / "dlc")
    assert [p.name for p in dlc] == ["camA.h5", "camB.h5", "camC.h5"]
    back = mv_load(dlc[0], source_software="DeepLabCut")
    raw = reproject_raw(x.mean((0, 1)), ds)[:, 0]
    np.testing.assert_allclose(back["position"].sel(keypoint=kp).values[..., 0], np.moveaxis(raw, -1, 1), atol=1e-3)
    # raw pixels: the reprojection includes the lens distortion, so it matches the detections, not the pinhole pixels
    pinhole = project(x.mean((0, 1)), ds["camera_matrix"].values)[:, 0]
    raw_err = np.nanmedian(np.linalg.norm(raw - ds["observations_raw"].values[:, 0], axis=-1))
    pinhole_err = np.nanmedian(np.linalg.norm(pinhole - ds["observations_raw"].values[:, 0], axis=-1))
    assert raw_err < 0.5 and pinhole_err > 3 * raw_err, (raw_err, pinhole_err)


# --- the whole path, as a user runs it ---------------------------------------------------------


@needs_session
@pytest.mark.slow
def test_real_session_import_fit_export_with_the_cli(tmp_path):
    import subprocess
    import sys

    from movement.validators.datasets import ValidPosesInputs

    def gimbal(*args):
        return subprocess.run([sys.executable, "-m", "gimbal.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=900, cwd=tmp_path)

    det = [f"{cam}={SESSION / cam / f'minimal_{cam}_proofread.slp'}" for cam in ("back", "mid", "side", "top")]
    done = gimbal("import", "--detections", *det, "--calibration", SESSION / "calibration_valid.toml", "--skeleton",
                  MOUSE_SKELETON, "--video", f"back={SESSION / 'back' / 'minimal_back.mp4'}", "--out", "mouse.nc")
    assert done.returncode == 0, done.stderr
    assert "imported 120 frames x 4 cameras" in done.stdout and "flagged" not in done.stdout
    again = gimbal("import", "--detections", SESSION, "--calibration", SESSION / "calibration_valid.toml", "--skeleton",
                   MOUSE_SKELETON, "--out", "mouse.nc")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    broken = gimbal("import", "--detections", SESSION, "--calibration", SESSION / "calibration.toml", "--skeleton",
                    MOUSE_SKELETON, "--out", "broken.nc", "--strict")
    assert broken.returncode == 1 and "<-- 'side'" in broken.stdout and "side" in broken.stderr
    fit = gimbal("fit", "--dataset", "mouse.nc", "--max-T", 12, "--chains", 1, "--tune", 60, "--draws", 30, "--out", "fit",
                 "--quiet")
    assert fit.returncode == 0, fit.stderr
    assert (tmp_path / "fit" / "dataset.nc").is_file()
    exp = gimbal("export", "fit", "--format", "movement", "--out", "poses.nc")
    assert exp.returncode == 0, exp.stderr
    with xr.open_dataset(tmp_path / "poses.nc") as poses:
        ValidPosesInputs.validate(poses)
        assert poses.sizes["time"] == 12 and poses.sizes["keypoint"] == 15 and poses.sizes["space"] == 3
        assert np.isfinite(poses["position"].values).all()
    dlc = gimbal("export", "fit", "--format", "dlc", "--out", "dlc")
    assert dlc.returncode == 0 and sorted(p.name for p in (tmp_path / "dlc").iterdir()) == [
        "back.h5", "mid.h5", "side.h5", "top.h5"]


@pytest.mark.slow
def test_leave_one_camera_out_scores_every_camera(tmp_path, minimal80):
    from gimbal.datasets import truncate
    from gimbal.evaluate import leave_one_camera_out

    ds = truncate(minimal80, max_T=15)
    from gimbal.settings import SamplerSettings

    report = leave_one_camera_out(ds, out=tmp_path / "loco.json", sampler=SamplerSettings(chains=1, tune=80, draws=40),
                                  progress=False)
    data = json.loads((tmp_path / "loco.json").read_text())
    assert [r["camera"] for r in data["rows"]] == [str(c) for c in ds["camera"].values]
    # the model as built, with the choice of using the detector's scores resolved (not the option's None)
    from gimbal.model.observation import has_scores

    assert data["settings"]["model"]["confidence"] is has_scores(ds)
    for row in report.cameras:
        # 2 px detection noise: the model places the held-out points within a few pixels of its detections; two-view
        # triangulation is as good at best (measured: 2-15 px, worst where the two remaining views are nearly parallel)
        assert 0.5 < row.posterior.median < 6, row
        assert row.triangulation.median > 0.8 * row.posterior.median, row
        assert row.posterior.n == 15 * 4 and row.bone_cv_posterior < row.bone_cv_triangulation
        assert row.ratio_median_by_chain == [pytest.approx(row.ratio_median)]  # one chain: its mean is the posterior's
    assert all(len(r["ratio_median_by_chain"]) == 1 and len(r["ratio_median_interval"]) == 2 for r in data["rows"])
    with pytest.raises(FileExistsError):
        leave_one_camera_out(ds, out=tmp_path / "loco.json", progress=False)
    with pytest.raises(ValueError, match="needs >= 3 cameras"):
        leave_one_camera_out(ds.isel(camera=[0, 1]), out=tmp_path / "two.json", progress=False)


def test_leave_one_camera_out_records_the_detections_left_out(tmp_path, monkeypatch, minimal80):
    """`gimbal evaluate --exclude`: the JSON and the table say which detections were left out, and the default file
    is not the one a run on every detection writes."""
    import gimbal.evaluate as evaluate
    from gimbal.datasets import exclude_detections, truncate
    from gimbal.settings import SamplerSettings

    monkeypatch.setattr(evaluate, "DEFAULT_OUT", tmp_path)
    ds = exclude_detections(truncate(minimal80, max_T=6), ["cam1:distal_left"])
    report = evaluate.leave_one_camera_out(ds, cameras=["cam0"], sampler=SamplerSettings(chains=1, tune=30, draws=20),
                                           progress=False, name="rig")
    assert report.path == tmp_path / "loco_rig_excluded.json"
    data = json.loads(report.path.read_text())
    assert data["dataset"] == "rig" and data["settings"]["excluded_detections"] == "cam1:distal_left"
    assert "left out, neither fitted nor scored: cam1:distal_left" in report.text()
    # without cam0 only cam2 sees distal_left: no triangulation places it, so its 6 held-out detections are scored
    # apart and the paired comparison holds the other 3 keypoints' 18, for the posterior and triangulation alike
    row = report.cameras[0]
    assert row.posterior_only.n == 6 and row.posterior.n == row.triangulation.n == 18
    assert data["rows"][0]["posterior_only"]["n"] == 6


@needs_session
@pytest.mark.slow
def test_diagnostic_groups_and_book_run_on_an_imported_recording(tmp_path):
    import subprocess
    import sys

    from gimbal.datasets import save_dataset
    from gimbal.divergence.book import BOOK_DIR, book_source, build_book

    res = import_session(SESSION, SESSION / "calibration_valid.toml", MOUSE_SKELETON,
                         videos={"back": SESSION / "back" / "minimal_back.mp4"})
    save_dataset(res.dataset, tmp_path / "mouse.nc")
    root = tmp_path / "diag"
    cmd = [sys.executable, "-m", "gimbal.cli", "diag", "run", "--dataset", str(tmp_path / "mouse.nc"), "--groups",
           "1,2,6,7", "--run-id", "real", "--root", str(root), "--jobs", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    landing = build_book(root, "real", tmp_path)
    assert landing.is_file()
    pages = book_source(tmp_path) / BOOK_DIR
    data = (pages / "data.md").read_text(encoding="utf-8")
    assert "Calibration check at import" in data and "| side |" in data
    assert (pages / "figures" / "data" / "detections.png").is_file()
    from gimbal.divergence.summary import collect_run

    results = collect_run(root, "real")
    assert sorted(r["header"]["group"] for r in results) == ["1", "2", "6", "7"]
    assert all(r["status"] != "failed" for r in results), [(r["header"]["group"], r.get("verdict")) for r in results]
    g6 = next(r for r in results if r["header"]["group"] == "6")
    if g6["sampling"]["max_rhat_all"] > 1.01:  # R-hat flagged: localized onto frames x keypoints, pattern named
        conv = g6["convergence_localization"]["x"]
        assert conv["dims"] == ["frame", "keypoint", "xyz"] and conv["worst"] and conv["pattern"]
        # the verdict localizes the flagged variable with the highest R-hat (x, or a global such as bone_length);
        # when the multimodality check found chains in different modes, the highest among variables whose elements
        # show modes (separate modes, switching chains): a slowly mixing global would hide them (rules._localized)
        flagged = {k: v for k, v in g6["convergence_localization"].items() if v.get("n_flagged") and v.get("pattern")}
        if "chains_in_different_modes" in g6["verdict"]["problems"]:
            modes = {k: v for k, v in flagged.items() if v["pattern"] in ("separate_modes", "switching_chains")}
            flagged = modes or flagged
        worst = max(flagged, key=lambda k: flagged[k]["max_rhat"])
        text = g6["verdict"]["interpretation"]
        assert g6["verdict"]["code"] != "not_converged" and f"'{worst}'" in text, (worst, text)
        assert any(f"at {d} " in text for d in flagged[worst]["dims"]), text
        page = (pages / "groups" / "group_6_sampling_full_truncated.md").read_text()
        assert "Worst elements of `x`" in page
        if g6["chain_regions"]:  # chains in separate regions of the globals: the page names them
            assert "**Chains in separate regions.** the chains sampled" in page


@needs_session
def test_frames_no_camera_saw_do_not_stop_the_sampler_from_starting(monkeypatch):
    """A detector that drops out for five frames: the start fills the gap by linear interpolation, and in its middle
    frame the random walk's pulls cancel exactly for a keypoint seen by one camera elsewhere (frame 12, Haunch_left,
    x and y), which nutpie cannot start from (1/|gradient|). build_model moves just those coordinates by one step sd;
    nutpie then starts and samples. The same holds where the tracks are sampled whitened (``--whitened-tracks``), and
    for models built unvalidated (the diagnostic groups, ``--window``), where it had crashed 10 of 13 groups.

    The zeros came with the start that put a keypoint no two cameras see one bone straight above its parent; that
    keypoint now starts on its one camera's rays (:func:`test_a_keypoint_one_camera_sees_starts_on_its_rays`), which
    leaves no exact zero here. The guard stays for cancellations of other kinds, so it is tested on that start. The
    pulls cancel bit for bit only where the interpolated steps happen to round alike (any change to the
    triangulation's arithmetic can undo that: a normalized DLT did), so the test makes frames 11-13 exactly evenly
    spaced on a binary grid."""
    from gimbal.datasets import truncate
    from gimbal.diagnostics.checks import compile_logp_and_grad, gradient_report
    from gimbal.divergence.groups import EARLIER_PORT
    from gimbal.model import build, initialization
    from gimbal.model.fitting import sample_model
    from gimbal.model.initialization import init_point_for

    def zero_components(model):
        point = init_point_for(model, model.gimbal_init)
        return gradient_report(compile_logp_and_grad(model, point), point)["zero_components"]

    ds = truncate(import_session(SESSION, SESSION / "calibration_valid.toml", MOUSE_SKELETON).dataset, max_T=30)
    k = list(ds["keypoint"].values).index("Haunch_left")
    for name in ("observations", "confidence"):
        values = ds[name].values
        values[10:15] = np.nan
        values[:, 1:, k] = np.nan
    # on the rays, the earlier port's explicit directions (group 6c) start without the 42 exactly-zero direction
    # components they had with the vertical bone, which crashed that group
    assert zero_components(build.build_model(ds, validate=False, **EARLIER_PORT)) == []
    monkeypatch.setattr(initialization, "_on_single_rays", lambda parent, *args: np.full(parent.shape, np.nan))
    with monkeypatch.context() as m:  # the case this guards against is still there without the fix
        m.setattr(build, "off_exact_zeros", lambda model, init, checker: init)
        start = build.build_model(ds, validate=False).gimbal_init
        x = start.positions.copy()
        grid = 2.0**-10  # mm: sums and differences of these values are exact
        middle, step = np.round(x[12] / grid) * grid, np.round((x[12] - x[11]) / grid) * grid
        x[11], x[12], x[13] = middle - step, middle, middle + step  # inside the gap (frames 10-14)
        start = dataclasses.replace(start, positions=x, values={**start.values, "x": x})
        # the cancellation built above is the world walk's (steps relative to the parent cancel in more places)
        plain = build.build_model(ds, init=start, validate=False, step_frame="world")
        plain_whitened = build.build_model(ds, init=start, whitened_tracks="still", validate=False, step_frame="world")
        relative = build.build_model(ds, init=start, validate=False)  # the default frame
    assert zero_components(plain) == ["x[12, 3, 0]", "x[12, 3, 1]"]
    assert zero_components(plain_whitened) == ["x_whitened__[12, 3, 0]", "x_whitened__[12, 3, 1]"]
    assert relative.gimbal_step_relative[k] and len(zero_components(relative)) > 2
    assert zero_components(build.build_model(ds, init=start, validate=False)) == []  # the guard moves them all

    model = build.build_model(ds, init=start, step_frame="world")  # validates: raised InitializationError before
    moved = model.gimbal_init.positions - plain.gimbal_init.positions
    step = plain.gimbal_init.values["step_sigma"]
    assert np.array_equal(np.argwhere(moved != 0), [[12, k, 0], [12, k, 1]])
    assert np.allclose(moved[12, k, :2], step[k])
    assert np.array_equal(model.initial_point()["x"], model.gimbal_init.positions)  # where nutpie starts
    fit = sample_model(model, chains=1, tune=30, draws=10, seed=0, progress=False)
    assert np.isfinite(fit.trace.posterior["x"].values).all()

    # as the diagnostic groups and windows build it
    unvalidated = build.build_model(ds, init=start, validate=False, step_frame="world")
    assert np.array_equal(unvalidated.gimbal_init.positions, model.gimbal_init.positions)
    assert zero_components(unvalidated) == []

    model = build.build_model(ds, init=start, whitened_tracks="still", step_frame="world")  # raised before
    moved = model.gimbal_init.positions - plain_whitened.gimbal_init.positions
    assert np.array_equal(np.argwhere(moved != 0), [[12, k, 0], [12, k, 1]])
    fit = sample_model(model, chains=1, tune=30, draws=10, seed=0, progress=False)
    assert np.isfinite(fit.trace.posterior["x"].values).all()


@needs_session
def test_a_keypoint_one_camera_sees_starts_on_its_rays():
    """A keypoint no two cameras see in any frame (each of the real mouse's keypoints left to one camera in turn)
    starts on that camera's rays, reprojecting onto its detections, and nearer the point all four cameras
    triangulate than one median bone above its parent (the rule before)."""
    from gimbal.datasets import truncate
    from gimbal.model.initialization import triangulate_sequence

    full = truncate(import_session(SESSION, SESSION / "calibration_valid.toml", MOUSE_SKELETON).dataset, max_T=60)
    reference = triangulate_sequence(full)
    P, parents = full["camera_matrix"].values, full["parents"].values
    ray_err, vertical_err = [], []
    for k in range(1, full.sizes["keypoint"]):
        for c in range(full.sizes["camera"]):
            one = full.copy(deep=True)
            obs = one["observations"].values
            kept = obs[:, c, k].copy()
            obs[:, :, k] = np.nan
            obs[:, c, k] = kept
            x = triangulate_sequence(one)
            seen = np.isfinite(kept).all(-1)
            if not seen.any():
                continue
            assert np.nanmax(np.abs(project(x[seen, k][:, None], P[c:c + 1])[:, 0, 0] - kept[seen])) < 1e-6
            bones = np.linalg.norm(x[:, 1:] - x[:, parents[1:]], axis=-1)
            vertical = x[:, parents[k]] + [0.0, 0.0, np.median(np.delete(bones, k - 1, axis=1))]
            ray_err.append(np.median(np.linalg.norm(x[:, k] - reference[:, k], axis=-1)))
            vertical_err.append(np.median(np.linalg.norm(vertical - reference[:, k], axis=-1)))
    # measured: 13.0 against 30.1 mm at the median over the cases
    assert np.median(ray_err) < 0.6 * np.median(vertical_err), (np.median(ray_err), np.median(vertical_err))


def test_leave_one_camera_out_pairs_its_comparison(monkeypatch, tmp_path, minimal80):
    """The posterior and triangulation are scored on the same held-out detections, and ``posterior_closer`` is the
    share of them the posterior reprojects strictly closer to: 0 for a 'posterior' that is the triangulation itself,
    most of them for the simulation's true positions; ``keypoints_lower`` counts the keypoints whose median is
    strictly lower, among the keypoints with scored detections."""
    import gimbal.evaluate as evaluate
    from gimbal.datasets import truncate
    from gimbal.model.cameras import triangulate_robust

    ds = truncate(minimal80, max_T=20)
    ds["observations"].values[:, 1, 3] = np.nan  # without cam0, only cam2 sees distal_right: no triangulation there

    def fake_fit(dataset, camera, *, use, **_):
        rest = dataset.sel(camera=[c for c in dataset["camera"].values if c != camera])
        tri = triangulate_robust(np.moveaxis(rest["observations"].values, 1, 2), rest["camera_matrix"].values)
        mean = dataset["positions_true"].values
        on_tri = np.where(np.isfinite(tri), tri, mean)  # triangulation where it has a point
        if use == "triangulation":
            mean = on_tri
        # two 'chains': one at the posterior mean, one at triangulation
        return evaluate._HeldOutFit(rest, mean, {"divergences": 0}, 0.0, {}, np.stack([mean, on_tri]))

    for use, check in (("triangulation", lambda r: r.posterior_closer == 0.0 and r.ratio_median == 1.0
                        and r.keypoints_lower == 0 and r.ratio_median_interval == (1.0, 1.0)),
                       ("truth", lambda r: r.posterior_closer > 0.6 and r.ratio_median < 1.0 and r.keypoints_lower >= 2
                        and r.ratio_median_interval[0] <= r.ratio_median <= r.ratio_median_interval[1])):
        monkeypatch.setattr(evaluate, "_fit_without", lambda *a, use=use, **k: fake_fit(*a, use=use, **k))
        report = evaluate.leave_one_camera_out(ds, cameras=["cam0"], out=tmp_path / f"{use}.json", progress=False)
        row = report.cameras[0]
        assert row.posterior.n == row.triangulation.n == 20 * 3 and row.posterior_only.n == 20, row
        assert check(row), row
        assert row.keypoints_compared == 3  # distal_right's held-out detections are the posterior's only
        assert f" {100 * row.posterior_closer:.0f}% {row.keypoints_lower:>7d}/3 " in report.text().splitlines()[2]
        assert "{:.2f}-{:.2f}".format(*row.ratio_median_interval) in report.text().splitlines()[2]
        assert row.ratio_median_by_chain == [pytest.approx(row.ratio_median), 1.0], row.ratio_median_by_chain
        assert report.text().splitlines()[2].endswith(f"  {row.ratio_median:.2f} 1.00")


def test_ratio_interval_matches_scipy_bootstrap():
    """With blocks of one frame the interval is scipy's percentile bootstrap over frames (the same statistic,
    independent resamples: endpoints within Monte Carlo error); blocks of frames widen it where neighbouring frames'
    errors move together; without paired detections there is none."""
    from scipy.stats import bootstrap

    from gimbal.evaluate import ratio_interval

    rng = np.random.default_rng(3)
    T, K = 60, 4
    post = rng.gamma(2.0, 2.0, (T, K)) * np.linspace(0.5, 2.0, K)
    robust = post * rng.uniform(0.8, 1.4, (T, K))
    paired = rng.random((T, K)) < 0.85

    def stat(frames):
        f = frames.astype(int)
        return np.median(post[f][paired[f]]) / np.median(robust[f][paired[f]])

    ref = bootstrap((np.arange(T),), stat, vectorized=False, paired=False, n_resamples=20000, confidence_level=0.9,
                    method="percentile", random_state=np.random.default_rng(0)).confidence_interval
    low, high = ratio_interval(post, robust, paired, block=1, n_resamples=20000)
    assert abs(low - ref.low) < 0.01 and abs(high - ref.high) < 0.01, ((low, high), ref)
    # errors that drift slowly over frames (runs of 10 alike): single frames understate the spread, blocks do not
    slow = np.repeat(rng.uniform(0.6, 1.6, T // 10), 10)[:, None] * np.ones((1, K))
    narrow = ratio_interval(post * slow, post, np.ones((T, K), bool), block=1)
    wide = ratio_interval(post * slow, post, np.ones((T, K), bool), block=10)
    assert wide[1] - wide[0] > narrow[1] - narrow[0] > 0, (narrow, wide)
    assert ratio_interval(post, robust, np.zeros((T, K), bool)) is None
