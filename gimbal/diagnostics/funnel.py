"""Is a divergence a funnel? A scale variable whose low values squeeze another variable's spread.

In a centered hierarchy (``theta ~ Normal(mu, tau)``) the spread of ``theta`` shrinks with ``tau``: the
posterior narrows into a funnel's neck, where one step size cannot fit and NUTS diverges (Neal 2003;
Betancourt & Girolami 2015). Two signs together identify it from a trace alone: across draws, the log of the
spread of ``theta``'s elements rises with ``tau`` (or ``log tau`` for a positive scale), and the divergent
draws sit at the low end of ``tau``. Either alone is not enough: a non-centered ``theta = mu + tau * z`` keeps
the correlation in its deterministic ``theta`` but has no divergences at low ``tau``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .sampling import _group, normalize_sample_stats

__all__ = ["Funnel", "funnel_check", "MIN_CORRELATION", "MAX_Z", "MIN_DIVERGENT"]

MIN_CORRELATION = 0.5  # corr(scale, log spread) across draws
MAX_Z = -0.5  # divergent draws at least this many sds below the mean of the scale
MIN_DIVERGENT = 1  # with the model's free variables as candidates, one divergent draw at the neck is evidence


@dataclass(frozen=True)
class Funnel:
    """One scale/variable pair whose geometry is a funnel."""

    scale: str  # the scalar variable whose low values narrow the posterior (tau)
    variable: str  # the variable whose spread it sets (theta)
    correlation: float  # across draws: corr(log scale, log spread of the variable's elements)
    z_divergent: float  # divergent draws' mean of the (log) scale, in sds from the other draws'
    log_scale: bool  # the scale is positive and was read on the log scale

    def to_json(self) -> dict:
        return asdict(self)


def _per_draw(da) -> np.ndarray:
    values = np.asarray(da.transpose("chain", "draw", ...).values, dtype=float)
    return values.reshape(values.shape[0] * values.shape[1], -1)


def funnel_check(trace, var_names=None, scales=None) -> list[Funnel]:
    """Funnels among the posterior's variables, most pronounced first (empty without enough divergences).

    Parameters
    ----------
    trace : xarray.DataTree
        A NUTS trace with a ``diverging`` statistic.
    var_names : list of str, optional
        The candidates (the model's free variables, when known: a deterministic non-centered ``theta`` keeps
        the correlation with its scale without being a funnel). Default: every posterior variable.
    scales : list of str, optional
        Without divergences: the scale candidates that mix badly (R-hat or ESS flagged). A funnel that NUTS
        adapted to without diverging still shows as its scale mixing slowly; then ``z_divergent`` is NaN.
    """
    post = _group(trace, "posterior")
    div = normalize_sample_stats(trace)["diverging"].transpose("chain", "draw").values.astype(bool).ravel()
    mixing = scales is not None
    if (div.sum() < MIN_DIVERGENT and not mixing) or div.all():
        return []
    names = [n for n in (var_names or list(post.data_vars)) if n in post.data_vars]
    flat = {n: _per_draw(post[n]) for n in names if np.issubdtype(post[n].dtype, np.number)}
    candidates, spreads = {}, {}
    for name, v in flat.items():
        if v.shape[1] == 1:
            x = v[:, 0]
            positive = bool((x > 0).all())
            candidates[name] = (np.log(x) if positive else x, positive)
        elif v.shape[1] >= 2:
            sd = v.std(axis=1)
            if (sd > 0).all():
                spreads[name] = np.log(sd)
    found = []
    for s, (x, positive) in candidates.items():
        if x.std() == 0 or (mixing and s not in scales):
            continue
        z = float((x[div].mean() - x[~div].mean()) / x.std()) if div.any() else float("nan")
        if not mixing and z > MAX_Z:
            continue
        for v, spread in spreads.items():
            r = float(np.corrcoef(x, spread)[0, 1])
            if r >= MIN_CORRELATION:
                found.append(Funnel(s, v, r, z, positive))
    return sorted(found, key=lambda f: f.correlation * (1.0 if mixing else -f.z_divergent), reverse=True)
