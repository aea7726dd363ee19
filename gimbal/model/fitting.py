"""Sampling a built model and scoring the posterior against ground truth."""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pymc as pm
import pytensor
import xarray as xr

from ..settings import BACKENDS, SAMPLERS
from .cameras import triangulate_robust

if TYPE_CHECKING:
    from .pooling import PooledStart

__all__ = ["SAMPLERS", "BACKENDS", "FitResult", "SamplerFailed", "backend_model_options", "compile_nutpie", "jax_device", "sample_model", "read_back", "latent_names",
           "position_errors"]

JAX_INSTALL_HINT = "pip install 'gimbal[jax]' (CPU) or a CUDA build such as 'jax[cuda12]' (NVIDIA GPU)"


def _check_jax_ready(model: pm.Model) -> None:
    """Fail early, with the fix, when the JAX backend cannot compile ``model``."""
    try:
        import jax  # noqa: F401
    except ImportError as err:
        raise ImportError(f"backend='jax' needs JAX: {JAX_INSTALL_HINT}.") from err
    from .kernels import FUSED_OPS
    from .whitening import BidiagonalSolve

    ops = {type(node.op).__name__ for node in pytensor.graph.traversal.applys_between(model.value_vars, [model.logp()])
           if isinstance(node.op, (*FUSED_OPS, BidiagonalSolve))}
    if ops:
        raise ValueError(
            f"the model uses numba-only Ops ({', '.join(sorted(ops))}), which JAX cannot compile; build it with "
            "build_model(..., kernels='graph', whitened_tracks='none') for backend='jax' (backend_model_options('jax'))."
        )


def compile_nutpie(model: pm.Model, backend: str = "numba", jitter: bool = True, initial_points: dict | None = None):
    """nutpie's compiled model: logp and gradient by numba, or by JAX on JAX's default device.

    Parameters
    ----------
    model : pymc.Model
    backend : {"numba", "jax"}
        ``"jax"`` needs JAX and a model built with ``kernels="graph"`` (checked
        first, with the fix in the error). JAX uses a GPU where a CUDA build is installed.
    jitter : bool
        Jitter the initial points of the chains.
    initial_points : dict, optional
        Start values (constrained) that replace the model's initial values.

    Returns
    -------
    nutpie's compiled model
        ``CompiledPyMCModel`` (numba) or ``PyFuncModel`` (JAX), as ``nutpie.sample`` takes it.
    """
    import nutpie

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "jax":
        _check_jax_ready(model)
    gradient_backend = "jax" if backend == "jax" else "pytensor"
    return nutpie.compile_pymc_model(model, backend=backend, gradient_backend=gradient_backend,
                                     jitter_rvs=None if jitter else set(), initial_points=initial_points)


def compiling_text(backend: str = "numba") -> str:
    """What a fit prints before nutpie compiles the model: where PyTensor keeps the numba kernels it compiles (the
    ``numba`` folder of its ``base_compiledir``), and that a machine's first run compiles them. On a 2-core machine
    the seed's model at T=80 compiled in 69.5 s with that folder empty and in 21 s with it filled; most of the 21 s
    is nutpie's wrapper around the model, which numba cannot cache."""
    if backend == "jax":
        return "compiling the model for JAX ..."
    from pytensor.link.numba.cache import NUMBA_CACHE_PATH  # PyTensor's own answer, not re-derived here

    return (f"compiling the model (numba; kernels are kept in {NUMBA_CACHE_PATH}: the first run on a machine "
            "compiles them, which takes minutes, later runs reuse them) ...")


