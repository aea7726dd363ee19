"""DANNCE / Label3D labelled frames (``label3d_dannce.mat``) as a dataset with 3D ground truth.

A Label3D file holds, per camera, the 2D labels of a set of frames (``data_2d``: raw, distorted pixels; the
exact reprojections of the 3D labels) and the 3D labels themselves (``data_3d``, the same in every camera),
with the calibration (``params``, MATLAB row-vector convention; read by :mod:`gimbal.io.calibration`). Joint
names are not in the file: they come from the skeleton file (DANNCE's ``*_skeleton.mat`` lists them in the
labels' order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..datasets import from_arrays
from .calibration import load_calibration
from .importer import attach_calibration
from .skeleton_files import load_skeleton

__all__ = ["Label3DFileError", "load_label3d"]


class Label3DFileError(ValueError):
    """A Label3D file lacks its labels or does not fit the skeleton."""


def _joint_order(skeleton_path: Path) -> list[str]:
    from scipy.io import loadmat

    try:
        mat = loadmat(skeleton_path, simplify_cells=True)
    except Exception as exc:  # scipy raises several types for non-MAT files
        raise Label3DFileError(f"{skeleton_path} could not be read as a MATLAB file ({type(exc).__name__}); a Label3D "
                               "import needs DANNCE's skeleton .mat, whose joint_names give the labels' order.") from exc
    if "joint_names" not in mat:
        raise Label3DFileError(f"{skeleton_path} has no 'joint_names': a Label3D import needs DANNCE's skeleton .mat, "
                               "whose joint_names give the labels' order.")
    return [str(n) for n in np.atleast_1d(mat["joint_names"])]


def load_label3d(path, skeleton, *, root: str | None = None, name: str | None = None) -> xr.Dataset:
    """Read a Label3D file's labelled frames as a gimbal dataset.

    Parameters
    ----------
    path : path-like
        ``label3d_dannce.mat``.
    skeleton : path-like
        The DANNCE skeleton ``.mat`` whose ``joint_names`` are the labels' order (and whose edges make the tree).
    root : str, optional
        Root keypoint of the tree (default: the graph's centre).
    name : str, optional
        Dataset name (default: the file's folder name).

    Returns
    -------
    xarray.Dataset
        ``observations`` are the undistorted 2D labels, ``observations_raw`` the file's pixels,
        ``positions_true`` the 3D labels (NaN where a joint was not labelled), ``frame`` the video frame
        numbers (sparse), plus the full calibration.
    """
    from scipy.io import loadmat

    path, skeleton = Path(path), Path(skeleton)
    calib = load_calibration(path)
    mat = loadmat(path, simplify_cells=True)
    if "labelData" not in mat:
        raise Label3DFileError(f"{path}: no 'labelData' (a Label3D file with labels has it); found {sorted(mat)}.")
    labels = mat["labelData"] if isinstance(mat["labelData"], list) else [mat["labelData"]]
    if len(labels) != len(calib.cameras):
        raise Label3DFileError(f"{path}: {len(labels)} label sets for {len(calib.cameras)} cameras.")
    order = _joint_order(skeleton)
    skel = load_skeleton(skeleton, root=root)
    J = len(order)
    frames = np.asarray(labels[0]["data_frame"]).ravel().astype(np.int64)
    raw = []
    for cam, lab in zip(calib.names, labels):
        xy = np.asarray(lab["data_2d"], float)
        if xy.shape != (frames.size, 2 * J) or not np.array_equal(np.ravel(lab["data_frame"]), frames):
            raise Label3DFileError(f"{path}: camera {cam}'s labels are {xy.shape} over other frames; expected "
                                   f"({frames.size}, {2 * J}) over the same frames as the first camera.")
        raw.append(xy.reshape(frames.size, J, 2))
    raw = np.stack(raw, axis=1)  # (T, C, J, 2)
    truth = np.asarray(labels[0]["data_3d"], float).reshape(frames.size, J, 3)
    idx = [order.index(k) for k in skel.names]
    raw, truth = raw[:, :, idx], truth[:, idx]
    und = np.stack([cam.undistort(raw[:, c]) for c, cam in enumerate(calib.cameras)], axis=1)
    ds = from_arrays(und, calib.pinhole_matrices(), skel.parents, keypoint_names=skel.names,
                     image_size=[c.size for c in calib.cameras], camera_names=calib.names, positions_true=truth,
                     units="mm", name=name or path.resolve().parent.name,
                     description=f"Label3D labelled frames ({frames.size}, sparse) from {path}")
    ds = ds.assign_coords(frame=frames)
    ds["observations_raw"] = (("frame", "camera", "keypoint", "uv"), raw)
    ds = attach_calibration(ds, calib)
    ds.attrs.update(calibration_file=str(path), frames_consecutive=0)
    return ds
