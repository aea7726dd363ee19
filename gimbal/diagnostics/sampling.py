"""Sampler-agnostic summaries of a NUTS run (nutpie or PyMC), from the trace alone.

nutpie and PyMC name their sample statistics differently (``depth`` vs
``tree_depth``, ``maxdepth_reached`` vs ``reached_max_treedepth``, ...), and
with nutpie PyMC prints no convergence warnings. :func:`normalize_sample_stats`
maps both onto one vocabulary once; every verdict is computed from it.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import arviz_stats as azs
import numpy as np
import xarray as xr
from arviz_stats.validate import validate_ci_prob

__all__ = ["normalize_sample_stats", "sampling_summary", "convergence_table", "element_draws", "depth_cap_text",
           "DEPTH_CAP_SHARE", "STAT_ALIASES"]

# canonical name -> names used by nutpie / PyMC NUTS (PyMC's cumulative "divergences" is never used)
STAT_ALIASES = {
    "diverging": ("diverging",),
    "tree_depth": ("depth", "tree_depth"),
    "max_depth_reached": ("maxdepth_reached", "reached_max_treedepth"),
    "step_size": ("step_size",),
    "n_steps": ("n_steps",),
    "energy": ("energy",),
    "acceptance": ("mean_tree_accept", "acceptance_rate"),
    "lp": ("logp", "lp"),
}


def _group(trace, name):
    try:
        node = trace[name]
    except KeyError:
        return None
    return node.to_dataset() if hasattr(node, "to_dataset") else node


def normalize_sample_stats(trace, group: str = "sample_stats") -> xr.Dataset:
    """The sample statistics of ``trace`` under canonical names (missing ones are absent)."""
    stats = _group(trace, group)
    if stats is None:
        raise ValueError(f"the trace has no '{group}' group; was it produced by a NUTS sampler?")
    out = {}
    for canonical, aliases in STAT_ALIASES.items():
        for alias in aliases:
            if alias in stats:
                out[canonical] = stats[alias]
                break
    return xr.Dataset(out)


_CHUNK_VALUES = 2**22  # values per R-hat/ESS block (32 MiB in float64); each worker thread holds one block's temporaries


def _variable_blocks(da: xr.DataArray, chunk_values: int):
    """``da`` in blocks along its first non-sample dimension, each at most ``chunk_values`` values."""
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    if da.size <= chunk_values or not extra:
        yield da
        return
    per_index = da.size // da.sizes[extra[0]]
    step = max(1, chunk_values // per_index)
    for start in range(0, da.sizes[extra[0]], step):
        yield da.isel({extra[0]: slice(start, start + step)})


def _vectorized():
    """arviz_stats' vectorized (numba) diagnostics, imported on first use: the import compiles
    numba code (about 1 s), which every ``import gimbal.diagnostics`` would otherwise pay."""
    from arviz_stats.numba import diagnostics

    return diagnostics


def without_numbagg():
    """Context in which xarray does not route reductions through numbagg (when it is installed).

    numbagg's kernels are compiled afresh in every process (its numba cache is off by default), which costs about
    11 s before the first R-hat of each diagnostic group; xarray's numpy/bottleneck paths give the same numbers.
    """
    return xr.set_options(use_numbagg=False)


def _tail_ess(da: xr.DataArray) -> np.ndarray:
    """ArviZ's tail ESS (``arviz_stats.ess(method="tail")``), vectorized over elements.

    ArviZ defines it as the smaller of the mean-ESS of the indicators
    ``x <= q(p)`` and ``x <= q(1 - p)``, with ``p`` its default credible-interval
    probability; the indicators go through arviz_stats' vectorized mean-ESS.
    """
    prob = validate_ci_prob(None)
    worst = np.full(da.sizes["element"], np.inf)
    for p in sorted((prob, 1.0 - prob)):
        q = da.quantile(p, dim=("chain", "draw"), method="linear").drop_vars("quantile")
        indicator = (da <= q).astype(float)
        varying = (indicator.max(("chain", "draw")) > indicator.min(("chain", "draw"))).values
        # a constant indicator (discrete values) counts as independent draws, as in ArviZ
        ess = np.full(da.sizes["element"], float(da.sizes["chain"] * da.sizes["draw"]))
        if varying.any():
            ess[varying] = _vectorized().ess(indicator.isel(element=varying), method="mean").values
        worst = np.fmin(worst, ess)
    return worst


def _rhat_and_bulk_ess(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """arviz_stats' vectorized rank-normalized R-hat (NaN for one chain, as in ArviZ) and bulk ESS of each element.

    Both start from the same rank normalization of the split chains (the costly part: a rank and a normal
    quantile per draw), which arviz_stats' ``rhat`` and ``ess(method="bulk")`` would each compute; here it is
    computed once and passed to the library's own R-hat and ESS steps. Where those steps are not found (another
    arviz_stats version) the two public functions run instead.
    """
    vec = _vectorized()
    single = da.sizes["chain"] < 2
    try:
        split = vec._split_chains(da)
        z = vec._z_scale(split)
        bulk = vec._ess(z).values
        if single:
            return np.full(da.sizes["element"], np.nan), bulk
        r_bulk, r_tail = vec._rhat(z), vec._rhat(vec._z_fold(split))
        return xr.where(r_bulk > r_tail, r_bulk, r_tail).values, bulk
    except AttributeError:
        rhat = np.full(da.sizes["element"], np.nan) if single else vec.rhat(da).values
        return rhat, vec.ess(da, method="bulk").values


def _block_extremes(block: xr.DataArray) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """Max R-hat, min bulk ESS and min tail ESS over the elements of one block, then every bulk ESS and every R-hat
    in the block's element order.

    ArviZ's default functions loop over elements in Python and hold the GIL;
    arviz_stats' vectorized (numba) diagnostics compute the same numbers at
    about the same single-thread cost inside numpy/scipy/numba kernels that
    release it, so blocks run in parallel threads. They do not handle constant
    or non-finite elements, which go through ArviZ's default functions
    instead (same definitions either way).
    """
    values = np.asarray(block.transpose("chain", "draw", ...).values, dtype=float)
    values = values.reshape(values.shape[0], values.shape[1], -1)
    finite = np.isfinite(values).all(axis=(0, 1))
    spread = np.where(finite, np.ptp(values, axis=(0, 1)), 0.0)
    regular = finite & (spread > np.finfo(float).resolution)
    rhat, bulk, tail = [], [], []
    if regular.any() and values.shape[1] >= 4:
        da = xr.DataArray(values[:, :, regular], dims=("chain", "draw", "element"))
        block_rhat, block_bulk = _rhat_and_bulk_ess(da)
        rhat.append(block_rhat)
        bulk.append(block_bulk)
        tail.append(_tail_ess(da))
    else:
        regular[:] = False
    if not regular.all():
        ds = xr.Dataset({"z": (("chain", "draw", "element"), values[:, :, ~regular])})
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant element's NaN is the answer, not a fault
            rhat.append(np.asarray(azs.rhat(ds)["z"].values, dtype=float))
            bulk.append(np.asarray(azs.ess(ds, method="bulk")["z"].values, dtype=float))
            tail.append(np.asarray(azs.ess(ds, method="tail")["z"].values, dtype=float))

    def every(parts):  # the regular elements' values, then the others', back in element order
        out, parts = np.empty(values.shape[2]), iter(parts)
        if regular.any():
            out[regular] = np.ravel(next(parts))
        if not regular.all():
            out[~regular] = np.ravel(next(parts))
        return out

    def extreme(parts, reduce):
        values = np.concatenate([np.ravel(p) for p in parts]) if parts else np.array([])
        return float(reduce(values)) if values.size and not np.all(np.isnan(values)) else np.nan

    return extreme(rhat, np.nanmax), extreme(bulk, np.nanmin), extreme(tail, np.nanmin), every(bulk), every(rhat)


def element_draws(draws: xr.DataArray, flat) -> np.ndarray:
    """The draws of some elements of a variable, ``(chain, draw, element)`` in float64.

    ``flat`` indexes the elements in C order over ``draws``' dimensions other than ``chain`` and ``draw``; only those
    elements' draws are read (also from a lazy store), whatever the size of the variable.
    """
    others = [d for d in draws.dims if d not in ("chain", "draw")]
    if not others:  # a scalar variable: its one element, as often as asked
        flat = np.asarray(flat, dtype=int)
        if flat.size and flat.max() > 0:
            raise IndexError(f"a scalar variable has one element; asked for element {int(flat.max())}.")
        return np.repeat(np.asarray(draws.transpose("chain", "draw").values, dtype=float)[:, :, None], flat.size, 2)
    at = np.unravel_index(np.asarray(flat, dtype=int), [draws.sizes[d] for d in others])
    picked = draws.isel({d: xr.DataArray(i, dims="element") for d, i in zip(others, at)})
    return np.asarray(picked.transpose("chain", "draw", "element").values, dtype=float)


def convergence_table(
    trace, var_names=None, chunk_values: int = _CHUNK_VALUES, workers: int | None = None, keep=()
) -> xr.Dataset:
    """R-hat (rank-normalized split), bulk and tail ESS for ``var_names`` (default: all).

    One number per variable: the worst element (max R-hat, min ESS), with
    ArviZ's definitions. Large variables (e.g. every 3D position of a long
    recording) are processed in blocks of at most ``chunk_values`` values, in
    ``workers`` threads (default: one per CPU), so memory stays bounded by the
    trace itself plus one block's temporaries per thread. Blocks of a trace
    stored on disk are read as they are processed.

    Parameters
    ----------
    trace : xarray.DataTree or dict-like
        Must have a ``posterior`` group with ``chain`` and ``draw`` dimensions.
    var_names : list of str, optional
        Variables to summarize; default every posterior variable.
    chunk_values : int
        Largest block, in values.
    workers : int, optional
        Threads; default ``os.cpu_count()``.
    keep : sequence of str
        Variables whose R-hat and bulk ESS of every element are returned too (computed in the same pass), as
        ``rhat_<name>`` and ``ess_bulk_<name>`` on the variable's own dimensions; for per-element readings of
        large variables (:func:`gimbal.diagnostics.chance.rhat_exceedances`) without a second pass.

    Returns
    -------
    xarray.Dataset
        Along a ``var`` dimension: ``rhat``, ``ess_bulk`` and ``ess_tail`` (the
        worst element), ``ess_bulk_median`` (the typical element) and
        ``n_elements``; together with :func:`gimbal.diagnostics.chance.chance_max_rhat` they say whether a
        maximum R-hat is more than the chance maximum over that many elements.
        Plus ``rhat_<name>`` and ``ess_bulk_<name>`` for each variable in ``keep``.
    """
    posterior = _group(trace, "posterior")
    names = list(var_names) if var_names else list(posterior.data_vars)
    missing = sorted(set(keep) - set(names))
    if missing:
        raise ValueError(f"keep names {missing}, which the table does not cover ({names}).")
    jobs = [(name, block) for name in names for block in _variable_blocks(posterior[name], chunk_values)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    with without_numbagg():
        if workers == 1:
            results = [_block_extremes(block) for _, block in jobs]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda job: _block_extremes(job[1]), jobs))
    worst = {"rhat": [], "ess_bulk": [], "ess_tail": [], "ess_bulk_median": [], "n_elements": []}
    for name in names:
        mine = [r for (n, _), r in zip(jobs, results) if n == name]
        extremes = np.array([r[:3] for r in mine], dtype=float).reshape(-1, 3)
        for column, (key, reduce) in enumerate((("rhat", np.nanmax), ("ess_bulk", np.nanmin), ("ess_tail", np.nanmin))):
            col = extremes[:, column]
            worst[key].append(float(reduce(col)) if col.size and not np.all(np.isnan(col)) else np.nan)
        every_bulk = np.concatenate([r[3] for r in mine]) if mine else np.array([])
        ok = every_bulk[~np.isnan(every_bulk)]
        worst["ess_bulk_median"].append(float(np.median(ok)) if ok.size else np.nan)
        worst["n_elements"].append(int(posterior[name].size // (posterior.sizes["chain"] * posterior.sizes["draw"])))
    table = xr.Dataset({k: xr.DataArray(v, dims="var", coords={"var": names}) for k, v in worst.items()})
    for name in keep:  # the blocks split the first non-sample dimension, in order
        like = posterior[name].isel(chain=0, draw=0, drop=True)
        for key, column in (("rhat", 4), ("ess_bulk", 3)):
            every = np.concatenate([r[column] for (n, _), r in zip(jobs, results) if n == name])
            table[f"{key}_{name}"] = like.copy(data=every.reshape(like.shape))
    return table


DEPTH_CAP_SHARE = 0.5
"""Share of draws at the tree-depth cap from which :func:`depth_cap_text` names the cap as a cause of slow mixing."""


def depth_cap_text(summary: dict, max_treedepth: int, *, rhat_bound: float = 1.01, ess_bound: float = 400.0) -> str:
    """A sentence naming the tree-depth cap where it cut most trajectories short and the run is not converged, else ''.

    A draw at the cap stopped before its trajectory turned back, so the chain may move less per draw than NUTS would
    have it move: ESS per draw falls and R-hat stays high along the directions that need long trajectories. Where at
    least :data:`DEPTH_CAP_SHARE` of the draws hit the cap and the worst R-hat is above ``rhat_bound`` or the
    smallest bulk ESS below ``ess_bound``, one more level of depth (about twice the gradients per draw at most) is
    the first thing to try. A draw flagged at the cap may have been one doubling from its U-turn: nutpie flags every
    draw that completed the last allowed doubling without turning. If the run at the next cap ends its draws at the
    old cap's depth (the extra doubling turns within itself and is discarded), the trajectories, and so the mixing,
    are the same as before, at the extra doubling's cost.

    Parameters
    ----------
    summary : dict
        From :func:`sampling_summary` (``max_treedepth_fraction``, ``max_rhat_all``, ``min_ess_bulk_all``).
    max_treedepth : int
        The cap the run had.
    rhat_bound, ess_bound : float
        What counts as converged.

    Returns
    -------
    str
        One sentence (share at the cap, the cap, what the next cap allows), or '' where the cap is not the suspect.
    """
    share = summary.get("max_treedepth_fraction")
    rhat, ess = summary.get("max_rhat_all"), summary.get("min_ess_bulk_all")
    unconverged = (rhat is not None and rhat > rhat_bound) or (ess is not None and ess < ess_bound)
    if share is None or not share >= DEPTH_CAP_SHARE or not unconverged:
        return ""
    shown = ", ".join(f"{name} {format(v, spec)}" for name, v, spec in (("max R-hat", rhat, ".3f"),
                                                                          ("min bulk ESS", ess, ".0f")) if v is not None)
    now, next_ = 2**max_treedepth - 1, 2 ** (max_treedepth + 1) - 1
    return (f"{100 * share:.0f}% of the draws stopped at the tree-depth cap ({max_treedepth}: at most {now} "
            f"gradient{'s' if now > 1 else ''} per draw), before their trajectories turned back, and the run is not "
            f"converged ({shown}): a cap of {max_treedepth + 1} allows up to {next_} per draw, and longer trajectories "
            f"mix faster. Where the draws then still end at depth {max_treedepth}, they were about to turn back (the "
            "next doubling turns) and the cap was not what held mixing back.")


def _as_dataset(res):
    return res.to_dataset() if hasattr(res, "to_dataset") else res


def sampling_summary(
    trace,
    selected_vars=None,
    *,
    max_treedepth: int = 10,
    wall_time_s: float | None = None,
    table: xr.Dataset | None = None,
) -> dict:
    """Headline numbers of a NUTS run, identical for nutpie and PyMC traces.

    Parameters
    ----------
    trace : xarray.DataTree
        From ``pm.sample`` or ``nutpie.sample``.
    selected_vars : list of str, optional
        A handful of variables for the "selected" R-hat/ESS (the seed's small set);
        the "all" numbers always cover every posterior variable.
    max_treedepth : int
        The sampler's depth limit, used when the trace does not flag it itself.
    wall_time_s : float, optional
        Sampling wall time, for draws/s and ESS/s.
    table : xarray.Dataset, optional
        :func:`convergence_table` of every posterior variable of ``trace``, when already computed (e.g. with
        ``keep`` for a per-element reading); by default it is computed here.

    Returns
    -------
    dict
        Divergences (count, fraction), step size, tree depth, gradient
        evaluations per draw, E-BFMI per chain, R-hat / ESS over the selected
        set and over everything (with the worst variable named), the same per
        variable (``per_variable``, with the median bulk ESS and the number of
        elements), timing.
    """
    stats = normalize_sample_stats(trace)
    posterior = _group(trace, "posterior")
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    total = n_chains * n_draws
    div = stats["diverging"].values.astype(bool) if "diverging" in stats else np.zeros((n_chains, n_draws), bool)
    if "max_depth_reached" in stats:
        at_max = stats["max_depth_reached"].values.astype(bool)
    elif "tree_depth" in stats:
        at_max = stats["tree_depth"].values >= max_treedepth
    else:
        at_max = np.zeros_like(div)
    try:
        bfmi = np.atleast_1d(np.asarray(_as_dataset(azs.bfmi(trace))["energy"].values, dtype=float)).tolist()
    except Exception:  # energy missing (e.g. non-NUTS sampler)
        bfmi = []
    out = {
        "sampler_stats_available": sorted(stats.data_vars),
        "chains": int(n_chains),
        "draws_per_chain": int(n_draws),
        "total_draws": int(total),
        "divergences": int(div.sum()),
        "divergence_fraction": float(div.mean()) if total else float("nan"),
        "divergences_per_chain": div.sum(axis=1).astype(int).tolist(),
        "mean_step_size": float(stats["step_size"].mean()) if "step_size" in stats else float("nan"),
        "max_treedepth_fraction": float(at_max.mean()) if total else float("nan"),
        "mean_tree_depth": float(stats["tree_depth"].mean()) if "tree_depth" in stats else float("nan"),
        "mean_grad_evals_per_draw": float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan"),
        "mean_acceptance": float(stats["acceptance"].mean()) if "acceptance" in stats else float("nan"),
        "ebfmi_per_chain": bfmi,
        "min_ebfmi": float(min(bfmi)) if bfmi else float("nan"),
    }
    table_all = convergence_table(trace) if table is None else table  # once; the selected set is a subset of it
    missing = sorted(set(posterior.data_vars) - set(table_all["var"].values))
    if missing:
        raise ValueError(f"the convergence table given does not cover {missing}; pass one of every posterior variable.")
    for label, names in (("selected", selected_vars), ("all", None)):
        if label == "selected" and not names:
            continue
        names = [n for n in names if n in posterior] if names else list(table_all["var"].values)
        table = table_all.sel(var=names)
        rhat = table["rhat"].to_series().dropna()
        ess_b = table["ess_bulk"].to_series().dropna()
        ess_t = table["ess_tail"].to_series().dropna()
        out[f"max_rhat_{label}"] = float(rhat.max()) if len(rhat) else float("nan")
        out[f"max_rhat_{label}_var"] = str(rhat.idxmax()) if len(rhat) else None
        out[f"min_ess_bulk_{label}"] = float(ess_b.min()) if len(ess_b) else float("nan")
        out[f"min_ess_bulk_{label}_var"] = str(ess_b.idxmin()) if len(ess_b) else None
        out[f"min_ess_tail_{label}"] = float(ess_t.min()) if len(ess_t) else float("nan")
    # per variable, for reading a maximum R-hat against chance_max_rhat(chains, draws, n_elements, ESS / draws)
    columns = [key for key, column in table_all.data_vars.items() if column.dims == ("var",)]  # not kept R-hats
    out["per_variable"] = {
        str(name): {key: (None if np.isnan(v := float(table_all[key].sel(var=name))) else
                          int(v) if key == "n_elements" else v) for key in columns}
        for name in table_all["var"].values
    }
    out["wall_time_s"] = wall_time_s
    if wall_time_s:
        out["draws_per_s"] = total / wall_time_s
        out["min_ess_bulk_per_s"] = out["min_ess_bulk_all"] / wall_time_s
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
