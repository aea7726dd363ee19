"""Where do divergent draws sit? Divergent vs non-divergent draws, per variable and per dimension.

For every posterior element the standardized difference
``z = (mean over divergent draws - mean over the others) / sd over all draws``
says how far the divergent draws are displaced. Aggregated over a named
dimension (``frame``, ``keypoint``, ...) it gives a profile: for a time-series
model, which frames and which keypoints the divergences concentrate on.
For a hierarchical model it points at the funnel's neck (e.g. small ``tau``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .sampling import _group, normalize_sample_stats

__all__ = ["divergence_localization", "standardized_displacement"]


def standardized_displacement(posterior: xr.Dataset, diverging: xr.DataArray) -> xr.Dataset:
    """``z`` per element of every variable: divergent mean minus non-divergent mean, in posterior sds."""
    stacked = posterior.stack(sample=("chain", "draw"))
    mask = diverging.stack(sample=("chain", "draw")).values.astype(bool)
    out = {}
    for name, da in stacked.data_vars.items():
        if not np.issubdtype(da.dtype, np.number):
            continue
        values = da.transpose(..., "sample").values.astype(float)
        sd = values.std(axis=-1)
        diff = values[..., mask].mean(axis=-1) - values[..., ~mask].mean(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, diff / sd, 0.0)
        out[name] = xr.DataArray(z, dims=[d for d in da.dims if d != "sample"], coords={d: da[d] for d in da.dims if d != "sample" and d in da.coords})
    return xr.Dataset(out)


def divergence_localization(trace, top: int = 10, profile_dims=("frame", "keypoint")) -> dict:
    """Summarize where the divergent draws concentrate.

    Parameters
    ----------
    trace : xarray.DataTree
        A NUTS trace with a ``diverging`` statistic (nutpie or PyMC).
    top : int
        How many variables/elements to list.
    profile_dims : tuple of str
        Dimensions along which to build profiles (mean ``|z|`` over everything else).

    Returns
    -------
    dict
        ``n_divergent``; ``variables``: each variable's max ``|z|`` and the signed
        ``z`` of its most displaced element, worst first; ``elements``: the most
        displaced individual elements; ``profiles``: per dimension, the mean ``|z|``
        for every coordinate (e.g. a per-frame curve) and its peak.
        Empty lists when there are no divergences (nothing to localize) or when
        every draw diverged (nothing to compare against).
    """
    stats = normalize_sample_stats(trace)
    diverging = stats["diverging"].astype(bool)
    n_div, n_all = int(diverging.sum()), int(diverging.size)
    result = {"n_divergent": n_div, "n_draws": n_all, "variables": [], "elements": [], "profiles": {}}
    if n_div == 0 or n_div == n_all:
        result["note"] = "no divergent draws" if n_div == 0 else "every draw diverged: no non-divergent draws to compare"
        return result
    z = standardized_displacement(_group(trace, "posterior"), diverging)
    variables, elements = [], []
    for name, da in z.data_vars.items():
        absz = np.abs(da.values)
        if absz.size == 0:
            continue
        flat = int(np.nanargmax(absz))
        idx = np.unravel_index(flat, absz.shape) if absz.ndim else ()
        variables.append({"name": name, "max_abs_z": float(absz.flat[flat]), "z": float(da.values.flat[flat]), "index": [int(i) for i in idx]})
        order = np.argsort(-absz, axis=None)[:top]
        for o in order:
            i = np.unravel_index(o, absz.shape) if absz.ndim else ()
            label = name if not i else f"{name}[{', '.join(str(da[d].values[j]) if d in da.coords else str(j) for d, j in zip(da.dims, i))}]"
            elements.append({"name": label, "z": float(da.values.flat[o])})
    result["variables"] = sorted(variables, key=lambda v: -v["max_abs_z"])[:top]
    result["elements"] = sorted(elements, key=lambda e: -abs(e["z"]))[:top]
    for dim in profile_dims:
        parts = [np.abs(da).mean([d for d in da.dims if d != dim]) for da in z.data_vars.values() if dim in da.dims]
        if not parts:
            continue
        prof = xr.concat(parts, dim="_var").mean("_var")
        coords = prof[dim].values.tolist() if dim in prof.coords else list(range(prof.sizes[dim]))
        peak = int(np.nanargmax(prof.values))
        result["profiles"][dim] = {
            "coords": [c if isinstance(c, (int, float, str)) else str(c) for c in coords],
            "mean_abs_z": prof.values.astype(float).tolist(),
            "peak": coords[peak],
            "peak_value": float(prof.values[peak]),
        }
    return result
