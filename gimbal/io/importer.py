"""From a lab's files to a gimbal dataset: detections + calibration + skeleton -> ``.nc``.

:func:`import_session` is a short composition of named steps:

1. :func:`read_detection_sources` - one detection table per camera name (files, a folder, a multi-camera ``.slp``);
2. :func:`match_cameras` - detection names to calibration names, by name (``camera_map`` for the rest);
3. :func:`select_keypoints` - the skeleton's keypoints, in its order, from every camera;
4. :func:`stack_frames` - one (frame, camera, keypoint, uv) array over the union of frames;
5. :func:`check_image_bounds` - detections inside each camera's image (a few past its edge become missing);
6. low-confidence detections become missing (``min_confidence``);
7. undistortion (OpenCV's standard or fisheye lens model, per camera) and :func:`gimbal.datasets.from_arrays`;
8. :func:`gimbal.io.calibration_check.check_calibration` - a camera far worse than the others is named.

The dataset keeps the raw pixels (``observations_raw``), the confidence, and the
full calibration (``camera_intrinsics``, ``camera_rotation``, ``camera_translation``,
``camera_distortion``; for a rig with fisheye lenses also ``camera_fisheye`` and
``camera_fisheye_distortion``), so that posterior positions can be projected back into raw
pixels (:func:`calibration_from_dataset`).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..datasets.container import from_arrays
from ..model.skeleton import Skeleton
from .calibration import N_DIST, N_FISHEYE, Calibration, Camera, load_calibration
from .calibration_check import CalibrationReport, check_calibration
from .detections import DetectionFileError, load_detections, load_slp_session_detections
from .skeleton_files import load_skeleton

__all__ = [
    "SessionImportError",
    "ImportResult",
    "import_session",
    "read_detection_sources",
    "match_cameras",
    "select_keypoints",
    "stack_frames",
    "check_image_bounds",
    "attach_calibration",
    "calibration_from_dataset",
    "parse_pairs",
]

DETECTION_SUFFIXES = (".analysis.h5", ".slp", ".h5", ".csv")  # preference order when a folder holds several
BOUNDS_TOLERANCE_PX = 2.0
MAX_OUTSIDE_FRACTION = 0.01  # more of a camera's detections outside its image: a wrong image size or file


class SessionImportError(ValueError):
    """The inputs of an import do not fit together (names, keypoints, image sizes)."""


@dataclass(frozen=True)
class ImportResult:
    """The imported dataset and the calibration check."""

    dataset: xr.Dataset
    calibration_report: CalibrationReport
    notes: tuple[str, ...] = ()


def parse_pairs(items, what: str) -> dict[str, str]:
    """``["a=b", "c=d"]`` or ``["a=b,c=d"]`` to a dict, with an error naming a malformed item."""
    out = {}
    for item in items or ():
        for part in str(item).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise SessionImportError(f"{what}: expected NAME=VALUE, got {part!r}.")
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _camera_file_in(folder: Path, name: str, cam_regex: re.Pattern | None = None) -> Path | None:
    """The detection file of camera ``name`` in a session folder: in a sub-folder named after it, or a file whose
    name has it as a word (``minimal_back.slp``), or, with ``cam_regex``, whose name's first group is ``name``
    (anipose's ``cam_regex``); formats in :data:`DETECTION_SUFFIXES` order."""
    sub = folder / name
    if cam_regex is not None:
        pool = [p for p in folder.iterdir() if _regex_camera(p, cam_regex) == name]
    else:
        pool = list(sub.iterdir()) if sub.is_dir() else [p for p in folder.iterdir() if name in _name_tokens(p)]
    for suffix in DETECTION_SUFFIXES:
        hits = sorted(p for p in pool if p.is_file() and p.name.lower().endswith(suffix))
        if len(hits) > 1:
            raise SessionImportError(f"camera {name!r}: several detection files {[str(h) for h in hits]}; name one "
                                     f"with --detections {name}=FILE.")
        if hits:
            return hits[0]
    if sub.is_dir() and any(sub.glob("*_keypoints.json")):
        return sub  # an OpenPose folder
    return None


def _video_stems(path: Path) -> tuple[str, ...]:
    """A detection file's name without its extension, then without a double extension (``.analysis.h5``), then
    without the scorer DeepLabCut appends to the video's name (``vid-camADLC_resnet50_...h5``: ``vid-camA``)."""
    stems = (path.stem, path.name.split(".")[0])
    return tuple(dict.fromkeys(stems + tuple(s.split("DLC_")[0] for s in stems if "DLC_" in s)))


def _name_tokens(path: Path) -> set[str]:
    return {t for stem in _video_stems(path) for t in re.split(r"[_\-\s]+", stem)}


def _regex_camera(path: Path, cam_regex: re.Pattern) -> str | None:
    """The camera ``cam_regex``'s first group names in a file's name without its extension, as anipose reads it
    (``vid-camA.h5`` with ``-cam([A-Z])$``: ``A``; see :func:`_video_stems`)."""
    for stem in _video_stems(path):
        match = cam_regex.search(stem)
        if match:
            return match.group(1).strip()
    return None


def compile_cam_regex(cam_regex: str) -> re.Pattern:
    """anipose's ``cam_regex`` (a regular expression whose first group is the camera name), checked."""
    try:
        pattern = re.compile(cam_regex)
    except re.error as exc:
        raise SessionImportError(f"cam_regex {cam_regex!r} is not a regular expression: {exc}.") from exc
    if pattern.groups < 1:
        raise SessionImportError(f"cam_regex {cam_regex!r} has no group: the camera name is its first group, as in "
                                 "anipose's '-cam([A-Z])$'.")
    return pattern


def anipose_cam_regex(path) -> str | None:
    """The ``cam_regex`` of an anipose ``config.toml`` (None for other files or where it has none)."""
    path = Path(path)
    if path.suffix.lower() != ".toml" or not path.is_file():
        return None
    try:
        value = tomllib.loads(path.read_text(encoding="utf-8")).get("cam_regex")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None  # the skeleton reader names what is wrong with the file
    return str(value) if value else None


def read_detection_sources(detections, calibration: Calibration, individual=None, person=None,
                           cam_regex: str | None = None) -> dict[str, xr.Dataset]:
    """Detections per camera name from ``{name: file}``, a session folder, or one multi-camera ``.slp``.

    In a session folder a camera's file is found by its name (a sub-folder, or a word of the file name) or, with
    ``cam_regex`` (anipose's), by the regular expression's first group in the file name.
    """
    if isinstance(detections, (str, Path)):
        src = Path(detections)
        if src.is_file() and src.suffix.lower() == ".slp":
            return load_slp_session_detections(src, individual=individual)
        if not src.is_dir():
            raise DetectionFileError(f"{src}: expected a folder with one detection file per camera, or a multi-camera .slp.")
        pattern = compile_cam_regex(cam_regex) if cam_regex else None
        found = {n: _camera_file_in(src, n, pattern) for n in calibration.names}
        missing = [n for n, p in found.items() if p is None]
        if len(missing) == len(found):
            how = (f"whose name's cam_regex {cam_regex!r} group is" if cam_regex else "named after")
            raise SessionImportError(f"{src}: no detection file {how} a calibration camera {calibration.names}; "
                                     "pass them as --detections NAME=FILE, or give anipose's --cam-regex.")
        detections = {n: p for n, p in found.items() if p is not None}
    return {str(n): load_detections(p, individual=individual, person=person) for n, p in dict(detections).items()}


def match_cameras(detection_names, calibration: Calibration, camera_map: dict[str, str] | None = None) -> dict[str, str]:
    """Detection name -> calibration name, exactly by name after ``camera_map``; never by position."""
    camera_map = dict(camera_map or {})
    bad_keys = sorted(set(camera_map) - set(detection_names))
    if bad_keys:
        raise SessionImportError(f"--camera-map names detection cameras {bad_keys} that were not given; detections: "
                           f"{sorted(detection_names)}.")
    mapping = {d: camera_map.get(d, d) for d in detection_names}
    unknown = sorted(d for d, c in mapping.items() if c not in calibration.names)
    if unknown:
        unused = sorted(set(calibration.names) - set(mapping.values()))
        raise SessionImportError(
            f"detection cameras {unknown} have no camera of that name in {calibration.source} "
            f"(calibration cameras: {calibration.names}; not yet used: {unused}). Map them by name, e.g. "
            f"--camera-map {unknown[0]}={unused[0] if unused else 'CALIBRATION_NAME'}."
        )
    targets = list(mapping.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise SessionImportError(f"calibration cameras {twice} are assigned to several detection files: {mapping}.")
    return mapping


def select_keypoints(per_camera: dict[str, xr.Dataset], skeleton: Skeleton) -> dict[str, xr.Dataset]:
    """Every camera's detections restricted to, and ordered as, the skeleton's keypoints."""
    out = {}
    for cam, det in per_camera.items():
        have = [str(k) for k in det["keypoint"].values]
        lacking = [k for k in skeleton.names if k not in have]
        if lacking:
            raise SessionImportError(
                f"skeleton keypoints {lacking} are not in camera {cam!r}'s detections ({det.attrs.get('source_file')}); "
                f"its keypoints are {have}. Rename them in the skeleton file or drop them."
            )
        out[cam] = det.sel(keypoint=list(skeleton.names))
    return out


def stack_frames(per_camera: dict[str, xr.Dataset], order: list[str]):
    """(frame, camera, keypoint, uv) positions and (frame, camera, keypoint) confidence over the union of frames."""
    frames = np.unique(np.concatenate([per_camera[c]["frame"].values for c in order]))
    aligned = [per_camera[c].reindex(frame=frames) for c in order]
    pos = np.stack([a["position"].values for a in aligned], axis=1)
    conf = np.stack([a["confidence"].values for a in aligned], axis=1)
    return frames, pos, conf


def check_image_bounds(raw: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Detections outside their camera's image, ``(T, C, K)``.

    A few (at most :data:`MAX_OUTSIDE_FRACTION` of a camera's detections, or two) are a detector's guesses past the
    image's edge and are returned, to be marked missing; more mean that the calibration's image size or the detection
    file for that camera is wrong, and raise.
    """
    outside = np.zeros(raw.shape[:3], bool)
    for c, cam in enumerate(cameras):
        w, h = cam.size
        u, v = raw[:, c, :, 0], raw[:, c, :, 1]
        with np.errstate(invalid="ignore"):
            beyond = np.fmax(np.fmax(-u, u - w), np.fmax(-v, v - h))  # px past the nearest edge (NaN: missing)
        out = beyond > BOUNDS_TOLERANCE_PX
        seen = int(np.isfinite(u).sum())
        if out.sum() > max(MAX_OUTSIDE_FRACTION * seen, 2):
            raise SessionImportError(
                f"camera {cam.name!r}: {int(out.sum())} of {seen} detections lie outside its {w:.0f}x{h:.0f} image (up "
                f"to {np.nanmax(beyond):.0f} px past its edge; u from {np.nanmin(u):.0f} to {np.nanmax(u):.0f}, v from "
                f"{np.nanmin(v):.0f} to {np.nanmax(v):.0f}); the calibration's image size or the detection file for "
                "this camera is wrong."
            )
        outside[:, c] = out
    return outside


def attach_calibration(ds: xr.Dataset, calibration: Calibration) -> xr.Dataset:
    """Store the full calibration (intrinsics, extrinsics, distortion) beside the pinhole matrices."""
    cams = calibration.cameras
    fisheye = np.array([c.fisheye for c in cams])
    ds = ds.assign(
        camera_intrinsics=(("camera", "row", "col3"), np.stack([c.K for c in cams])),
        camera_rotation=(("camera", "row", "col3"), np.stack([c.R for c in cams])),
        camera_translation=(("camera", "row"), np.stack([c.t for c in cams])),
        camera_distortion=(("camera", "dist_coeff"),
                           np.stack([np.zeros(N_DIST) if c.fisheye else c.dist for c in cams])),
    ).assign_coords(dist_coeff=["k1", "k2", "p1", "p2", "k3"])
    if fisheye.any():  # OpenCV's fisheye model, per camera: its own four coefficients
        ds = ds.assign(
            camera_fisheye=(("camera",), fisheye),
            camera_fisheye_distortion=(("camera", "fisheye_coeff"),
                                       np.stack([c.dist if c.fisheye else np.zeros(N_FISHEYE) for c in cams])),
        ).assign_coords(fisheye_coeff=["k1", "k2", "k3", "k4"])
    return ds


def calibration_from_dataset(ds: xr.Dataset) -> Calibration | None:
    """The dataset's full calibration, or None for datasets built from pinhole matrices only."""
    if "camera_intrinsics" not in ds:
        return None
    cams = []
    fisheye = ds["camera_fisheye"].values if "camera_fisheye" in ds else np.zeros(ds.sizes["camera"], bool)
    for i, name in enumerate(ds["camera"].values):
        dist = ds["camera_fisheye_distortion"].values[i] if fisheye[i] else ds["camera_distortion"].values[i]
        cams.append(Camera(str(name), ds["camera_intrinsics"].values[i], ds["camera_rotation"].values[i],
                           ds["camera_translation"].values[i], dist, tuple(ds["image_size"].values[i]),
                           fisheye=bool(fisheye[i])))
    return Calibration(tuple(cams), source=str(ds.attrs.get("calibration_file", "")), units=str(ds.attrs.get("units", "")))


def _skeleton_for(skeleton, per_camera, root) -> Skeleton:
    if isinstance(skeleton, Skeleton):
        return skeleton
    if skeleton is not None:
        return load_skeleton(skeleton, root=root)
    sources = {Path(d.attrs.get("source_file", "")) for d in per_camera.values()}
    slp = [s for s in sources if s.suffix.lower() == ".slp"]
    if slp:
        return load_skeleton(slp[0], root=root)  # SLEAP files carry their skeleton's edges
    raise SessionImportError("no skeleton: pass --skeleton FILE (YAML, DANNCE .mat, anipose config.toml or a .slp).")


def import_session(
    detections,
    calibration,
    skeleton=None,
    *,
    min_confidence: float | None = None,
    camera_map: dict[str, str] | None = None,
    videos: dict[str, str] | None = None,
    individual: str | None = None,
    person: int | None = None,
    root: str | None = None,
    cam_regex: str | None = None,
    fps: float | None = None,
    name: str | None = None,
) -> ImportResult:
    """Build a gimbal dataset from detection files, a calibration and a skeleton.

    Parameters
    ----------
    detections : dict of {camera name: path}, or path
        One detection file (or OpenPose folder) per camera, keyed by camera name; or a
        folder holding one per camera (sub-folders or files named after the cameras);
        or a multi-camera SLEAP ``.slp`` with a recording session.
    calibration : path or Calibration
        aniposelib ``.toml``, DANNCE ``label3d_dannce.mat`` or a SLEAP ``.slp`` session.
    skeleton : path or Skeleton, optional
        YAML, DANNCE skeleton ``.mat``, anipose ``config.toml`` or ``.slp``; a SLEAP
        detection file's own skeleton when omitted.
    min_confidence : float, optional
        Detections below this score become missing.
    camera_map : dict, optional
        Detection camera name -> calibration camera name, for names that differ.
    videos : dict, optional
        Camera name -> video file (recorded for the book's data page).
    individual : str, optional
        The animal to read from multi-animal files.
    person : int, optional
        OpenPose folders: the person index in each frame (default: the most confident person).
    root : str, optional
        Root keypoint of the skeleton tree.
    cam_regex : str, optional
        anipose's ``cam_regex``: in a session folder, a file belongs to the camera its name's first group names
        (``-cam([A-Z])$``: ``vid-camA.h5`` is camera ``A``). Default: the ``cam_regex`` of an anipose
        ``config.toml`` given as ``skeleton``, else files are matched by camera name.
    fps : float, optional
    name : str, optional
        Dataset name (default: the calibration file's folder name).

    Returns
    -------
    ImportResult
    """
    calib = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    if min_confidence is not None and not 0 <= float(min_confidence) <= 1:
        raise SessionImportError(f"min_confidence must be in [0, 1], got {min_confidence}.")
    if cam_regex is None and skeleton is not None and not isinstance(skeleton, Skeleton):
        cam_regex = anipose_cam_regex(skeleton)
    per_camera = read_detection_sources(detections, calib, individual=individual, person=person, cam_regex=cam_regex)
    mapping = match_cameras(list(per_camera), calib, camera_map)
    per_camera = {mapping[d]: det for d, det in per_camera.items()}
    order = [n for n in calib.names if n in per_camera]  # the calibration's order
    unknown_videos = sorted(set(videos or {}) - set(order))
    if unknown_videos:
        raise SessionImportError(f"--video names cameras {unknown_videos} that are not imported cameras {order}.")
    notes = []
    if len(order) < len(calib.names):
        notes.append(f"calibration cameras without detections, left out: {sorted(set(calib.names) - set(order))}")
    if len(order) < 2:
        raise SessionImportError(f"only {len(order)} camera(s) with detections ({order}); 3D needs at least 2.")
    skel = _skeleton_for(skeleton, per_camera, root)
    per_camera = select_keypoints(per_camera, skel)
    frames, raw, conf = stack_frames(per_camera, order)
    used = calib.select(order)
    outside = check_image_bounds(raw, list(used.cameras))
    if outside.any():
        per_camera_out = {n: int(k) for n, k in zip(order, outside.sum(axis=(0, 2))) if k}
        notes.append(f"{int(outside.sum())} detections outside their camera's image marked missing {per_camera_out}")
        raw = np.where(outside[..., None], np.nan, raw)
    if min_confidence is not None:
        low = np.isfinite(raw).all(-1) & ~(conf >= float(min_confidence))
        notes.append(f"{int(low.sum())} of {int(np.isfinite(raw).all(-1).sum())} detections below confidence "
                     f"{min_confidence} marked missing")
        raw = np.where(low[..., None], np.nan, raw)
    und = np.stack([cam.undistort(raw[:, c]) for c, cam in enumerate(used.cameras)], axis=1)
    seen2 = (np.isfinite(und).all(-1).sum(axis=1) >= 2).any(axis=0)  # (K,): seen by two cameras in some frame
    never = [k for k, s in zip(skel.names, seen2) if not s]
    if never:
        raise SessionImportError(f"keypoints {never} are never detected by two cameras at once (after --min-confidence), so "
                           "they cannot be placed in 3D; drop them from the skeleton or lower --min-confidence.")
    ds = from_arrays(und, used.pinhole_matrices(), skel.parents, keypoint_names=skel.names,
                     image_size=[c.size for c in used.cameras], camera_names=order, fps=fps, units=calib.units,
                     name=name or Path(calib.source).resolve().parent.name or "imported",
                     description=f"imported from {len(order)} cameras: {calib.source}")
    ds = ds.assign_coords(frame=frames)
    ds["observations_raw"] = (("frame", "camera", "keypoint", "uv"), raw)
    ds["confidence"] = (("frame", "camera", "keypoint"), conf)
    ds = attach_calibration(ds, used)
    report = check_calibration(und, used.pinhole_matrices(), order, used, conf, min_confidence, keypoints=skel.names)
    ds.attrs.update(
        calibration_file=str(calib.source),
        detection_files=json.dumps({c: per_camera[c].attrs.get("source_file", "") for c in order}),
        detection_software=json.dumps({c: per_camera[c].attrs.get("source_software", "") for c in order}),
        individual=str(individual or next(iter(per_camera.values())).attrs.get("individual", "")),
        min_confidence=float(min_confidence) if min_confidence is not None else -1.0,
        calibration_check=json.dumps(report.to_dict()),
        videos=json.dumps({str(k): str(Path(v).resolve()) for k, v in (videos or {}).items()}),
    )
    return ImportResult(ds, report, tuple(notes))
