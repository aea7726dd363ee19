"""Real data: the tethered fruit fly shipped inside the DeepFly3D wheel.

``nely-df3d==1.0.1`` (LGPL) carries ``data/df3d_result.pkl`` (2D network
detections of 38 keypoints in 7 cameras over 15 frames, plus DeepFly3D's own 3D
estimate) and ``data/calib.pkl`` (per-camera R, tvec, intrinsics, zero
distortion). The wheel is fetched with pip into the user cache on first use;
nothing of it is stored in this repository.

DeepFly3D's network predicts every joint in every camera it stores, seen or not, and DeepFly3D itself uses a joint's
detection only where that camera can see the joint (``df3d.skeleton_fly.camera_see_joint``; :func:`fly_visibility`).
The loader applies the same rule by default. Measured against DeepFly3D's own 3D estimate, the 450 detections it
drops (360 of the front camera ``cam3``: its hind legs, coxae and stripes; 45 each of ``cam2``'s and ``cam4``'s
stripes) reproject 6.5-582 px off (median 142 px, 90% beyond 31 px), the 1,830 it keeps at most 17 px (median 2.6-3.3
px per camera).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import xarray as xr

from ..model.cameras import camera_matrix
from .container import from_arrays

__all__ = ["load_deepfly3d", "fly_visibility", "FLY_PARENTS", "DeepFly3DUnavailable"]

WHEEL = "nely-df3d==1.0.1"

# Each leg is a chain body-coxa -> coxa-femur -> femur-tibia -> tibia-tarsus -> tarsus-tip;
# legs, antennae and the abdominal stripe chains hang off keypoint 0 so the whole fly is one tree.
FLY_PARENTS = (
    -1, 0, 1, 2, 3,  0, 5, 6, 7, 8,  0, 10, 11, 12, 13,  0,  0, 16, 17,
    0, 19, 20, 21, 22,  0, 24, 25, 26, 27,  0, 29, 30, 31, 32,  0,  0, 35, 36,
)  # fmt: skip
_LEG_PARTS = ("BodyCoxa", "CoxaFemur", "FemurTibia", "TibiaTarsus", "TarsusTip")


# DeepFly3D's visibility rule, per side of the fly (keypoints 0-18 and 19-37, in the order of ``_fly_names``):
# cameras 0-2 see the first side and 4-6 the second; the front camera 3 sees both sides' front and middle legs from the
# femur-tibia joint down (indices 2-4 and 7-9) and the antennae (15); cameras 2 and 4 do not see the stripes (16-18)
_FRONT_CAMERA_SEES = (2, 3, 4, 7, 8, 9, 15)
_STRIPES = (16, 17, 18)
_SIDE_CAMERAS = {0: 0, 1: 0, 2: 0, 4: 1, 5: 1, 6: 1}  # camera -> side (0: keypoints 0-18, 1: 19-37)


def fly_visibility() -> np.ndarray:
    """``(7, 38)`` bool: whether DeepFly3D counts camera ``c``'s detection of keypoint ``k``.

    DeepFly3D's ``camera_see_joint``, in this loader's keypoint order.
    """
    seen = np.zeros((7, 38), bool)
    for cam, side in _SIDE_CAMERAS.items():
        seen[cam, 19 * side:19 * side + 19] = True
        if cam in (2, 4):
            seen[cam, [19 * side + k for k in _STRIPES]] = False
    for side in (0, 1):
        seen[3, [19 * side + k for k in _FRONT_CAMERA_SEES]] = True
    return seen


def _fly_names():
    names = []
    for side, offset in (("L", 0), ("R", 19)):
        for leg in ("F", "M", "H"):
            names += [f"{side}{leg}_{p}" for p in _LEG_PARTS]
        names += [f"{side}_Antenna", f"{side}_Stripe1", f"{side}_Stripe2", f"{side}_Stripe3"]
    return names


class DeepFly3DUnavailable(RuntimeError):
    """The DeepFly3D wheel could not be fetched (offline?)."""


def _wheel_path(cache_dir: Path) -> Path:
    found = sorted(cache_dir.glob("nely_df3d-1.0.1-*.whl"))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache_dir)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise DeepFly3DUnavailable(
            f"could not download {WHEEL} with pip ({detail.strip()[-300:]}). "
            "The DeepFly3D data needs PyPI access once; it is cached afterwards."
        ) from exc
    found = sorted(cache_dir.glob("nely_df3d-1.0.1-*.whl"))
    if not found:
        raise DeepFly3DUnavailable(f"pip reported success but no {WHEEL} wheel is in {cache_dir}.")
    return found[0]


def load_deepfly3d(cache_dir, visible_only: bool = True) -> xr.Dataset:
    """Load the DeepFly3D fly recording into a GIMBAL dataset.

    Unseen detections (stored as ``(0, 0)`` by DeepFly3D) become ``NaN``, and with ``visible_only`` (the default)
    so do the detections of joints their camera cannot see (:func:`fly_visibility`, DeepFly3D's own rule; their
    number is in ``attrs["invisible_detections_dropped"]``). ``visible_only=False`` keeps every stored prediction.
    DeepFly3D's own 3D estimate is kept as ``positions_reference`` (it is a
    reconstruction, not motion-capture ground truth).
    """
    wheel = _wheel_path(Path(cache_dir))
    with zipfile.ZipFile(wheel) as zf:
        result = pickle.loads(zf.read("data/df3d_result.pkl"))  # noqa: S301 - a pinned, known wheel
        calib = pickle.loads(zf.read("data/calib.pkl"))  # noqa: S301
    cams = sorted(k for k in calib if not isinstance(k, str))
    P = np.stack([camera_matrix(calib[c]["intr"], calib[c]["R"], calib[c]["tvec"]) for c in cams])
    obs = np.asarray(result["points2d"], float).transpose(1, 0, 2, 3).copy()  # (T, C, K, 2)
    obs[np.all(obs == 0, axis=-1)] = np.nan
    dropped = 0
    if visible_only:
        hidden = np.isfinite(obs).all(-1) & ~fly_visibility()[cams][None, :, :]
        dropped = int(hidden.sum())
        obs[hidden] = np.nan
    ds = from_arrays(
        obs,
        P,
        FLY_PARENTS,
        keypoint_names=_fly_names(),
        image_size=(960.0, 480.0),
        camera_names=[f"cam{c}" for c in cams],
        fps=100.0,
        units="mm",
        name="deepfly3d",
        description="DeepFly3D tethered fly (nely-df3d 1.0.1): 7 cameras, 15 frames, 38 keypoints, real detections.",
    )
    ds["positions_reference"] = (("frame", "keypoint", "xyz"), np.asarray(result["points3d"], float))
    ds.attrs["source"] = WHEEL
    ds.attrs["invisible_detections_dropped"] = dropped
    return ds