def backend_model_options(backend: str) -> dict:
    """``build_model`` options a backend needs: JAX compiles the plain graph, with the tree-form HMM for GPUs and the
    positions sampled as they are (the whitened tracks' solve is numba code).

    Returns ``{}`` for numba (the fused kernels). Options given explicitly should be merged over these.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    return {"kernels": "graph", "hmm_algorithm": "parallel", "whitened_tracks": "none"} if backend == "jax" else {}


def jax_device() -> str | None:
    """JAX's default device, e.g. ``"gpu: NVIDIA H200"`` or ``"cpu: cpu"``; None without JAX."""
    try:
        import jax
    except ImportError:
        return None
    dev = jax.devices()[0]
    return f"{dev.platform}: {getattr(dev, 'device_kind', dev.platform)}"


def latent_names(model: pm.Model) -> list[str]:
    """Names of the model's free random variables: the latents whose R-hat and ESS must pass.

    Deterministics (``log_obs_t``, ``state_mean``) are functions of these and are left out.
    """
    return [rv.name for rv in model.free_RVs]


@dataclass
class FitResult:
    """A trace and how long it took to get it."""

    trace: xr.DataTree
    compile_s: float
    sample_s: float
    sampler: str
    compiled: object | None = None  # nutpie's compiled model (benchmarks time its gradient); None for PyMC's NUTS
    read_back_s: float = 0.0  # reading the draws back from ``trace_dir``
    pooled: PooledStart | None = None  # what the pooled warm-up compared and took; None where it did not run


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
    maxdepth: int = 10,
    backend: str = "numba",
    jitter: bool = False,
    save_warmup: bool = True,
    trace_dir: str | Path | None = None,
    float32_vars: tuple[str, ...] = (),
    moves=None,
    pooled_warmup: bool = True,
) -> FitResult:
    """Run NUTS from the model's initial point.

    Parameters
    ----------
    sampler : {"nutpie", "pymc"}
        nutpie (PyMC 6's default NUTS) or PyMC's own NUTS.
    adaptation : {"diag", "low_rank"}
        nutpie's mass-matrix adaptation.
    cores : int, optional
        Chains run at the same time; default ``min(chains, os.cpu_count())``.
    maxdepth : int
        Largest NUTS tree depth: at most ``2**maxdepth - 1`` gradients per draw.
        The default 10 lets trajectories run to their U-turn. The step size
        shrinks with the number of parameters (about ``d**-0.25``), so on long
        recordings most trajectories need depth 6 (63 gradients); a cap of 5
        bounds the cost at 31 gradients per draw (``benchmarks``, the seed's rodent
        at T=1800: 70% of draws at the cap with ``target_accept=0.8``, none with 0.7,
        whose larger step lets trajectories U-turn by depth 5; the realistic rodent's
        model at T=1800, with 0.7: every draw at the cap, step size 0.09). Capped
        draws are still exact MCMC; they show up as max-depth hits in the diagnostics.
    backend : {"numba", "jax"}
        nutpie's compilation backend. ``"jax"`` needs the ``jax`` extra and a model
        built with ``kernels="graph"`` (the fused kernels are numba code; add
        ``hmm_algorithm="parallel"`` for a GPU); on a machine with a GPU and a CUDA
        build of JAX installed, JAX runs there.
    jitter : bool
        Jitter the starting point of every chain. Off by default: GIMBAL models
        start from a robust triangulation, and jittering it moves keypoints into
        regions where the outlier component absorbs their detections. Generic
        models whose initial point has an exactly-zero gradient component need
        it (nutpie rejects such a start).
    save_warmup : bool
        Keep warm-up draws (``warmup_*`` groups, needed for step-size adaptation
        plots). Turn off for long runs: warm-up positions double the converted trace.
    trace_dir : path, optional
        nutpie only: write every draw to a zarr store in this new (or empty) folder
        while sampling, and return a trace that reads from it lazily. Without it
        nutpie holds every draw in memory in float64, warm-up included, whatever
        ``save_warmup`` says (18 keypoints x 1800 frames x 8000 draws: 6.2 GB of
        positions, about 13 GB at peak once converted). With it, the draws are
        read back one chain at a time into an in-memory trace once sampling ends
        (warm-up groups only with ``save_warmup``), so memory stays at the size of
        what is kept; the store stays on disk in float64.
    float32_vars : tuple of str
        With ``trace_dir``: posterior variables held in float32 once read back
        (GIMBAL's 3D positions ``("x",)``: half the memory; R-hat and ESS are
        rank-based and unaffected at millimetre resolution).
    moves : list of ExplanationBlock, optional
        ``sampler="pymc"`` only: after every NUTS transition, try Metropolis moves between each keypoint's
        explanations (:mod:`gimbal.model.moves`; candidates from
        :func:`gimbal.model.moves.explanation_blocks`). nutpie runs NUTS alone and cannot host them. Every chain
        starts at the model's initial point (no ``jitter``).
    pooled_warmup : bool
        nutpie, a GIMBAL model with free positions, at least two chains and ``tune >= 2 *
        gimbal.model.pooling.MIN_STAGE_TUNE``: warm up in two stages and start the second from the chains' best
        explanations (:mod:`gimbal.model.pooling`; ``FitResult.pooled`` says what was taken). The stages' warm-up adds
        up to ``tune``; the returned warm-up groups hold the second stage's. The second stage samples with a seed of
        its own (:func:`gimbal.model.pooling.second_stage_seed`). Elsewhere it does nothing.

    Returns
    -------
    FitResult
    """
    from ..settings import SamplerSettings

    SamplerSettings(chains=int(chains), tune=int(tune), draws=int(draws), sampler=sampler, target_accept=target_accept,
                    maxdepth=int(maxdepth), adaptation=adaptation, backend=backend, seed=int(seed),
                    pooled_warmup=pooled_warmup)  # the one validation
    if backend == "jax":
        _check_jax_ready(model)
    if moves is not None and sampler != "pymc":
        raise ValueError("moves run inside PyMC's compound sampler: use them with sampler='pymc' (nutpie runs NUTS "
                         "alone).")
    if moves is not None and jitter:
        raise ValueError("jitter=True with moves: the compound sampler starts every chain at the model's initial point "
                         "(the robust triangulation); drop jitter, or sample without moves to jitter the start.")
    if trace_dir is not None:
        if sampler != "nutpie":
            raise ValueError("trace_dir needs sampler='nutpie' (PyMC's NUTS keeps its trace in memory).")
        trace_dir = Path(trace_dir)
        if trace_dir.exists() and any(trace_dir.iterdir()):
            raise FileExistsError(f"trace_dir {trace_dir} is not empty; give a new or empty folder (nothing there is overwritten).")
    cores = cores or min(chains, os.cpu_count() or 1)
    t0 = time.perf_counter()
    compiled = pooled = None
    if sampler == "nutpie":
        import nutpie

        from . import pooling

        if progress:
            print(compiling_text(backend), flush=True)
        compiled = compile_nutpie(model, backend=backend, jitter=jitter)
        t1 = time.perf_counter()
        if progress:
            print(f"compiled in {t1 - t0:.0f} s", flush=True)
        plan = pooling.plan(model, sampler=sampler, tune=tune, chains=chains, enabled=pooled_warmup)
        nuts = dict(chains=chains, cores=cores, seed=seed, target_accept=target_accept, progress_bar=progress,
                    adaptation=adaptation, maxdepth=int(maxdepth))
        if plan is not None:
            try:
                stage, chain_logp = _first_stage(compiled, plan, nuts, trace_dir)
            except Exception as err:
                raise _explain_sampler_failure(model, err) from err
            pooled = pooling.pooled_start(model, stage, chain_logp)
            if progress:
                print(pooled.text(), flush=True)
            compiled = _starting_at(compiled, model, pooled, backend=backend, jitter=jitter)
            tune, nuts = plan[2], {**nuts, "seed": pooling.second_stage_seed(seed)}
        store = None
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)
            store = nutpie.zarr_store.LocalStore(str(trace_dir.resolve()))
        try:
            trace = nutpie.sample(
                compiled,
                draws=draws,
                tune=tune,
                save_warmup=save_warmup,
                zarr_store=store,
                **nuts,
            )
        except Exception as err:  # nutpie reports a refused start as a Rust error with a backtrace
            raise _explain_sampler_failure(model, err) from err
    else:
        with model, _one_blas_thread():
            t1 = time.perf_counter()  # PyMC compiles lazily inside pm.sample
            step = None if moves is None else _nuts_with_moves(model, moves, target_accept, maxdepth, seed)
            # NUTS's settings go to pm.sample when it builds the sampler, into the step when we do
            nuts_kwargs = {"nuts": {"max_treedepth": int(maxdepth)}, "target_accept": target_accept} if step is None else {}
            trace = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                random_seed=seed,
                nuts_sampler="pymc",
                step=step,
                init="jitter+adapt_diag" if jitter else "adapt_diag",
                progressbar=progress,
                discard_tuned_samples=not save_warmup,
                compute_convergence_checks=False,
                **nuts_kwargs,
            )
    t2 = time.perf_counter()
    if trace_dir is not None:
        trace = read_back(trace, float32_vars=float32_vars, keep_warmup=save_warmup)
    return FitResult(trace=trace, compile_s=t1 - t0, sample_s=t2 - t1, sampler=sampler, compiled=compiled,
                     read_back_s=time.perf_counter() - t2, pooled=pooled)


