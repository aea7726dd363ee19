"""Posterior 3D poses in the formats the next tools read.

* ``movement``: a poses dataset (netCDF) with ``position`` (time, space, keypoint,
  individual) = the posterior mean, plus ``position_sd``, ``position_q05`` and
  ``position_q95``; ``movement``'s own validator accepts it.
* ``anipose``: an anipose-style CSV (``<kp>_x, _y, _z, _error, _ncams, _score``, ``fnum``,
  ``center_*``, ``M_*``), and beside it ``<name>.uncertainty.csv`` with ``fnum`` and
  ``<kp>_<axis>_sd``, ``_q05``, ``_q95`` (posterior sd and 90% interval). The uncertainty
  is a separate file because readers of anipose CSVs (``movement`` among them) reject
  columns other than anipose's own. ``_error`` is the mean reprojection error (raw
  pixels) of the posterior mean against the detections that saw it, ``_ncams`` the
  number of such cameras, ``_score`` their mean detector confidence.
* ``dlc``: the posterior mean reprojected into every camera, in raw (distorted)
  pixels, one DeepLabCut ``.h5`` (or ``.csv``) per camera; ``likelihood`` is 1 where
  the point projects in front of the camera (these are reprojections, not detections).

A fit folder (from ``gimbal fit``) holds ``trace.nc`` and the ``dataset.nc`` it was fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .._atomic import atomic_path
from ..model.cameras import project
from .importer import calibration_from_dataset

__all__ = ["PosteriorPoses", "posterior_poses", "load_fit", "to_movement", "to_anipose_csv", "to_dlc_files",
           "export_fit", "FORMATS", "reproject_raw", "uncertainty_path"]

FORMATS = ("movement", "anipose", "dlc")


@dataclass(frozen=True)
class PosteriorPoses:
    """Posterior summaries of the 3D positions, (frame, keypoint, xyz) each."""

    mean: xr.DataArray
    sd: xr.DataArray
    q05: xr.DataArray
    q95: xr.DataArray


def load_fit(fit_dir) -> tuple[xr.DataTree, xr.Dataset]:
    """The trace and the dataset of a ``gimbal fit`` output folder."""
    from ..datasets import read_dataset_file

    fit_dir = Path(fit_dir)
    trace_path, data_path = fit_dir / "trace.nc", fit_dir / "dataset.nc"
    for p in (trace_path, data_path):
        if not p.is_file():
            raise FileNotFoundError(f"{fit_dir} is not a complete gimbal fit folder: {p.name} is missing "
                                    "(run `gimbal fit --out FOLDER` first).")
    with xr.open_datatree(trace_path, engine="h5netcdf") as tree:
        trace = tree.load()
    if "posterior" not in trace.children:  # windowed fits store the stitched posterior as a flat dataset
        trace = xr.DataTree.from_dict({"posterior": trace.to_dataset()})
    return trace, read_dataset_file(data_path)


def posterior_poses(trace: xr.DataTree) -> PosteriorPoses:
    """Mean, sd and 5%/95% quantiles of ``x`` over chains and draws."""
    if "posterior" not in trace or "x" not in trace["posterior"]:
        raise ValueError("the trace holds no posterior positions 'x' (a model with frozen positions cannot be exported).")
    x = trace["posterior"]["x"].astype("float64")
    stacked = x.stack(sample=("chain", "draw"))
    q = stacked.quantile([0.05, 0.95], dim="sample")
    return PosteriorPoses(stacked.mean("sample"), stacked.std("sample"), q.sel(quantile=0.05, drop=True),
                          q.sel(quantile=0.95, drop=True))


def reproject_raw(points: np.ndarray, dataset: xr.Dataset) -> np.ndarray:
    """(T, K, 3) world points into raw pixels of every camera: (T, C, K, 2), distortion included when known."""
    calib = calibration_from_dataset(dataset)
    if calib is None:
        return project(points, dataset["camera_matrix"].values)
    return np.stack([cam.project(points) for cam in calib.cameras], axis=1)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")


def to_movement(poses: PosteriorPoses, dataset: xr.Dataset, path, overwrite: bool = False) -> Path:
    """Write a ``movement`` poses dataset (netCDF) of the posterior mean, with sd and 90% interval."""
    from movement.io.load_poses import from_numpy

    path = Path(path)
    _refuse_existing(path, overwrite)
    individual = str(dataset.attrs.get("individual") or "id_0")
    mean = poses.mean.transpose("frame", "xyz", "keypoint").values[..., None]
    score = _mean_confidence(dataset)
    ds = from_numpy(mean, score[..., None], individual_names=[individual],
                    keypoint_names=[str(k) for k in dataset["keypoint"].values], fps=dataset.attrs.get("fps"),
                    source_software="gimbal")
    for name, arr in (("position_sd", poses.sd), ("position_q05", poses.q05), ("position_q95", poses.q95)):
        ds[name] = (("time", "space", "keypoint", "individual"), arr.transpose("frame", "xyz", "keypoint").values[..., None])
    ds = ds.assign_coords(frame_index=("time", dataset["frame"].values))
    ds.attrs.update(units=str(dataset.attrs.get("units", "")), description="gimbal posterior mean 3D poses; "
                    "position_sd / position_q05 / position_q95: posterior sd and 90% interval")
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return path


def _mean_confidence(dataset: xr.Dataset) -> np.ndarray:
    """(T, K) mean detector confidence over the cameras that saw each keypoint (NaN without confidences)."""
    if "confidence" not in dataset:
        return np.full((dataset.sizes["frame"], dataset.sizes["keypoint"]), np.nan)
    seen = np.isfinite(dataset["observations"].values).all(-1)
    conf = np.where(seen, dataset["confidence"].values, 0.0)
    n = seen.sum(axis=1)
    return np.where(n > 0, conf.sum(axis=1) / np.maximum(n, 1), np.nan)


def uncertainty_path(path) -> Path:
    """The sidecar file of an anipose CSV export: ``NAME.uncertainty.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.uncertainty.csv")


