"""The dataset container: one ``xarray.Dataset`` with named dimensions.

Dimensions: ``frame`` (T), ``camera`` (C), ``keypoint`` (K), ``uv`` (2 image
axes), ``xyz`` (3 world axes), ``row``/``col`` (camera-matrix entries), ``wh``.

Variables:

* ``observations`` (frame, camera, keypoint, uv): 2D detections in pixels, NaN = missing.
* ``camera_matrix`` (camera, row, col): 3x4 pinhole matrices.
* ``image_size`` (camera, wh): image width and height in pixels.
* ``parents`` (keypoint): parent index, -1 for the root.
* from ``gimbal import``: ``observations_raw`` (frame, camera, keypoint, uv), the detector's pixels before
  undistortion (``observations`` holds the undistorted ones the pinhole matrices map to); ``confidence``
  (frame, camera, keypoint); the calibration ``camera_intrinsics``, ``camera_rotation`` (camera, row, col3),
  ``camera_translation`` (camera, row), ``camera_distortion`` (camera, dist_coeff: k1 k2 p1 p2 k3, OpenCV's
  standard lens model); where a camera has a fisheye lens (OpenCV's fisheye model, format 2) also
  ``camera_fisheye`` (camera, bool) and ``camera_fisheye_distortion`` (camera, fisheye_coeff: k1 k2 k3 k4).
* optional ground truth: ``positions_true`` (frame, keypoint, xyz), ``states_true``
  (frame), ``is_outlier`` (frame, camera, keypoint), ``bone_lengths_true`` (keypoint); from a simulated detector
  (:mod:`gimbal.datasets.detector_errors`) also ``outlier_rate_true`` (camera, keypoint) and ``offset_true``
  (camera, keypoint, uv), each pair's systematic pixel offset.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import UsageError
from ..model.skeleton import Skeleton, validate_parents

FORMAT_VERSION = 2  # 2: fisheye lenses (camera_fisheye, camera_fisheye_distortion)

__all__ = ["from_arrays", "validate_dataset", "truncate", "exclude_detections", "skeleton_of", "FORMAT_VERSION"]


def _as_float(name, value, ndim):
    arr = np.asarray(value, dtype=float)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}.")
    return arr


def from_arrays(
    observations,
    camera_matrices,
    parents,
    keypoint_names=None,
    image_size=None,
    *,
    camera_names=None,
    positions_true=None,
    states_true=None,
    is_outlier=None,
    fps: float | None = None,
    units: str = "mm",
    name: str = "custom",
    description: str = "",
) -> xr.Dataset:
    """Build a GIMBAL dataset from numpy arrays.

    Parameters
    ----------
    observations : (T, C, K, 2) array_like
        2D keypoint detections in pixels; ``NaN`` marks a missing detection.
    camera_matrices : (C, 3, 4) array_like
        Pinhole camera matrices ``K [R | t]`` (undistorted pixels).
    parents : (K,) sequence of int
        Skeleton tree, root first (``-1``), parents before children.
    keypoint_names : sequence of str, optional
        Defaults to ``kp0, kp1, ...``.
    image_size : (2,) or (C, 2) array_like, optional
        Width and height in pixels. Defaults to the bounding box of the
        detections per camera (rounded up), which the outlier component needs.
    camera_names, positions_true, states_true, is_outlier, fps, units, name, description
        Optional metadata and ground truth (``positions_true`` is (T, K, 3),
        ``states_true`` is (T,), ``is_outlier`` is (T, C, K)).

    Returns
    -------
    xarray.Dataset
        A validated dataset (see the module docstring for its layout).
    """
    obs = _as_float("observations", observations, 4)
    if obs.shape[-1] != 2:
        raise ValueError(f"observations must be (T, C, K, 2) pixels, got shape {obs.shape}.")
    T, C, K, _ = obs.shape
    P = _as_float("camera_matrices", camera_matrices, 3)
    if P.shape != (C, 3, 4):
        raise ValueError(
            f"camera_matrices must be (C, 3, 4) = ({C}, 3, 4) to match observations {obs.shape}, got {P.shape}."
        )
    parents = validate_parents(parents)
    if parents.size != K:
        raise ValueError(f"parents has {parents.size} entries but observations have K={K} keypoints.")
    skeleton = Skeleton.from_parents(parents, keypoint_names)
    if image_size is None:
        with np.errstate(all="ignore"):
            hi = np.nanmax(obs.reshape(T, C, K * 2).transpose(1, 0, 2).reshape(C, -1, 2), axis=1)
        image_size = np.ceil(np.nan_to_num(hi, nan=1.0) + 1.0)
    size = np.broadcast_to(np.asarray(image_size, float), (C, 2)).copy()
    if np.any(size <= 0):
        raise ValueError(f"image_size must be positive (width, height), got {size.tolist()}.")
    camera_names = [f"cam{c}" for c in range(C)] if camera_names is None else [str(c) for c in camera_names]
    ds = xr.Dataset(
        {
            "observations": (("frame", "camera", "keypoint", "uv"), obs),
            "camera_matrix": (("camera", "row", "col"), P),
            "image_size": (("camera", "wh"), size),
            "parents": (("keypoint",), parents.astype(np.int64)),
        },
        coords={
            "frame": np.arange(T),
            "camera": camera_names,
            "keypoint": list(skeleton.names),
            "uv": ["u", "v"],
            "xyz": ["x", "y", "z"],
            "wh": ["width", "height"],
        },
        attrs={
            "name": name,
            "description": description,
            "units": units,
            "gimbal_format_version": FORMAT_VERSION,
        },
    )
    if fps is not None:
        ds.attrs["fps"] = float(fps)
    if positions_true is not None:
        ds["positions_true"] = (("frame", "keypoint", "xyz"), _check_shape("positions_true", positions_true, (T, K, 3)))
    if states_true is not None:
        states = np.asarray(states_true)
        if states.shape != (T,):
            raise ValueError(f"states_true must have shape ({T},), got {states.shape}.")
        ds["states_true"] = (("frame",), states.astype(np.int64))
        ds.attrs["n_states"] = int(states.max()) + 1
    if is_outlier is not None:
        out = np.asarray(is_outlier, dtype=bool)
        if out.shape != (T, C, K):
            raise ValueError(f"is_outlier must have shape ({T}, {C}, {K}), got {out.shape}.")
        ds["is_outlier"] = (("frame", "camera", "keypoint"), out)
    validate_dataset(ds)
    return ds


def _check_shape(name, value, shape):
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}.")
    return arr


REQUIRED = ("observations", "camera_matrix", "image_size", "parents")


def validate_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Check a dataset's layout and content; raise ``ValueError`` naming the problem.

    Checks: required variables and dimensions, a valid skeleton tree, finite and
    non-degenerate camera matrices, that every camera sees at least one keypoint
    (a camera that sees nothing is almost always a calibration/ordering mistake),
    and that every keypoint is detected somewhere (else nothing informs it).
    """
    missing = [v for v in REQUIRED if v not in ds]
    if missing:
        raise ValueError(f"dataset lacks required variables {missing}; build it with gimbal.datasets.from_arrays().")
    if ds["observations"].dims != ("frame", "camera", "keypoint", "uv"):
        raise ValueError(f"observations must have dims (frame, camera, keypoint, uv), got {ds['observations'].dims}.")
    validate_parents(ds["parents"].values)
    P = ds["camera_matrix"].values
    if not np.all(np.isfinite(P)):
        raise ValueError("camera_matrix contains NaN or inf; every camera needs a finite 3x4 matrix.")
    names = [str(c) for c in ds["camera"].values]
    degenerate = [n for n, M in zip(names, P) if np.linalg.matrix_rank(M[:, :3]) < 3]
    if degenerate:
        raise ValueError(f"camera(s) {degenerate} have a degenerate camera matrix (its left 3x3 block is singular, e.g. "
                         "all zeros): every camera needs K [R | t] with a proper rotation and intrinsics.")
    obs = ds["observations"].values
    if np.isinf(obs).any():
        raise ValueError("observations contain inf; mark missing detections with NaN instead.")
    seen = np.isfinite(obs).all(-1)  # (T, C, K)
    blind = [str(c) for c, s in zip(ds["camera"].values, seen.any(axis=(0, 2))) if not s]
    if blind:
        raise ValueError(
            f"camera(s) {blind} see no keypoint in any frame; check the camera order or drop those cameras."
        )
    unseen = [str(k) for k, s in zip(ds["keypoint"].values, seen.any(axis=(0, 1))) if not s]
    if unseen:
        raise ValueError(
            f"keypoint(s) {unseen} are detected by no camera in any frame, so nothing places them; drop them from the "
            "skeleton (they must be leaves, or re-root the tree) or use a longer excerpt."
        )
    if ds.sizes["frame"] < 1:
        raise ValueError("dataset has no frames.")
    return ds


