"""Is a calibration consistent with the detections? Per-camera reprojection errors at import.

For each camera, confident detections of the *other* cameras are triangulated
(outlier-resistant consensus, :func:`gimbal.model.cameras.triangulate_robust`) and
reprojected into it; the median distance to its own confident detections is its
held-out error. A camera whose held-out error is far above the others' is named,
with the likely cause: parameters identical to another camera's (a copied
section), detections that fit another camera's calibration better (swapped
files or names), or extrinsics that disagree with the rest (moved after
calibration, or a calibration of another session).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..model.cameras import project, triangulate_robust

__all__ = ["CameraCheck", "CalibrationReport", "check_calibration", "flagged_at_import", "FLAG_RATIO", "FLAG_MIN_PX"]

FLAG_RATIO = 3.0  # flagged when the held-out error exceeds this multiple of the other cameras' median ...
FLAG_MIN_PX = 20.0  # ... and this many pixels (real calibrations reproject at a few pixels)
FLAGGED_FIX = "Fits with them are biased: fix the calibration and import again, or import without them."


@dataclass(frozen=True)
class CameraCheck:
    """One camera's consistency with the others."""

    name: str
    n_points: int  # confident detections compared
    heldout_median_px: float | None  # others triangulate, this camera is compared
    flagged: bool = False
    cause: str = ""


@dataclass(frozen=True)
class CalibrationReport:
    """Per-camera results of :func:`check_calibration`."""

    cameras: tuple[CameraCheck, ...]
    min_confidence: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flagged(self) -> list[CameraCheck]:
        return [c for c in self.cameras if c.flagged]

    @property
    def ok(self) -> bool:
        return not self.flagged

    def to_dict(self) -> dict:
        return {"cameras": [asdict(c) for c in self.cameras], "min_confidence": self.min_confidence,
                "flagged": [c.name for c in self.flagged], "notes": list(self.notes),
                "rule": f"flagged when the held-out median exceeds {FLAG_RATIO:g}x the other cameras' median "
                        f"and {FLAG_MIN_PX:g} px"}

    def text(self) -> str:
        lines = ["calibration check (median reprojection error of each camera from the others' triangulation):"]
        for c in self.cameras:
            err = "n/a" if c.heldout_median_px is None else f"{c.heldout_median_px:7.1f} px"
            lines.append(f"  {c.name:>12s}  {err}  ({c.n_points} detections)" + (f"  <-- {c.cause}" if c.flagged else ""))
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


def _heldout_errors(obs: np.ndarray, P: np.ndarray, c: int, det: np.ndarray | None = None) -> np.ndarray:
    """Errors of camera ``c`` (its detections ``det``, default its own) against the others' triangulation."""
    others = [i for i in range(P.shape[0]) if i != c]
    X = triangulate_robust(obs[:, others].transpose(0, 2, 1, 3), P[others])  # (T, K, 3)
    proj = project(X, P[c : c + 1])[:, 0]  # (T, K, 2)
    target = obs[:, c] if det is None else det
    err = np.linalg.norm(proj - target, axis=-1)
    return err[np.isfinite(err)]


def check_calibration(observations, camera_matrices, names, calibration=None, confidence=None,
                      min_confidence: float | None = None) -> CalibrationReport:
    """Per-camera held-out reprojection error of (undistorted) detections.

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
    errors = [_heldout_errors(obs, P, c) for c in range(C)]
    medians = [float(np.median(e)) if e.size else None for e in errors]
    checks = []
    for c, name in enumerate(names):
        others = [m for i, m in enumerate(medians) if i != c and m is not None]
        m = medians[c]
        flagged = m is not None and bool(others) and m > FLAG_RATIO * float(np.median(others)) and m > FLAG_MIN_PX
        cause = _likely_cause(c, names, obs, P, calibration, m) if flagged else ""
        checks.append(CameraCheck(str(name), int(errors[c].size), m, flagged, cause))
    return CalibrationReport(tuple(checks), min_confidence, tuple(notes))


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