def to_anipose_csv(poses: PosteriorPoses, dataset: xr.Dataset, path, overwrite: bool = False) -> list[Path]:
    """Write an anipose-style 3D CSV of the posterior mean and its sidecar of sd and 90% intervals."""
    import pandas as pd

    path = Path(path)
    side = uncertainty_path(path)
    for p in (path, side):
        _refuse_existing(p, overwrite)
    mean = poses.mean.transpose("frame", "keypoint", "xyz").values
    raw = dataset["observations_raw"].values if "observations_raw" in dataset else dataset["observations"].values
    err = np.linalg.norm(reproject_raw(mean, dataset) - raw, axis=-1)  # (T, C, K), NaN where not detected
    seen = np.isfinite(err)
    mean_err = np.where(seen.any(1), np.where(seen, err, 0).sum(1) / np.maximum(seen.sum(1), 1), np.nan)
    score = _mean_confidence(dataset)
    spread = {name: getattr(poses, name).transpose("frame", "keypoint", "xyz").values for name in ("sd", "q05", "q95")}
    main, extra = {}, {"fnum": dataset["frame"].values}
    for k, kp in enumerate(str(n) for n in dataset["keypoint"].values):
        for a, axis in enumerate("xyz"):
            main[f"{kp}_{axis}"] = mean[:, k, a]
            for name, arr in spread.items():
                extra[f"{kp}_{axis}_{name}"] = arr[:, k, a]
        main[f"{kp}_error"] = mean_err[:, k]
        main[f"{kp}_ncams"] = seen[:, :, k].sum(1)
        main[f"{kp}_score"] = score[:, k]
    for i in range(3):
        main[f"center_{i}"] = np.zeros(mean.shape[0])
    for i in range(3):
        for j in range(3):
            main[f"M_{i}{j}"] = np.full(mean.shape[0], float(i == j))  # identity: world coordinates as fitted
    main["fnum"] = dataset["frame"].values
    for target, cols in ((path, main), (side, extra)):
        with atomic_path(target, suffix=".csv") as tmp:
            pd.DataFrame(cols).to_csv(tmp, index=False)
    return [path, side]


def to_dlc_files(poses: PosteriorPoses, dataset: xr.Dataset, folder, overwrite: bool = False,
                 suffix: str = ".h5") -> list[Path]:
    """Write the posterior mean reprojected into each camera (raw pixels) as DeepLabCut files, one per camera."""
    from movement.io.load_poses import from_numpy
    from movement.io.save_poses import to_dlc_style_df

    if suffix not in (".h5", ".csv"):
        raise ValueError(f"DeepLabCut files are .h5 or .csv, got {suffix!r}.")
    folder = Path(folder)
    cameras = [str(c) for c in dataset["camera"].values]
    targets = [folder / f"{cam}{suffix}" for cam in cameras]
    for t in targets:
        _refuse_existing(t, overwrite)
    proj = reproject_raw(poses.mean.transpose("frame", "keypoint", "xyz").values, dataset)  # (T, C, K, 2)
    individual = str(dataset.attrs.get("individual") or "id_0")
    folder.mkdir(parents=True, exist_ok=True)
    for c, target in enumerate(targets):
        xy = proj[:, c].transpose(0, 2, 1)[..., None]  # (T, 2, K, 1)
        like = np.isfinite(xy[:, 0, :, 0]).astype(float)[..., None]
        ds = from_numpy(xy, like, individual_names=[individual], keypoint_names=[str(k) for k in dataset["keypoint"].values],
                        source_software="gimbal")
        ds = ds.assign_coords(time=dataset["frame"].values)
        df = to_dlc_style_df(ds, split_individuals=True)[individual]  # a single-animal DeepLabCut table
        with atomic_path(target, suffix=suffix) as tmp:
            if suffix == ".csv":
                df.to_csv(tmp, sep=",")
            else:
                df.to_hdf(tmp, key="df_with_missing")  # DeepLabCut's key
    return targets


def export_fit(fit_dir, fmt: str, out, overwrite: bool = False) -> list[Path]:
    """Export a fit folder's posterior in ``fmt`` (one of :data:`FORMATS`) to ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}.")
    trace, dataset = load_fit(fit_dir)
    poses = posterior_poses(trace)
    if fmt == "movement":
        return [to_movement(poses, dataset, out, overwrite)]
    if fmt == "anipose":
        return to_anipose_csv(poses, dataset, out, overwrite)
    return to_dlc_files(poses, dataset, out, overwrite)
