"""2D detections from pose trackers, one camera at a time, as xarray.

Every reader returns an ``xarray.Dataset`` with

* ``position`` (frame, keypoint, uv): raw (distorted) pixels, NaN where the keypoint was not detected;
* ``confidence`` (frame, keypoint): the detector's score (NaN where it gave none);

and the attributes ``source_software``, ``source_file`` and ``individual``.

DeepLabCut (``.h5``/``.csv``), SLEAP (``.slp``/``.analysis.h5``) and Lightning Pose
(``.csv``) files are read with ``movement``; a multi-camera SLEAP ``.slp`` (one
video per camera, a ``RecordingSession``) with ``sleap-io``; OpenPose writes one
JSON file per frame, read here (``people[i].pose_keypoints_2d`` = x, y, score triples).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "DetectionFileError",
    "load_detections",
    "load_slp",
    "load_slp_session_detections",
    "load_openpose_folder",
    "OPENPOSE_BODY_25",
    "OPENPOSE_COCO_18",
]

OPENPOSE_BODY_25 = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel",
    "RBigToe", "RSmallToe", "RHeel",
)
OPENPOSE_COCO_18 = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee", "RAnkle",
    "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)

SOFTWARE = {"dlc": "DeepLabCut", "deeplabcut": "DeepLabCut", "sleap": "SLEAP", "lp": "LightningPose",
            "lightningpose": "LightningPose", "openpose": "OpenPose"}


class DetectionFileError(ValueError):
    """A detection file is missing, unreadable, or does not hold what was asked for."""


def _detections(position, confidence, frames, keypoints, *, software, source, individual) -> xr.Dataset:
    position = np.asarray(position, float)
    confidence = np.asarray(confidence, float)
    missing = ~np.isfinite(position).all(-1)
    position[missing] = np.nan
    return xr.Dataset(
        {"position": (("frame", "keypoint", "uv"), position), "confidence": (("frame", "keypoint"), confidence)},
        coords={"frame": np.asarray(frames, np.int64), "keypoint": [str(k) for k in keypoints], "uv": ["u", "v"]},
        attrs={"source_software": software, "source_file": str(source), "individual": str(individual)},
    )


def _pick_individual(names: list[str], individual, source) -> str:
    if individual is not None:
        if str(individual) not in names:
            raise DetectionFileError(f"{source}: no individual {individual!r}; it has {names}.")
        return str(individual)
    if len(names) > 1:
        raise DetectionFileError(
            f"{source} tracks {len(names)} individuals {names}: pick one with --individual NAME "
            "(gimbal fits one animal at a time)."
        )
    return names[0]


def load_slp(path):
    """``sleap_io.load_slp`` with a clear error for a damaged or non-SLEAP file."""
    import sleap_io

    path = Path(path)
    if not path.is_file():
        raise DetectionFileError(f"detection file {path} does not exist.")
    try:
        return sleap_io.load_slp(str(path))
    except Exception as exc:  # h5py/sleap-io raise many types for truncated files
        raise DetectionFileError(
            f"{path} could not be read as a SLEAP .slp file ({type(exc).__name__}: {exc}); the file may be truncated. "
            "Re-export it from SLEAP."
        ) from exc


def _from_movement(path: Path, software: str | None, individual) -> xr.Dataset:
    from movement.io import load_dataset

    try:
        ds = load_dataset(path, source_software=software or "auto")
    except Exception as exc:  # movement validates and raises ValueError/OSError/KeyError variants
        hint = " The file may be truncated or damaged: export it again." if path.suffix.lower() in (".slp", ".h5") else ""
        raise DetectionFileError(
            f"{path} could not be read as {software or 'a DeepLabCut, SLEAP or Lightning Pose'} file "
            f"({type(exc).__name__}: {exc}).{hint}"
        ) from exc
    names = [str(i) for i in ds["individual"].values]
    who = _pick_individual(names, individual, path)
    one = ds.sel(individual=who)
    if "space" in one.dims and one.sizes["space"] != 2:
        raise DetectionFileError(f"{path} holds {one.sizes['space']}D positions; import needs 2D detections per camera.")
    pos = one["position"].transpose("time", "keypoint", "space").values
    conf = one["confidence"].transpose("time", "keypoint").values if "confidence" in one else np.full(pos.shape[:2], np.nan)
    frames = np.asarray(one["time"].values)
    if not np.issubdtype(frames.dtype, np.integer):
        frames = np.arange(frames.size)
    return _detections(pos, conf, frames, one["keypoint"].values, software=ds.attrs.get("source_software", software),
                       source=path, individual=who)


def _frame_number(path: Path) -> int:
    found = re.findall(r"(\d+)", path.name)
    if not found:
        raise DetectionFileError(f"{path}: OpenPose file names carry the frame number (e.g. video_000000000012_keypoints.json).")
    return int(found[-1])


def load_openpose_folder(folder, person=None, keypoint_names=None) -> xr.Dataset:
    """Read an OpenPose output folder (one ``*_keypoints.json`` per frame).

    Parameters
    ----------
    folder : path-like
    person : int, optional
        Index of the person in each frame's ``people`` list. Default: in every
        frame, the person with the highest mean keypoint score (OpenPose does not
        track identities, so the most confident person is the usual subject).
    keypoint_names : sequence of str, optional
        Defaults to BODY_25 or COCO-18 names by count, else ``kp0 ...``.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*_keypoints.json")) or sorted(folder.glob("*.json"))
    if not files:
        raise DetectionFileError(f"{folder} holds no OpenPose *_keypoints.json files.")
    frames, rows, n_kp = [], [], None
    for f in files:
        try:
            people = json.loads(f.read_text(encoding="utf-8")).get("people", [])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DetectionFileError(f"{f} is not valid OpenPose JSON: {exc}") from exc
        arrs = [np.asarray(p.get("pose_keypoints_2d", []), float).reshape(-1, 3) for p in people]
        for a in arrs:
            if n_kp is None and a.size:
                n_kp = a.shape[0]
            elif a.size and a.shape[0] != n_kp:
                raise DetectionFileError(f"{f}: {a.shape[0]} keypoints per person, earlier files had {n_kp}.")
        frames.append(_frame_number(f))
        rows.append(arrs)
    if n_kp is None:
        raise DetectionFileError(f"{folder}: no person was detected in any of its {len(files)} frames.")
    if keypoint_names is None:
        keypoint_names = {25: OPENPOSE_BODY_25, 18: OPENPOSE_COCO_18}.get(n_kp, [f"kp{k}" for k in range(n_kp)])
    if len(keypoint_names) != n_kp:
        raise DetectionFileError(f"{folder}: {n_kp} keypoints per person but {len(keypoint_names)} names were given.")
    out = np.full((len(files), n_kp, 3), np.nan)
    for i, arrs in enumerate(rows):
        if not arrs:
            continue
        if person is None:
            pick = int(np.argmax([a[:, 2].mean() for a in arrs]))
        elif int(person) < len(arrs):
            pick = int(person)
        else:
            continue  # that person is absent in this frame
        out[i] = arrs[pick]
    undetected = out[..., 2] <= 0  # OpenPose writes (0, 0, 0) for keypoints it did not find
    out[undetected, :2] = np.nan
    order = np.argsort(frames)
    return _detections(out[order, :, :2], out[order, :, 2], np.asarray(frames)[order], keypoint_names,
                       software="OpenPose", source=folder, individual="most confident" if person is None else person)


