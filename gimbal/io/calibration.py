"""Camera calibrations: aniposelib TOML, DANNCE/Label3D ``.mat`` and SLEAP sessions.

One camera is a :class:`Camera`: intrinsics ``K`` (with skew where the
calibration has one), rotation ``R`` and translation ``t`` (world to camera,
``x_cam = R X + t``), its lens model's distortion coefficients (OpenCV's standard
model: five, ``k1 k2 p1 p2 k3``; OpenCV's fisheye model, ``fisheye=True``: four,
``k1 k2 k3 k4``) and the image size. Raw (distorted) pixels are turned into pinhole
pixels with :meth:`Camera.undistort` (OpenCV's iterative inverse of the lens model);
the pinhole matrix ``K [R | t]`` of :meth:`Camera.pinhole_matrix` then maps
world points to those pixels, which is what the model and the triangulation use.
:meth:`Camera.project` goes back to raw pixels, distortion included.

Formats:

* aniposelib ``calibration.toml``: one table per camera with ``name``, ``size``,
  ``matrix``, ``distortions`` (5; 4 with ``fisheye = true``, aniposelib's
  ``FisheyeCamera``), ``rotation`` (Rodrigues) and ``translation``.
* DANNCE/Label3D ``label3d_dannce.mat``: ``camnames`` and ``params`` with ``K``,
  ``r``, ``t``, ``RDistort`` (k1 k2 [k3]) and ``TDistort`` (p1 p2), in MATLAB's
  row-vector convention (``x_cam = X r + t``, pixel ``= x_cam K``): transposed here.
* a SLEAP ``.slp`` holding a ``RecordingSession`` (its camera group; same
  conventions as aniposelib).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._files import reader_for

__all__ = ["Camera", "Calibration", "CalibrationFileError", "load_calibration"]

N_DIST = 5  # OpenCV's standard model: k1 k2 p1 p2 k3
N_FISHEYE = 4  # OpenCV's fisheye model: k1 k2 k3 k4


class CalibrationFileError(ValueError):
    """A calibration file is missing, unreadable or inconsistent."""


def _cv2():
    import cv2

    return cv2


def _shaped(camera, label, value, shape) -> np.ndarray:
    arr = np.asarray(value, float)
    if arr.size != int(np.prod(shape)):
        raise CalibrationFileError(f"camera {camera!r}: its {label} must have {int(np.prod(shape))} numbers {shape}, "
                                   f"got {arr.size}.")
    return arr.reshape(shape)


@dataclass(frozen=True)
class Camera:
    """One calibrated camera (OpenCV conventions, world-to-camera extrinsics)."""

    name: str
    K: np.ndarray  # (3, 3) intrinsics, skew allowed
    R: np.ndarray  # (3, 3) rotation, x_cam = R X + t
    t: np.ndarray  # (3,)
    dist: np.ndarray  # (5,) k1 k2 p1 p2 k3; with fisheye=True (4,) k1 k2 k3 k4
    size: tuple[float, float]  # (width, height) in pixels
    fisheye: bool = False  # OpenCV's fisheye lens model (cv2.fisheye) instead of its standard one

    def __post_init__(self):
        K = _shaped(self.name, "intrinsic matrix", self.K, (3, 3))
        R = _shaped(self.name, "rotation", self.R, (3, 3))
        t = _shaped(self.name, "translation", self.t, (3,))
        n, model = (N_FISHEYE, "fisheye model's 4 (k1 k2 k3 k4)") if self.fisheye else (N_DIST, "5 (k1 k2 p1 p2 k3)")
        dist = np.zeros(n)
        given = np.asarray(self.dist, float).ravel()
        if given.size > n:
            if np.any(given[n:] != 0):
                raise CalibrationFileError(
                    f"camera {self.name!r} has {given.size} distortion coefficients; gimbal supports OpenCV's {model} "
                    "and the extra ones are not zero."
                )
            given = given[:n]
        dist[: given.size] = given
        size = tuple(float(s) for s in np.asarray(self.size, float).ravel())
        for label, arr in (("intrinsic matrix", K), ("rotation", R), ("translation", t), ("distortion", dist)):
            if not np.all(np.isfinite(arr)):
                raise CalibrationFileError(f"camera {self.name!r}: its {label} contains NaN or inf.")
        if len(size) != 2 or min(size) <= 0 or not all(np.isfinite(size)):
            raise CalibrationFileError(f"camera {self.name!r}: image size must be two positive numbers, got {size}.")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
            raise CalibrationFileError(
                f"camera {self.name!r}: intrinsic matrix {K.tolist()} is not of the form [[fx, s, cx], [0, fy, cy], "
                "[0, 0, 1]] with positive focal lengths."
            )
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise CalibrationFileError(f"camera {self.name!r}: rotation is not a proper rotation matrix.")
        for attr, value in (("K", K), ("R", R), ("t", t), ("dist", dist), ("size", size),
                            ("fisheye", bool(self.fisheye))):
            object.__setattr__(self, attr, value)

    @property
    def rvec(self) -> np.ndarray:
        """Rodrigues vector of :attr:`R`."""
        return _cv2().Rodrigues(self.R)[0].ravel()

    def pinhole_matrix(self) -> np.ndarray:
        """``K [R | t]``: world points to undistorted pixels, (3, 4)."""
        return self.K @ np.hstack([self.R, self.t[:, None]])

    def undistort(self, pixels) -> np.ndarray:
        """Raw pixels ``(..., 2)`` to pinhole pixels (same ``K``); NaN stays NaN."""
        pix = np.asarray(pixels, float)
        out = np.full(pix.shape, np.nan)
        flat, flat_out = pix.reshape(-1, 2), out.reshape(-1, 2)
        ok = np.isfinite(flat).all(-1)
        if not ok.any():
            return out
        if not np.any(self.dist):
            flat_out[ok] = flat[ok]
            return out
        cv2 = _cv2()
        homog = np.c_[flat[ok], np.ones(ok.sum())] @ np.linalg.inv(self.K).T  # distorted normalized (skew removed)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        src = homog[:, None, :2].copy()
        if self.fisheye:
            norm = cv2.fisheye.undistortPoints(src, np.eye(3), self.dist, criteria=criteria)
        elif hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x names the iterating form separately
            norm = cv2.undistortPointsIter(src, np.eye(3), self.dist, None, None, criteria)
        else:
            norm = cv2.undistortPoints(src, np.eye(3), self.dist, R=None, P=None, criteria=criteria)
        flat_out[ok] = (np.c_[norm.reshape(-1, 2), np.ones(ok.sum())] @ self.K.T)[:, :2]
        return out

    def project(self, points, distort: bool = True) -> np.ndarray:
        """World points ``(..., 3)`` to raw pixels ``(..., 2)`` (pinhole pixels with ``distort=False``).

        Points at or behind the camera give NaN.
        """
        pts = np.asarray(points, float)
        flat = pts.reshape(-1, 3)
        out = np.full((flat.shape[0], 2), np.nan)
        cam = flat @ self.R.T + self.t
        ok = np.isfinite(cam).all(-1) & (cam[:, 2] > 0)
        if ok.any():
            if distort and np.any(self.dist):
                project = _cv2().fisheye.projectPoints if self.fisheye else _cv2().projectPoints
                norm, _ = project(flat[ok][:, None, :], self.rvec, self.t, np.eye(3), self.dist)
                norm = norm.reshape(-1, 2)
            else:
                norm = cam[ok, :2] / cam[ok, 2:3]
            out[ok] = (np.c_[norm, np.ones(ok.sum())] @ self.K.T)[:, :2]
        return out.reshape(*pts.shape[:-1], 2)

    def same_parameters(self, other: "Camera") -> bool:
        """True when the two cameras' intrinsics and extrinsics are identical (a copied calibration)."""
        return bool(np.allclose(self.K, other.K) and np.allclose(self.R, other.R) and np.allclose(self.t, other.t))