def skeleton_of(ds: xr.Dataset) -> Skeleton:
    """The dataset's skeleton."""
    return Skeleton(tuple(str(k) for k in ds["keypoint"].values), tuple(int(p) for p in ds["parents"].values))


def truncate(ds: xr.Dataset, max_T: int | None = None, max_K: int | None = None) -> xr.Dataset:
    """Keep the first ``max_T`` frames and first ``max_K`` keypoints.

    Raises ``ValueError`` when a limit exceeds what the dataset has, so a typo
    is never silently ignored.
    """
    T, K = ds.sizes["frame"], ds.sizes["keypoint"]
    if max_T is not None:
        if not 1 <= int(max_T) <= T:
            raise ValueError(f"max_T={max_T} is outside [1, {T}]: dataset '{ds.attrs.get('name')}' has T={T} frames.")
        ds = ds.isel(frame=slice(0, int(max_T)))
    if max_K is not None:
        if not 1 <= int(max_K) <= K:
            raise ValueError(
                f"max_K={max_K} is outside [1, {K}]: dataset '{ds.attrs.get('name')}' has K={K} keypoints."
            )
        ds = ds.isel(keypoint=slice(0, int(max_K)))
        if "bone" in ds.dims:  # per-bone ground truth: bones are keypoints 1..K-1
            ds = ds.isel(bone=slice(0, int(max_K) - 1))
    if "states_true" in ds:
        ds.attrs["n_states"] = int(ds.attrs.get("n_states", int(ds["states_true"].max()) + 1))
    return validate_dataset(ds)


