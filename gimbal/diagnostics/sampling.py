"""Sampler-agnostic summaries of a NUTS run (nutpie or PyMC), from the trace alone.

nutpie and PyMC name their sample statistics differently (``depth`` vs
``tree_depth``, ``maxdepth_reached`` vs ``reached_max_treedepth``, ...), and
with nutpie PyMC prints no convergence warnings. :func:`normalize_sample_stats`
maps both onto one vocabulary once; every verdict is computed from it.
"""

from __future__ import annotations

import math

import arviz_stats as azs
import numpy as np
import xarray as xr

__all__ = ["normalize_sample_stats", "sampling_summary", "convergence_table", "STAT_ALIASES"]

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


_CHUNK_VALUES = 2**24  # values per R-hat/ESS call (128 MiB in float64); larger variables go in blocks


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


def convergence_table(trace, var_names=None, chunk_values: int = _CHUNK_VALUES) -> xr.Dataset:
    """R-hat (rank-normalized split), bulk and tail ESS for ``var_names`` (default: all).

    One number per variable: the worst element (max R-hat, min ESS). Large
    variables (e.g. every 3D position of a long recording) are processed in
    blocks of at most ``chunk_values`` values, so memory stays bounded by the
    trace itself plus one block's temporaries.
    """
    posterior = _group(trace, "posterior")
    names = list(var_names) if var_names else list(posterior.data_vars)
    worst = {"rhat": [], "ess_bulk": [], "ess_tail": []}
    for name in names:
        rhat, bulk, tail = [], [], []
        for block in _variable_blocks(posterior[name], chunk_values):
            ds = block.to_dataset(name=name)
            rhat.append(_extreme(azs.rhat(ds), name, np.nanmax))
            bulk.append(_extreme(azs.ess(ds, method="bulk"), name, np.nanmin))
            tail.append(_extreme(azs.ess(ds, method="tail"), name, np.nanmin))
        worst["rhat"].append(np.nanmax(rhat) if not np.all(np.isnan(rhat)) else np.nan)
        worst["ess_bulk"].append(np.nanmin(bulk) if not np.all(np.isnan(bulk)) else np.nan)
        worst["ess_tail"].append(np.nanmin(tail) if not np.all(np.isnan(tail)) else np.nan)
    return xr.Dataset({k: xr.DataArray(v, dims="var", coords={"var": names}) for k, v in worst.items()})


def _as_dataset(res):
    return res.to_dataset() if hasattr(res, "to_dataset") else res


def _extreme(res, name: str, reduce) -> float:
    """``reduce`` (NaN-aware) over every element of one variable's diagnostic."""
    values = np.asarray(_as_dataset(res)[name].values, dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        return np.nan
    return float(reduce(values))


def sampling_summary(
    trace,
    selected_vars=None,
    *,
    max_treedepth: int = 10,
    wall_time_s: float | None = None,
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

    Returns
    -------
    dict
        Divergences (count, fraction), step size, tree depth, gradient
        evaluations per draw, E-BFMI per chain, R-hat / ESS over the selected
        set and over everything (with the worst variable named), timing.
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
    table_all = convergence_table(trace)  # once; the selected set is a subset of it
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
    out["wall_time_s"] = wall_time_s
    if wall_time_s:
        out["draws_per_s"] = total / wall_time_s
        out["min_ess_bulk_per_s"] = out["min_ess_bulk_all"] / wall_time_s
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