@dataclass(frozen=True)
class Calibration:
    """Calibrated cameras by name, in the file's order, plus where they came from."""

    cameras: tuple[Camera, ...]
    source: str = ""
    units: str = "mm"

    def __post_init__(self):
        names = [c.name for c in self.cameras]
        if not names:
            raise CalibrationFileError(f"{self.source or 'calibration'}: no cameras found.")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise CalibrationFileError(f"{self.source}: camera names {dupes} appear more than once.")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def __getitem__(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera {name!r} in {self.source}; cameras: {self.names}")

    def select(self, names) -> "Calibration":
        """The cameras ``names``, in that order."""
        return Calibration(tuple(self[n] for n in names), source=self.source, units=self.units)

    def pinhole_matrices(self) -> np.ndarray:
        return np.stack([c.pinhole_matrix() for c in self.cameras])


# --- readers --------------------------------------------------------------------------------


def _read_anipose_toml(path: Path) -> Calibration:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationFileError(f"{path} is not a valid TOML file: {exc}") from exc
    cameras = []
    for key, table in data.items():
        if key == "metadata" or not isinstance(table, dict):
            continue
        missing = [f for f in ("size", "matrix", "rotation", "translation") if f not in table]
        if missing:
            raise CalibrationFileError(
                f"{path}: section [{key}] lacks {missing}; an aniposelib calibration has name, size, matrix, "
                "distortions, rotation (Rodrigues) and translation per camera."
            )
        rvec = np.asarray(table["rotation"], float).ravel()
        if rvec.size != 3 or not np.all(np.isfinite(rvec)):
            raise CalibrationFileError(f"{path}: [{key}] rotation must be 3 finite numbers (Rodrigues), got {rvec}.")
        R = _cv2().Rodrigues(rvec)[0]
        fisheye = table.get("fisheye", False)
        if not isinstance(fisheye, bool):
            raise CalibrationFileError(f"{path}: [{key}] fisheye must be true or false, got {fisheye!r}.")
        cameras.append(Camera(str(table.get("name", key)), table["matrix"], R, table["translation"],
                              table.get("distortions", np.zeros(N_FISHEYE if fisheye else N_DIST)), table["size"],
                              fisheye=fisheye))
    return Calibration(tuple(cameras), source=str(path))


def _read_dannce_mat(path: Path) -> Calibration:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, simplify_cells=True)
    except Exception as exc:  # scipy raises several types for non-MAT files
        raise CalibrationFileError(f"{path} could not be read as a MATLAB file ({type(exc).__name__}: {exc}).") from exc
    if "params" not in mat or "camnames" not in mat:
        raise CalibrationFileError(f"{path}: a DANNCE/Label3D file has 'camnames' and 'params'; found {sorted(mat)}.")
    names = [str(n) for n in np.atleast_1d(mat["camnames"])]
    params = mat["params"] if isinstance(mat["params"], list) else [mat["params"]]
    if len(params) != len(names):
        raise CalibrationFileError(f"{path}: {len(names)} camera names but {len(params)} parameter sets.")
    cameras = []
    for name, p in zip(names, params):
        radial = np.zeros(3)
        rd = np.asarray(p.get("RDistort", np.zeros(2)), float).ravel()
        radial[: rd.size] = rd[:3]
        tangential = np.asarray(p.get("TDistort", np.zeros(2)), float).ravel()[:2]
        dist = np.array([radial[0], radial[1], tangential[0], tangential[1], radial[2]])
        K = np.asarray(p["K"], float).T  # MATLAB: pixel = x_cam K
        R = np.asarray(p["r"], float).T  # MATLAB: x_cam = X r + t
        size = _dannce_image_size(K)
        cameras.append(Camera(name, K, R, np.asarray(p["t"], float).ravel(), dist, size))
    return Calibration(tuple(cameras), source=str(path))