def load_slp_session_detections(path, individual=None) -> dict[str, xr.Dataset]:
    """Per-camera detections from a multi-camera SLEAP ``.slp`` (videos linked to cameras in its session)."""
    path = Path(path)
    labels = load_slp(path)
    if not labels.sessions:
        raise DetectionFileError(f"{path} holds no RecordingSession linking videos to cameras; pass one file per camera.")
    session = labels.sessions[0]
    nodes = list(labels.skeletons[0].node_names)
    tracks = [t.name for t in labels.tracks]
    out = {}
    for cam in session.cameras:
        video = session.get_video(cam)
        if video is None:
            continue
        arr = labels.numpy(video=video, return_confidence=True, untracked=not tracks)  # (F, tracks, nodes, 3)
        names = tracks or ["individual_0"]
        who = _pick_individual(names, individual, path)
        sel = arr[:, names.index(who)] if arr.shape[1] else np.full((arr.shape[0], len(nodes), 3), np.nan)
        out[str(cam.name)] = _detections(sel[..., :2], sel[..., 2], np.arange(arr.shape[0]), nodes,
                                         software="SLEAP", source=path, individual=who)
    if not out:
        raise DetectionFileError(f"{path}: its RecordingSession links no video to a camera.")
    return out


def load_detections(path, *, software: str | None = None, individual=None, person=None) -> xr.Dataset:
    """Read one camera's 2D detections.

    Parameters
    ----------
    path : path-like
        A DeepLabCut ``.h5``/``.csv``, SLEAP ``.slp``/``.analysis.h5``, Lightning Pose
        ``.csv`` file, or an OpenPose JSON folder.
    software : {"dlc", "sleap", "lp", "openpose"}, optional
        Inferred from the file when omitted (a DeepLabCut-style CSV is read the
        same way whether DeepLabCut or Lightning Pose wrote it).
    individual : str, optional
        The animal to read from a multi-animal file (required when there are several).
    person : int, optional
        OpenPose only: the person index (default: the most confident person per frame).

    Returns
    -------
    xarray.Dataset
        ``position`` (frame, keypoint, uv) and ``confidence`` (frame, keypoint).
    """
    path = Path(path)
    name = SOFTWARE.get(str(software).lower()) if software else None
    if software and name is None:
        raise DetectionFileError(f"unknown detection software {software!r}; use one of {sorted(set(SOFTWARE))}.")
    if path.is_dir():
        if name not in (None, "OpenPose"):
            raise DetectionFileError(f"{path} is a folder; only OpenPose writes a folder of JSON files.")
        return load_openpose_folder(path, person=person)
    if not path.is_file():
        raise DetectionFileError(f"detection file {path} does not exist.")
    if path.suffix.lower() not in (".h5", ".csv", ".slp"):
        raise DetectionFileError(
            f"{path}: unknown detection format {path.suffix!r}; gimbal reads DeepLabCut .h5/.csv, SLEAP .slp/.h5, "
            "Lightning Pose .csv and OpenPose JSON folders."
        )
    if path.suffix.lower() == ".slp":
        name = name or "SLEAP"
        videos = _slp_video_names(path)
        if len(videos) > 1:  # movement would read the first video's frames only
            raise DetectionFileError(
                f"{path} holds detections from {len(videos)} videos "
                f"({', '.join(videos[:4])}{', ...' if len(videos) > 4 else ''}) but stands for one camera here. "
                "If it is a multi-camera SLEAP session, give it alone as the detections (gimbal import --detections "
                "FILE); otherwise export one .slp per camera's video from SLEAP."
            )
    return _from_movement(path, name, individual)


def _slp_video_names(path: Path) -> list[str]:
    """The file names of the videos a ``.slp`` file's labels refer to (its ``videos_json``); empty if unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            entries = [json.loads(v) for v in f["videos_json"][()]] if "videos_json" in f else []
    except (OSError, ValueError, KeyError):
        return []  # left to the reader, whose error says what is wrong with the file
    return [Path(str(e.get("backend", {}).get("filename", "?")).replace("\\", "/")).name for e in entries]
