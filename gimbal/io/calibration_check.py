"""Is a calibration consistent with the detections? Per-camera reprojection errors at import.

For each camera, confident detections of the *other* cameras are triangulated
(outlier-resistant consensus, :func:`gimbal.model.cameras.triangulate_robust`) and
reprojected into it; the median distance to its own confident detections is its
held-out error. A camera whose held-out error is far above the others' is named,
with the likely cause: parameters identical to another camera's (a copied
section), detections that fit another camera's calibration better (swapped
files or names), or extrinsics that disagree with the rest (moved after
calibration, or a calibration of another session).

The same residuals, per (camera, keypoint), give each pair's steady offset: the median over frames of the vector
from the others' triangulation to the camera's detection, next to how much it scatters from frame to frame. A large
offset with a small scatter is a bias, not noise: the detector marks another spot than the other cameras' detectors,
or the calibration is off at that place. The report lists the largest (:data:`N_OFFSETS`) without judging them; such a
pair pulls a fit towards it unless the fit takes it off (the default: :mod:`gimbal.model.offsets` estimates each
pair's offset), and ``--exclude CAMERA:KEYPOINT`` leaves it out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..model.cameras import project, triangulate_robust

__all__ = ["CameraCheck", "PairOffset", "CalibrationReport", "check_calibration", "flagged_at_import", "FLAG_RATIO",
           "FLAG_MIN_PX", "N_OFFSETS"]

FLAG_RATIO = 3.0  # flagged when the held-out error exceeds this multiple of the other cameras' median ...
FLAG_MIN_PX = 20.0  # ... and this many pixels (real calibrations reproject at a few pixels)
FLAGGED_FIX = "Fits with them are biased: fix the calibration and import again, or import without them."
N_OFFSETS = 10  # the largest per-(camera, keypoint) offsets listed
MIN_OFFSET_FRAMES = 10  # a pair's offset needs this many frames with both its detection and the others' point


@dataclass(frozen=True)
class CameraCheck:
    """One camera's consistency with the others."""

    name: str
    n_points: int  # confident detections compared
    heldout_median_px: float | None  # others triangulate, this camera is compared
    flagged: bool = False
    cause: str = ""


@dataclass(frozen=True)
class PairOffset:
    """One (camera, keypoint) pair's steady offset from the other cameras' triangulation."""

    camera: str
    keypoint: str
    offset_px: float  # length of the median (over frames) residual vector, detection minus the others' point
    scatter_px: float  # median distance of the frames' residual vectors from that median
    n_frames: int


@dataclass(frozen=True)
class CalibrationReport:
    """Per-camera results of :func:`check_calibration`, and the largest per-(camera, keypoint) offsets."""

    cameras: tuple[CameraCheck, ...]
    min_confidence: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    offsets: tuple[PairOffset, ...] = ()

    @property
    def flagged(self) -> list[CameraCheck]:
        return [c for c in self.cameras if c.flagged]

    @property
    def ok(self) -> bool:
        return not self.flagged

    def to_dict(self) -> dict:
        return {"cameras": [asdict(c) for c in self.cameras], "min_confidence": self.min_confidence,
                "flagged": [c.name for c in self.flagged], "notes": list(self.notes),
                "largest_offsets": [asdict(o) for o in self.offsets],
                "rule": f"flagged when the held-out median exceeds {FLAG_RATIO:g}x the other cameras' median "
                        f"and {FLAG_MIN_PX:g} px"}

    def text(self) -> str:
        lines = ["calibration check (median reprojection error of each camera from the others' triangulation):"]
        for c in self.cameras:
            err = "n/a" if c.heldout_median_px is None else f"{c.heldout_median_px:7.1f} px"
            lines.append(f"  {c.name:>12s}  {err}  ({c.n_points} detections)" + (f"  <-- {c.cause}" if c.flagged else ""))
        if self.offsets:
            lines.append("largest offsets of a camera's keypoint from the others' triangulation (median over frames; "
                         "scatter: frame to frame). A large offset with a small scatter is a bias, not noise: the fit "
                         "estimates each pair's offset and takes it off (--offsets none keeps them); gimbal evaluate "
                         "shows what leaving one out (--exclude CAMERA:KEYPOINT) changes:")
            lines.extend(f"  {o.camera}:{o.keypoint}  {o.offset_px:.1f} px  (scatter {o.scatter_px:.1f} px, "
                         f"{o.n_frames} frames)" for o in self.offsets)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def flagged_at_import(dataset) -> str | None:
    """What the import's calibration check (the dataset's ``calibration_check``) said about the cameras the dataset
    still has, where it flagged any: a fit with them is biased, whoever imported the file and however long ago. None
    when nothing was flagged or the dataset was not imported with a check."""
    text = dataset.attrs.get("calibration_check")
    if not text:
        return None
    kept = {str(c) for c in dataset["camera"].values}
    flagged = [c for c in json.loads(text)["cameras"] if c["flagged"] and c["name"] in kept]
    if not flagged:
        return None
    named = "; ".join(f"{c['name']} ({c['cause'].rstrip('.')})" if c["cause"] else c["name"] for c in flagged)
    return f"the calibration check at import flagged camera(s) {named}. {FLAGGED_FIX}"