def _starting_at(compiled, model: pm.Model, pooled: PooledStart, backend: str, jitter: bool):
    """``compiled`` with every chain starting at the pooled start.

    nutpie's numba model takes its start from ``initial_point_func``: a flat array of the value variables in the order
    of ``model.free_RVs``. That layout is checked against the compiled model's own start; where it differs (another
    nutpie, the JAX backend, a jittered start) the model is compiled again with the start as its initial values.
    """
    import dataclasses

    def flat(values: dict) -> np.ndarray:
        return np.concatenate([np.asarray(values[model.rvs_to_values[rv].name], dtype=float).ravel()
                               for rv in model.free_RVs])

    own = getattr(compiled, "initial_point_func", None)
    if not jitter and dataclasses.is_dataclass(compiled) and own is not None:
        same = flat(model.initial_point())
        if np.array_equal(np.asarray(own(0), dtype=float), same):
            start = flat(pooled.values)
            return dataclasses.replace(compiled, initial_point_func=lambda seed: start.copy())
    return compile_nutpie(model, backend=backend, jitter=jitter, initial_points=pooled.point)


def _first_stage(compiled, plan: tuple[int, int, int], nuts: dict,
                 trace_dir: Path | None) -> tuple[xr.Dataset, np.ndarray]:
    """The pooled warm-up's first stage: ``plan`` = (warm-up, window, second stage's warm-up) draws. Returns the
    window's draws (in memory) and each chain's mean log density over them.

    With ``trace_dir`` (a long run) its draws go to a zarr store in a temporary folder beside ``trace_dir``, removed
    once the window is read, so memory holds only the window.
    """
    import nutpie

    def window_of(trace):
        post = trace.posterior.to_dataset()
        post = post[[v for v in post.data_vars if "unconstrained_parameter" not in post[v].dims]].load()
        return post, trace.sample_stats["logp"].mean("draw").values

    tune, window, _ = plan
    if trace_dir is None:
        return window_of(nutpie.sample(compiled, draws=window, tune=tune, save_warmup=False, **nuts))
    trace_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gimbal-first-stage-", dir=trace_dir.parent,
                                     ignore_cleanup_errors=True) as folder:
        lazy = nutpie.sample(compiled, draws=window, tune=tune, save_warmup=False,
                             zarr_store=nutpie.zarr_store.LocalStore(str(Path(folder).resolve())), **nuts)
        stage = window_of(lazy)
        lazy.close()
    return stage


