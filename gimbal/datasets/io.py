"""Dataset files: netCDF (HDF5 via h5netcdf), written atomically."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from .._atomic import atomic_path
from .container import FORMAT_VERSION, validate_dataset

__all__ = ["save_dataset", "read_dataset_file", "DatasetFileError"]


class DatasetFileError(ValueError):
    """A dataset file is missing, unreadable or not a GIMBAL dataset."""


def save_dataset(dataset: xr.Dataset, path, overwrite: bool = False) -> Path:
    """Write a dataset to ``path`` (netCDF4/HDF5) atomically.

    Parameters
    ----------
    dataset : xarray.Dataset
        A dataset from :func:`gimbal.datasets.from_arrays` or :func:`load_dataset`.
    path : str or path-like
        Target file, conventionally ending in ``.nc``.
    overwrite : bool
        Replace an existing file; without it an existing file is an error.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or --overwrite) to replace it.")
    validate_dataset(dataset)
    with atomic_path(path, suffix=".nc") as tmp:
        dataset.to_netcdf(tmp, engine="h5netcdf")
    return path


def read_dataset_file(path) -> xr.Dataset:
    """Load a dataset file written by :func:`save_dataset`, with a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"dataset file {path} does not exist.")
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except Exception as exc:  # h5py/h5netcdf raise many types for damaged files
        raise DatasetFileError(
            f"{path} could not be read as a GIMBAL dataset ({type(exc).__name__}: {exc}). "
            "The file may be truncated or corrupted: re-create it with gimbal.datasets.save_dataset()."
        ) from exc
    version = ds.attrs.get("gimbal_format_version")
    if version is None:
        raise DatasetFileError(f"{path} is a netCDF file but not a GIMBAL dataset (no gimbal_format_version).")
    if int(version) > FORMAT_VERSION:
        raise DatasetFileError(
            f"{path} has dataset format {version}, newer than this gimbal ({FORMAT_VERSION}); upgrade gimbal."
        )
    if "is_outlier" in ds:
        ds["is_outlier"] = ds["is_outlier"].astype(bool)
    try:
        return validate_dataset(ds)
    except ValueError as exc:
        raise DatasetFileError(f"{path}: {exc}") from exc
