"""File formats of the pose-tracking ecosystem: import detections and calibrations, export posteriors.

* :mod:`gimbal.io.detections` - DeepLabCut, SLEAP, Lightning Pose (through ``movement``), multi-camera SLEAP
  sessions (``sleap-io``) and OpenPose JSON folders;
* :mod:`gimbal.io.calibration` - aniposelib ``calibration.toml``, DANNCE/Label3D ``.mat``, SLEAP sessions,
  with OpenCV lens distortion;
* :mod:`gimbal.io.skeleton_files` - skeleton YAML, DANNCE skeleton ``.mat``, anipose ``constraints``, ``.slp``;
* :mod:`gimbal.io.importer` - all of the above into one gimbal dataset (``gimbal import``);
* :mod:`gimbal.io.calibration_check` - per-camera held-out reprojection errors at import;
* :mod:`gimbal.io.export` - posteriors as movement datasets, anipose CSV and per-camera DeepLabCut files.
"""

from .calibration import Calibration, CalibrationFileError, Camera, load_calibration
from .calibration_check import CalibrationReport, CameraCheck, check_calibration
from .detections import DetectionFileError, load_detections, load_openpose_folder, load_slp_session_detections
from .importer import ImportResult, SessionImportError, calibration_from_dataset, import_session
from .skeleton_files import SkeletonFileError, load_skeleton, tree_from_edges

__all__ = [
    "Calibration",
    "CalibrationFileError",
    "CalibrationReport",
    "Camera",
    "CameraCheck",
    "DetectionFileError",
    "ImportResult",
    "SessionImportError",
    "SkeletonFileError",
    "calibration_from_dataset",
    "check_calibration",
    "import_session",
    "load_calibration",
    "load_detections",
    "load_openpose_folder",
    "load_skeleton",
    "load_slp_session_detections",
    "tree_from_edges",
]
