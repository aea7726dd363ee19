"""Datasets: the container, named synthetic datasets, real data, file I/O.

``load_dataset`` accepts a registered name (see :func:`list_datasets`) or the
path of a file written by :func:`save_dataset`. Synthetic datasets are
generated once, deterministically, and cached in the user cache directory
(override with the ``GIMBAL_CACHE_DIR`` environment variable).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import xarray as xr

from ..errors import UsageError
from .container import FORMAT_VERSION, exclude_detections, from_arrays, skeleton_of, truncate, validate_dataset
from .deepfly3d import DeepFly3DUnavailable, load_deepfly3d
from .io import DatasetFileError, read_dataset_file, save_dataset
from .synthetic import GENERATOR_VERSION, SYNTHETIC, cache_key, generate

__all__ = [
    "load_dataset",
    "from_arrays",
    "save_dataset",
    "list_datasets",
    "skeleton_of",
    "truncate",
    "exclude_detections",
    "validate_dataset",
    "cache_dir",
    "DatasetFileError",
    "DeepFly3DUnavailable",
    "DEFAULT_DATASET",
    "FORMAT_VERSION",
]

DEFAULT_DATASET = "v0.2.1_L00_minimal"
REAL = {"deepfly3d": "DeepFly3D tethered fly: 7 cameras, 15 frames, 38 keypoints (downloaded on first use)."}


def cache_dir() -> Path:
    """Where generated and downloaded data are cached."""
    env = os.environ.get("GIMBAL_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("gimbal"))


def list_datasets() -> dict[str, str]:
    """Registered dataset names and their one-line descriptions."""
    out = {name: spec.description for name, spec in SYNTHETIC.items()}
    out.update(REAL)
    return out


def _load_synthetic(name: str) -> xr.Dataset:
    spec = SYNTHETIC[name]
    # keyed by the spec and the generator's source: a changed generator writes a new file
    path = cache_dir() / "datasets" / f"{name}__gen{GENERATOR_VERSION}_{cache_key(spec)}.nc"
    if path.is_file():
        try:
            return read_dataset_file(path)
        except DatasetFileError:
            path.unlink()  # a damaged cache entry is regenerated, never trusted
    ds = generate(spec)
    save_dataset(ds, path, overwrite=True)
    return ds


def load_dataset(name_or_path, max_T: int | None = None, max_K: int | None = None, exclude=()) -> xr.Dataset:
    """Load a dataset by registered name or file path, optionally truncated.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`list_datasets` or a ``.nc`` file from :func:`save_dataset`.
    max_T : int, optional
        Keep the first ``max_T`` frames.
    max_K : int, optional
        Keep the first ``max_K`` keypoints (a prefix of a topological order is still a tree).
    exclude : iterable of "CAMERA:KEYPOINT", optional
        Detections left out (:func:`exclude_detections`).

    Returns
    -------
    xarray.Dataset
    """
    key = str(name_or_path)
    if key in SYNTHETIC:
        ds = _load_synthetic(key)
    elif key in REAL:
        ds = load_deepfly3d(cache_dir() / "downloads")
    elif Path(key).suffix in {".nc", ".h5", ".nc4"} or Path(key).exists():
        ds = read_dataset_file(key)
    else:
        known = ", ".join(list_datasets())
        raise UsageError(f"unknown dataset {key!r}: not a registered name ({known}) and not an existing file.")
    return exclude_detections(truncate(ds, max_T=max_T, max_K=max_K), exclude)
