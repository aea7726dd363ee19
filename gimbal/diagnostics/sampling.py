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

__all__ = ["normalize_sample_stats", "sampling_summary", "convergence_table", "chance_max_rhat", "STAT_ALIASES"]

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


def chance_max_rhat(
    n_chains: int,
    n_draws: int,
    n_elements: int,
    *,
    ess_fraction: float = 1.0,
    seed: int = 0,
    chunk_values: int = _CHUNK_VALUES,
) -> float:
    """The largest R-hat that perfectly converged chains reach by chance over many elements.

    R-hat of a single element fluctuates around 1 with a spread that shrinks
    with the effective sample size; the maximum over ``n_elements`` of them
    grows with ``n_elements``. This simulates stationary Gaussian AR(1) chains
    (every chain from the same distribution, so the true R-hat is exactly 1)
    with the lag-1 correlation that gives ``ess_fraction`` = ESS / draws, and
    returns the worst rank-normalized split R-hat (``arviz_stats.rhat``) over
    ``n_elements`` of them: the reference to read a measured maximum against.

    Parameters
    ----------
    n_chains, n_draws : int
        As in the trace being judged.
    n_elements : int
        How many scalar latents the maximum is taken over.
    ess_fraction : float
        Bulk ESS per draw of the simulated chains, in (0, 4]. Above 1 the chains
        are antithetic (negative lag-1 correlation), as NUTS draws often are.
    seed : int
        Seed of the simulation.
    chunk_values : int
        Values simulated per block (memory bound).

    Returns
    -------
    float
    """
    if not 0 < ess_fraction <= 4:
        raise ValueError(f"ess_fraction must be in (0, 4], got {ess_fraction}.")
    if min(n_chains, n_draws, n_elements) < 1 or n_draws < 4:
        raise ValueError("n_chains and n_elements must be >= 1 and n_draws >= 4.")
    rng = np.random.default_rng(seed)
    per_block = max(1, chunk_values // (n_chains * n_draws))
    worst = -np.inf
    for start in range(0, n_elements, per_block):
        chains = _stationary_ar1(rng, n_chains, n_draws, min(per_block, n_elements - start), ess_fraction)
        ds = xr.Dataset({"z": (("chain", "draw", "element"), chains)})
        worst = max(worst, _extreme(azs.rhat(ds), "z", np.nanmax))
    return float(worst)


def _stationary_ar1(rng, n_chains: int, n_draws: int, n_elements: int, ess_fraction: float) -> np.ndarray:
    """Standard-normal AR(1) chains ``(chain, draw, element)`` with ESS / draws = ``ess_fraction``."""
    rho = (1.0 - ess_fraction) / (1.0 + ess_fraction)  # AR(1): ESS / N = (1 - rho) / (1 + rho)
    chains = np.empty((n_chains, n_draws, n_elements))
    chains[:, 0] = rng.standard_normal((n_chains, n_elements))  # the stationary distribution: no warm-up needed
    innovation_sd = np.sqrt(1.0 - rho**2)
    for i in range(1, n_draws):
        chains[:, i] = rho * chains[:, i - 1] + innovation_sd * rng.standard_normal((n_chains, n_elements))
    return chains


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