def _camera_keypoint(pair) -> tuple[str, str]:
    if isinstance(pair, str):
        camera, _, keypoint = pair.partition(":")
        return camera.strip(), keypoint.strip()
    camera, keypoint = pair
    return str(camera), str(keypoint)


def exclude_detections(ds: xr.Dataset, pairs) -> xr.Dataset:
    """The dataset with every detection of the given (camera, keypoint) pairs removed (set missing).

    For detections that are systematically off (a camera's calibration error at one keypoint, a detector that marks
    another spot): :func:`gimbal.model.regions.explain_regions` names pairs whose detections the chains disagree
    about. Their scores go too; the raw (distorted) pixels stay as imported. The pairs are recorded in the attribute
    ``excluded_detections``.

    Parameters
    ----------
    ds : xarray.Dataset
    pairs : iterable of (camera, keypoint) or "CAMERA:KEYPOINT"

    Raises
    ------
    gimbal.errors.UsageError
        (a ``ValueError``) A malformed pair, a name the dataset does not have (the message lists the names it has),
        or a camera or keypoint left without any detection.
    """
    cameras = [str(c) for c in ds["camera"].values]
    keypoints = [str(k) for k in ds["keypoint"].values]
    mask = np.zeros((len(cameras), len(keypoints)), bool)
    said = []
    for pair in pairs:
        camera, keypoint = _camera_keypoint(pair)
        if not camera or not keypoint:
            raise UsageError(f"a detection pair is CAMERA:KEYPOINT (e.g. {cameras[0]}:{keypoints[0]}), got {pair!r}.")
        if camera not in cameras:
            raise UsageError(f"camera {camera!r} (in {pair!r}) is not a camera of this dataset: {cameras}.")
        if keypoint not in keypoints:
            raise UsageError(f"keypoint {keypoint!r} (in {pair!r}) is not a keypoint of this dataset: {keypoints}.")
        mask[cameras.index(camera), keypoints.index(keypoint)] = True
        said.append(f"{camera}:{keypoint}")
    if not said:
        return ds
    out = ds.copy()
    kept = ~xr.DataArray(mask, dims=("camera", "keypoint"))
    out["observations"] = out["observations"].where(kept).transpose(*ds["observations"].dims)
    if "confidence" in out:
        out["confidence"] = out["confidence"].where(kept).transpose(*ds["confidence"].dims)
    before = ds.attrs.get("excluded_detections", "")
    out.attrs["excluded_detections"] = ",".join([before, *said] if before else said)
    try:
        return validate_dataset(out)
    except ValueError as err:
        raise UsageError(f"leaving out {', '.join(said)} leaves a dataset that cannot be fitted: {err}") from None