def _heldout_residuals(obs: np.ndarray, P: np.ndarray, c: int) -> np.ndarray:
    """``(T, K, 2)``: camera ``c``'s detections minus the projection of the others' triangulation (NaN where either
    is missing)."""
    others = [i for i in range(P.shape[0]) if i != c]
    X = triangulate_robust(obs[:, others].transpose(0, 2, 1, 3), P[others])  # (T, K, 3)
    return obs[:, c] - project(X, P[c : c + 1])[:, 0]


def _errors(residuals: np.ndarray) -> np.ndarray:
    """The finite lengths of residual vectors ``(..., 2)``, flattened."""
    err = np.linalg.norm(residuals, axis=-1)
    return err[np.isfinite(err)]


def _heldout_errors(obs: np.ndarray, P: np.ndarray, c: int) -> np.ndarray:
    """Errors of camera ``c``'s detections against the others' triangulation, the finite ones flattened."""
    return _errors(_heldout_residuals(obs, P, c))


def _pair_offsets(residuals: np.ndarray, camera: str, keypoints) -> list[PairOffset]:
    """Each keypoint's :class:`PairOffset` from one camera's residuals ``(T, K, 2)`` (keypoints with fewer than
    :data:`MIN_OFFSET_FRAMES` frames left out)."""
    out = []
    for k, name in enumerate(keypoints):
        r = residuals[:, k][np.isfinite(residuals[:, k]).all(-1)]
        if len(r) < MIN_OFFSET_FRAMES:
            continue
        median = np.median(r, axis=0)
        out.append(PairOffset(camera, str(name), float(np.linalg.norm(median)),
                              float(np.median(np.linalg.norm(r - median, axis=-1))), len(r)))
    return out


def check_calibration(observations, camera_matrices, names, calibration=None, confidence=None,
                      min_confidence: float | None = None, keypoints=None) -> CalibrationReport:
    """Per-camera held-out reprojection error of (undistorted) detections, and the largest per-(camera, keypoint)
    steady offsets.

    Parameters
    ----------
    observations : (T, C, K, 2) array
        Undistorted pixels, NaN where missing.
    camera_matrices : (C, 3, 4) array
    names : sequence of str
    calibration : gimbal.io.calibration.Calibration, optional
        Used to name copied camera sections.
    confidence : (T, C, K) array, optional
    min_confidence : float, optional
        Only detections at least this confident are compared (default: all).
    keypoints : sequence of str, optional
        Keypoint names for the offsets (default: their indices).
    """
    obs = np.array(observations, float)
    P = np.asarray(camera_matrices, float)
    C = P.shape[0]
    if confidence is not None and min_confidence is not None:
        obs[~(np.asarray(confidence) >= min_confidence)] = np.nan
    notes = []
    if C < 3:
        notes.append(f"{C} cameras: a held-out check needs at least 3 (two to triangulate, one to compare).")
        return CalibrationReport(tuple(CameraCheck(str(n), 0, None) for n in names), min_confidence, tuple(notes))
    residuals = [_heldout_residuals(obs, P, c) for c in range(C)]
    errors = [_errors(r) for r in residuals]
    medians = [float(np.median(e)) if e.size else None for e in errors]
    keypoints = [str(k) for k in (keypoints if keypoints is not None else range(obs.shape[2]))]
    offsets = sorted((o for c, r in enumerate(residuals) for o in _pair_offsets(r, str(names[c]), keypoints)),
                     key=lambda o: -o.offset_px)[:N_OFFSETS]
    checks = []
    for c, name in enumerate(names):
        others = [m for i, m in enumerate(medians) if i != c and m is not None]
        m = medians[c]
        flagged = m is not None and bool(others) and m > FLAG_RATIO * float(np.median(others)) and m > FLAG_MIN_PX
        cause = _likely_cause(c, names, obs, P, calibration, m) if flagged else ""
        checks.append(CameraCheck(str(name), int(errors[c].size), m, flagged, cause))
    return CalibrationReport(tuple(checks), min_confidence, tuple(notes), tuple(offsets))


def _likely_cause(c, names, obs, P, calibration, median) -> str:
    name = str(names[c])
    if calibration is not None:
        twins = [str(n) for i, n in enumerate(names) if i != c and calibration[str(n)].same_parameters(calibration[name])]
        if twins:
            return (f"'{name}' is {median:.0f} px off, and its calibration is identical to '{twins[0]}''s: the section "
                    f"was probably copied; recalibrate or restore '{name}'.")
    # do this camera's detections fit another camera's calibration better? (swapped files or names)
    best, best_err = None, median
    for j in range(P.shape[0]):
        if j == c:
            continue
        swapped = P.copy()
        swapped[c] = P[j]
        e = _heldout_errors(obs, swapped, c)
        if e.size and float(np.median(e)) < 0.5 * best_err:
            best, best_err = str(names[j]), float(np.median(e))
    if best is not None:
        return (f"'{name}' is {median:.0f} px off, but its detections fit '{best}''s calibration ({best_err:.0f} px): "
                "the detection files or camera names are probably swapped (check --camera-map).")
    return (f"'{name}' is {median:.0f} px off while the others agree: its extrinsics do not match them (the camera "
            "moved after calibration, or the calibration is from another session).")