@contextmanager
def _one_blas_thread():
    """One BLAS thread while PyMC samples, in this process and in the chains' worker processes.

    NumPy and SciPy each bundle their own OpenBLAS; PyMC's leapfrog step calls both, and on a small machine each
    library's idle threads spin while the other's work: on 2 cores a leapfrog step of a 16,000-parameter model took
    12x longer (0.26 s against 3.1 s per NUTS transition, rodent18_realistic T=300). Its vectors are far too short
    to gain from threads.
    """
    from threadpoolctl import threadpool_limits

    saved = {name: os.environ.get(name) for name in _BLAS_THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _BLAS_THREAD_VARIABLES})  # read by the worker processes at start
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _nuts_with_moves(model: pm.Model, moves, target_accept: float, maxdepth: int, seed: int) -> list:
    """PyMC's NUTS over every variable (started as ``init="adapt_diag"`` starts it) and the explanation moves."""
    from pymc.blocking import DictToArrayBijection
    from pymc.step_methods.hmc import quadpotential

    from .moves import ExplanationMoves

    start = model.initial_point(random_seed=seed)
    mean = DictToArrayBijection.map({v.name: start[v.name] for v in model.value_vars}).data
    potential = quadpotential.QuadPotentialDiagAdapt(mean.size, mean, np.ones_like(mean), 10)
    nuts = pm.NUTS(vars=model.value_vars, target_accept=target_accept, max_treedepth=int(maxdepth), potential=potential)
    return [nuts, ExplanationMoves(blocks=list(moves), model=model)]


