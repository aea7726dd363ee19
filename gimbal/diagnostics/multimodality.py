"""Chains in different modes vs divergences: label switching and stuck chains.

Divergences mark draws where the integrator failed. Chains can also each
behave perfectly yet sit in different modes (R-hat explodes, no divergence);
with exchangeable states the modes may be mere relabelings (label switching).
These need different fixes, so they are told apart here.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from .sampling import _group

__all__ = ["chain_disagreement", "multimodality_check"]

_CHUNK_VALUES = 2**24  # values per block (128 MiB in float64) when scanning large variables


def chain_disagreement(values: np.ndarray) -> np.ndarray:
    """Spread of chain means in units of the mean within-chain sd, per element.

    ``values`` has shape ``(chain, draw, ...)``, any float dtype (float32 positions
    are not copied whole; each block is computed in float64); returns ``(...)``.
    """
    n_chains, n_draws = values.shape[:2]
    flat = values.reshape(n_chains, n_draws, -1)
    means = flat.mean(axis=1, dtype=np.float64)
    within = np.empty(flat.shape[2])
    step = max(1, _CHUNK_VALUES // max(1, n_chains * n_draws))
    for start in range(0, flat.shape[2], step):  # blocks: np.std makes a temporary the size of its input
        block = flat[:, :, start : start + step].astype(np.float64, copy=False)
        within[start : start + step] = block.std(axis=1).mean(axis=0)
    means, within = means.reshape((n_chains, *values.shape[2:])), within.reshape(values.shape[2:])
    spread = means.max(axis=0) - means.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(within > 0, spread / within, np.where(spread > 0, np.inf, 0.0))


def _permute(values: np.ndarray, perm, axes) -> np.ndarray:
    for ax in axes:
        values = np.take(values, perm, axis=ax)
    return values


def _best_permutation_disagreement(values: np.ndarray, axes: list[int]) -> float:
    """Max disagreement after relabelling the state ``axes`` of every chain to match chain 0.

    ``values`` is ``(chain, draw, ...)``; ``axes`` index the per-chain arrays
    ``(draw, ...)`` and are all permuted together (e.g. a transition matrix's rows and columns).
    """
    n_chains, S = values.shape[0], values.shape[1 + axes[0]]
    if S > 6:  # permutations explode; not worth it for a diagnostic
        return float("nan")
    aligned = [values[0]]
    ref = values[0].mean(axis=0)
    for c in range(1, n_chains):
        best, best_cost = None, np.inf
        for perm in permutations(range(S)):
            cand = _permute(values[c], perm, axes)
            cost = float(np.sum((cand.mean(axis=0) - ref) ** 2))
            if cost < best_cost:
                best, best_cost = cand, cost
        aligned.append(best)
    return float(np.nanmax(chain_disagreement(np.stack(aligned))))


def multimodality_check(trace, threshold: float = 3.0, state_dim: str = "state", top: int = 10) -> dict:
    """Do chains disagree beyond their own spread, and is that a relabelling of states?

    Parameters
    ----------
    trace : xarray.DataTree
    threshold : float
        Chain means further apart than ``threshold`` within-chain sds flag an element.
    state_dim : str
        Name of the dimension of exchangeable states (for label-switching detection).

    Returns
    -------
    dict
        ``verdict`` is ``"single_chain"``, ``"ok"``, ``"label_switching"`` (disagreement
        vanishes once state labels are permuted) or ``"chains_in_different_modes"``;
        plus the flagged elements and the fraction of flagged elements per variable.
    """
    post = _group(trace, "posterior")
    if post.sizes["chain"] < 2:
        return {"verdict": "single_chain", "flagged": [], "per_variable": {}}
    flagged, per_var, switching = [], {}, {}
    for name, da in post.data_vars.items():
        vals = np.asarray(da.transpose("chain", "draw", ...).values)
        if not np.issubdtype(vals.dtype, np.floating):  # floats as they are: float32 positions stay float32
            vals = vals.astype(np.float64)
        score = np.atleast_1d(chain_disagreement(vals))
        bad = score > threshold
        per_var[name] = {"max_disagreement": float(np.nanmax(score)) if score.size else 0.0, "fraction_flagged": float(bad.mean()) if score.size else 0.0}
        for idx in np.argwhere(bad)[:top]:
            flagged.append({"name": name if da.ndim == 2 else f"{name}[{', '.join(map(str, idx))}]", "disagreement": float(score[tuple(idx)])})
        dims = list(da.transpose("chain", "draw", ...).dims)
        state_axes = [i - 1 for i, d in enumerate(dims) if d.startswith(state_dim)]
        if bad.any() and state_axes:
            switching[name] = _best_permutation_disagreement(vals, state_axes)
    flagged.sort(key=lambda f: -f["disagreement"])
    if not flagged:
        verdict = "ok"
    elif switching and all(np.isfinite(v) and v <= threshold for v in switching.values()) and all(
        per_var[n]["fraction_flagged"] == 0 or n in switching for n in per_var
    ):
        verdict = "label_switching"
    else:
        verdict = "chains_in_different_modes"
    return {
        "verdict": verdict,
        "threshold": threshold,
        "n_flagged": len(flagged),
        "flagged": flagged[:top],
        "per_variable": per_var,
        "after_relabelling": switching,
    }
