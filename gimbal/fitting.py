"""Sampling a built model and scoring the posterior against ground truth."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor
import xarray as xr

from .cameras import triangulate_robust

__all__ = ["SAMPLERS", "BACKENDS", "FitResult", "sample_model", "position_errors"]

SAMPLERS = ("nutpie", "pymc")
BACKENDS = ("numba", "jax")


def _check_jax_ready(model: pm.Model) -> None:
    """Fail early, with the fix, when the JAX backend cannot compile ``model``."""
    try:
        import jax  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "backend='jax' needs JAX: pip install 'gimbal[jax]' (CPU) or 'jax[cuda12]' (NVIDIA GPU)."
        ) from err
    from .kernels import FUSED_OPS

    ops = {type(node.op).__name__ for node in pytensor.graph.traversal.applys_between(model.value_vars, [model.logp()])
           if isinstance(node.op, FUSED_OPS)}
    if ops:
        raise ValueError(
            f"the model uses the fused numba kernels ({', '.join(sorted(ops))}), which JAX cannot compile; "
            "build it with build_model(..., kernels='graph') for backend='jax'."
        )


@dataclass
class FitResult:
    """A trace and how long it took to get it."""

    trace: xr.DataTree
    compile_s: float
    sample_s: float
    sampler: str


def sample_model(
    model: pm.Model,
    *,
    sampler: str = "nutpie",
    chains: int = 2,
    tune: int = 300,
    draws: int = 100,
    seed: int = 0,
    target_accept: float = 0.8,
    progress: bool = True,
    cores: int | None = None,
    adaptation: str = "diag",
    backend: str = "numba",
    jitter: bool = False,
    save_warmup: bool = True,
) -> FitResult:
    """Run NUTS from the model's initial point.

    Parameters
    ----------
    sampler : {"nutpie", "pymc"}
        nutpie (PyMC 6's default NUTS) or PyMC's own NUTS.
    adaptation : {"diag", "low_rank"}
        nutpie's mass-matrix adaptation.
    backend : {"numba", "jax"}
        nutpie's compilation backend. ``"jax"`` needs the ``jax`` extra and a model
        built with ``kernels="graph"`` (the fused kernels are numba code); on a
        machine with a GPU and ``jax[cuda12]`` installed, JAX runs there.
    jitter : bool
        Jitter the starting point of every chain. Off by default: GIMBAL models
        start from a robust triangulation, and jittering it moves keypoints into
        regions where the outlier component absorbs their detections. Generic
        models whose initial point has an exactly-zero gradient component need
        it (nutpie rejects such a start).
    save_warmup : bool
        Keep warm-up draws (``warmup_*`` groups, needed for step-size adaptation
        plots). Turn off for long runs: warm-up positions double the trace's memory.

    Returns
    -------
    FitResult
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    for name, value in (("chains", chains), ("tune", tune), ("draws", draws)):
        if int(value) < (0 if name == "tune" else 1):
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "jax":
        _check_jax_ready(model)
    cores = cores or min(chains, 2)
    t0 = time.perf_counter()
    if sampler == "nutpie":
        import nutpie

        gradient_backend = "jax" if backend == "jax" else "pytensor"
        compiled = nutpie.compile_pymc_model(
            model, backend=backend, gradient_backend=gradient_backend, jitter_rvs=None if jitter else set()
        )
        t1 = time.perf_counter()
        trace = nutpie.sample(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=seed,
            target_accept=target_accept,
            progress_bar=progress,
            adaptation=adaptation,
            save_warmup=save_warmup,
        )
    else:
        with model:
            t1 = time.perf_counter()  # PyMC compiles lazily inside pm.sample
            trace = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                random_seed=seed,
                nuts_sampler="pymc",
                init="jitter+adapt_diag" if jitter else "adapt_diag",
                target_accept=target_accept,
                progressbar=progress,
                discard_tuned_samples=not save_warmup,
                compute_convergence_checks=False,
            )
    t2 = time.perf_counter()
    return FitResult(trace=trace, compile_s=t1 - t0, sample_s=t2 - t1, sampler=sampler)


def _error_stats(err: np.ndarray) -> dict:
    err = err[np.isfinite(err)]
    if err.size == 0:
        return {"mean": None, "median": None, "p90": None}
    return {"mean": float(err.mean()), "median": float(np.median(err)), "p90": float(np.percentile(err, 90))}


def position_errors(trace, dataset: xr.Dataset, threshold_px: float = 20.0) -> dict | None:
    """3D error of the posterior mean and of robust triangulation against ground truth.

    Uses ``positions_true`` (or ``positions_reference`` for real data with a
    reference reconstruction). Returns ``None`` when the dataset has neither.
    """
    ref_name = "positions_true" if "positions_true" in dataset else "positions_reference"
    if ref_name not in dataset:
        return None
    truth = dataset[ref_name].values
    obs = np.moveaxis(dataset["observations"].values, 1, 2)
    tri = triangulate_robust(obs, dataset["camera_matrix"].values, threshold_px=threshold_px)
    out = {"reference": ref_name, "units": dataset.attrs.get("units", ""), "triangulation": _error_stats(np.linalg.norm(tri - truth, axis=-1))}
    posterior = trace["posterior"]
    if "x" in posterior:
        mean = posterior["x"].mean(("chain", "draw")).values
        err = np.linalg.norm(mean - truth, axis=-1)
        out["posterior_mean"] = _error_stats(err)
        out["posterior_mean_per_keypoint"] = {
            str(k): float(np.nanmean(err[:, i])) for i, k in enumerate(dataset["keypoint"].values)
        }
        tri_med, post_med = out["triangulation"]["median"], out["posterior_mean"]["median"]
        out["ratio_median_posterior_to_triangulation"] = (post_med / tri_med) if tri_med else None
    return out


def save_trace(trace: xr.DataTree, path, overwrite: bool = False, float32_vars: tuple[str, ...] = ()) -> Path:
    """Write a trace as netCDF (h5netcdf) atomically.

    Object-dtype arrays (e.g. nutpie's divergence messages, string coordinates)
    are stored as fixed-width strings. Variables named in ``float32_vars`` are
    down-cast (3D positions need no float64 precision on disk: halves the size).
    """
    from ._atomic import atomic_path

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or --overwrite) to replace it.")

    def clean(ds: xr.Dataset) -> xr.Dataset:
        ds = ds.copy()
        for name in list(ds.variables):
            var = ds[name]
            if var.dtype == object:
                ds[name] = var.astype(str)
            elif name in float32_vars and var.dtype == np.float64:
                ds[name] = var.astype(np.float32)
        return ds

    tree = xr.DataTree.from_dict({node.path: clean(node.to_dataset()) for node in trace.subtree if node.has_data})
    with atomic_path(path, suffix=".nc") as tmp:
        tree.to_netcdf(tmp, engine="h5netcdf")
    return path