class SamplerFailed(RuntimeError):
    """The sampler stopped; the message names the cause in words (never a raw backtrace)."""


def _explain_sampler_failure(model: pm.Model, err: BaseException) -> Exception:
    """Translate a sampler error: run the start gate (naming non-finite terms or zero gradients), else one line."""
    from .initialization import InitializationError, check_initial_point

    try:
        check_initial_point(model)
    except InitializationError as gate:
        return gate
    except Exception:  # the gate itself could not run: fall through to the sampler's own words
        pass
    text = str(err).strip().splitlines()
    first = next((line for line in text if line.strip() and "backtrace" not in line.lower()), type(err).__name__)
    return SamplerFailed(f"the sampler stopped: {first.strip()[:300]} (the start point passes the checks of logp and "
                         "gradient; rerun with progress to see where it stopped).")


def read_back(lazy: xr.DataTree, float32_vars: tuple[str, ...] = (), keep_warmup: bool = False) -> xr.DataTree:
    """An in-memory copy of a trace that nutpie wrote to a zarr store, read one chain at a time.

    Parameters
    ----------
    lazy : xarray.DataTree
        What ``nutpie.sample(..., zarr_store=...)`` returns (lazily backed by the store).
    float32_vars : tuple of str
        Variables cast to float32 while they are read (peak memory: one chain in float64).
    keep_warmup : bool
        Also read the ``warmup_*`` groups.

    Returns
    -------
    xarray.DataTree
        ``lazy`` is closed. Left out: PyMC's transformed copies of constrained
        variables (names ending in ``__``) and nutpie's per-parameter statistics
        (dimension ``unconstrained_parameter``: gradients, unconstrained draws),
        which its store declares even when they were not requested.
    """
    groups = {}
    for node in lazy.subtree:
        if not node.has_data or (node.name.startswith("warmup") and not keep_warmup):
            continue
        ds = node.to_dataset()
        data = {}
        for name, da in ds.data_vars.items():
            if str(name).endswith("__") or "unconstrained_parameter" in da.dims:
                continue
            if name in float32_vars and "chain" in da.dims:
                data[name] = xr.concat([da.isel(chain=[c]).astype(np.float32).load() for c in range(da.sizes["chain"])],
                                       dim="chain")
            else:
                data[name] = da.load()
        groups[node.path] = xr.Dataset(data, attrs=ds.attrs)
    lazy.close()
    return xr.DataTree.from_dict(groups)


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
    from .._atomic import atomic_path

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