def _dannce_image_size(K: np.ndarray) -> tuple[float, float]:
    """Label3D files carry no image size: twice the principal point is the best estimate (recorded as such)."""
    return (float(np.ceil(2 * K[0, 2])), float(np.ceil(2 * K[1, 2])))


def _read_slp_session(path: Path) -> Calibration:
    from .detections import load_slp

    labels = load_slp(path)
    if not labels.sessions:
        raise CalibrationFileError(f"{path} holds no RecordingSession, so no calibration; pass a calibration.toml.")
    if len(labels.sessions) > 1:
        raise CalibrationFileError(f"{path} holds {len(labels.sessions)} recording sessions; gimbal reads one.")
    group = labels.sessions[0].camera_group
    cameras = []
    for cam in group.cameras:
        cameras.append(Camera(str(cam.name), cam.matrix, _cv2().Rodrigues(np.asarray(cam.rvec, float))[0], cam.tvec,
                              cam.dist, cam.size))
    return Calibration(tuple(cameras), source=str(path))


READERS = {".toml": _read_anipose_toml, ".mat": _read_dannce_mat, ".slp": _read_slp_session}


def load_calibration(path) -> Calibration:
    """Read a calibration file: aniposelib ``.toml``, DANNCE/Label3D ``.mat`` or a SLEAP ``.slp`` session.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    Calibration

    Raises
    ------
    CalibrationFileError
        When the file is missing, of an unknown kind, or holds a camera with
        non-finite or malformed parameters (the message names the camera).
    """
    path, reader = reader_for(path, READERS, CalibrationFileError, "calibration",
                              "gimbal reads aniposelib .toml, DANNCE/Label3D .mat and SLEAP .slp sessions")
    return reader(path)
