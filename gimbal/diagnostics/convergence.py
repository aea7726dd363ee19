"""Where chains fail to converge, and how: per-element R-hat/ESS on the model's dims, and a named pattern.

Divergence localization (:mod:`.localization`) says where the integrator broke. Real models more often fail
without a single divergence: chains disagree at a few elements. This module maps rank-normalized split
R-hat (ArviZ's: the larger of bulk and folded) and bulk/tail ESS of every element back onto the variable's
own dims, ranks the worst elements, and names each one's pattern from its chains' means and spreads:

* ``separate_modes`` - chains agree within themselves but sit apart (means differ by more than
  :data:`MODE_SEPARATION` pooled within-chain sds);
* ``switching_chains`` - within-chain spreads differ by more than :data:`SPREAD_RATIO`: some chains hop
  between explanations while others stay in one;
* ``slow_mixing`` - chains agree in mean and spread, but the ESS is low: one mode, explored slowly;
* ``within_chance`` - the element's R-hat is one that exactly converged chains mixing as fast (its own within-chain
  ESS) show by chance among that many elements (:func:`.chance.element_chance`, probability at least
  :data:`.chance.NEAR_LEVEL` after Bonferroni): more draws, or a higher ESS per draw, lower it.

Chains that differ only by a relabelling (label switching) are told apart per variable by
:func:`.multimodality.multimodality_check`. Nothing here knows the model: a caller turns patterns into advice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from .chance import NEAR_LEVEL, RhatExceedances, element_chance, summarize_exceedances
from .sampling import _group, _vectorized, without_numbagg

__all__ = ["ElementDiagnosis", "VariableConvergence", "PATTERNS", "MODE_SEPARATION", "SPREAD_RATIO",
           "element_diagnostics", "classify_element", "convergence_localization", "localize_flagged",
           "StrandedChains", "stranded_chains", "STRANDED_GAP", "ChainRegions", "RegionDifference", "chain_regions",
           "REGION_SEPARATION", "GLOBAL_SIZE"]

PATTERNS = ("separate_modes", "switching_chains", "slow_mixing", "within_chance")
MODE_SEPARATION = 3.0  # chain means this many pooled within-chain sds apart: separate modes
SPREAD_RATIO = 2.0  # largest / smallest within-chain sd above this: some chains switch, others stay
STRANDED_GAP = 3.0  # a chain's mean log density this many pooled within-chain sds below the highest chain's
# two chains are in different regions when some global element's means lie this many pooled within-chain sds apart:
# higher than MODE_SEPARATION because the largest of many elements' chance differences (slow chains, few effective
# draws) reaches 2-3 sds
REGION_SEPARATION = 5.0
GLOBAL_SIZE = 1000  # variables with at most this many elements per draw are the globals compared by chain_regions


@dataclass(frozen=True)
class StrandedChains:
    """Chains whose log density stays below the others' for the whole run (:func:`stranded_chains`)."""

    chains: list  # indices of the stranded chains
    mean_lp: list  # every chain's mean log density over its kept draws
    sd_lp: list  # every chain's within-chain sd of the log density
    gap_sd: list  # every chain's distance below the highest chain's mean, in pooled within-chain sds

    def text(self) -> str:
        """What it means and what to do, in a few sentences."""
        best = int(np.argmax(self.mean_lp))
        parts = [f"chain {c} (mean log density {self.mean_lp[best] - self.mean_lp[c]:.4g} below chain {best}'s, "
                 f"{self.gap_sd[c]:.1f} within-chain sds)" for c in self.chains]
        one = len(parts) == 1
        return ("; ".join(parts) + (" keeps" if one else " keep") + " a lower log density than the other chains for "
                "the whole run: " + ("it" if one else "they") + " settled during warm-up in another region (a local "
                "mode) and did not leave it, so every variable that differs between the regions looks unconverged. "
                "Compare the chains' means of the global variables. A lower log density throughout suggests a minor "
                "mode, but density is not mass: re-run with another seed rather than dropping the chain, and report "
                "both regions if it recurs.")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ElementDiagnosis:
    """One flagged element: where it is, how bad, and how its chains behave."""

    index: dict  # dim name -> coordinate value
    rhat: float
    ess_bulk: float
    ess_tail: float
    chain_means: list
    chain_sds: list
    pattern: str
    p_chance: float | None = None  # chance of an R-hat this high among the variable's elements at its own ESS


@dataclass
class VariableConvergence:
    """Per-element diagnostics of one variable and its worst elements."""

    variable: str
    rhat: xr.DataArray  # the variable's own dims
    ess_bulk: xr.DataArray
    ess_tail: xr.DataArray
    worst: list[ElementDiagnosis]
    n_flagged: int
    rhat_threshold: float
    p_chance: xr.DataArray | None = None  # per element above the threshold: ElementDiagnosis.p_chance; NaN elsewhere
    exceedances: RhatExceedances | None = None  # the variable's elements above the threshold against chance
    patterns: dict = field(default_factory=dict)  # pattern -> count among the worst elements

    @property
    def pattern(self) -> str | None:
        """The variable's dominant pattern (most frequent among its worst elements), None when nothing is flagged."""
        return max(self.patterns, key=self.patterns.get) if self.patterns else None

    def where(self, top: int = 5) -> dict:
        """Coordinates of the worst elements, per dim (e.g. which frames and keypoints)."""
        out = {}
        for e in self.worst[:top]:
            for dim, value in e.index.items():
                out.setdefault(dim, [])
                if value not in out[dim]:
                    out[dim].append(value)
        return out

    def beyond_chance(self) -> xr.DataArray:
        """Elements above the threshold whose R-hat is not read as chance (all of them where chance was not read)."""
        above = self.rhat > self.rhat_threshold
        if self.p_chance is None:
            return above
        return above & ~(self.p_chance >= NEAR_LEVEL)

    def to_json(self) -> dict:
        return {"variable": self.variable, "dims": list(self.rhat.dims), "n_elements": int(self.rhat.size),
                "n_flagged": self.n_flagged, "rhat_threshold": self.rhat_threshold,
                "exceedances": self.exceedances.as_dict() if self.exceedances else None,
                "max_rhat": _finite_max(self.rhat.values), "min_ess_bulk": _finite_min(self.ess_bulk.values),
                "pattern": self.pattern, "patterns": dict(self.patterns), "where": self.where(),
                "worst": [asdict(e) for e in self.worst]}


def _finite_max(a):
    a = np.asarray(a, float)
    return float(np.nanmax(a)) if np.isfinite(a).any() else None


def _finite_min(a):
    a = np.asarray(a, float)
    return float(np.nanmin(a)) if np.isfinite(a).any() else None


BLOCK_VALUES = 2**22  # values (32 MiB in float64) per block: long recordings are never copied whole


def element_diagnostics(values: np.ndarray, block_values: int = BLOCK_VALUES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat, bulk ESS and tail ESS of every element of ``values`` (chain, draw, n), in element order.

    ArviZ's definitions (arviz_stats' vectorized functions; constant or non-finite elements get NaN). Elements
    are processed in blocks of at most ``block_values`` values, each converted to float64 on its own.
    """
    n = values.shape[2]
    step = max(1, block_values // max(1, values.shape[0] * values.shape[1]))
    if n > step:
        parts = [_element_block(values[:, :, i : i + step]) for i in range(0, n, step)]
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
    return _element_block(values)


def _element_block(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .sampling import _tail_ess

    values = np.asarray(values, dtype=float)
    n = values.shape[2]
    rhat, bulk, tail = (np.full(n, np.nan) for _ in range(3))
    finite = np.isfinite(values).all(axis=(0, 1))
    regular = finite & (np.ptp(np.where(finite, values, 0.0), axis=(0, 1)) > np.finfo(float).resolution)
    if regular.any() and values.shape[1] >= 4:
        da = xr.DataArray(values[:, :, regular], dims=("chain", "draw", "element"))
        with without_numbagg():
            if values.shape[0] > 1:
                rhat[regular] = _vectorized().rhat(da).values
            bulk[regular] = _vectorized().ess(da, method="bulk").values
            tail[regular] = _tail_ess(da)
    return rhat, bulk, tail


def classify_element(chain_means, chain_sds, p_chance: float | None = None) -> str:
    """The pattern of one element from its chains' means and sds and, when given, the chance of its R-hat among the
    variable's elements (``within_chance`` from :data:`.chance.NEAR_LEVEL` up; see the module docstring)."""
    sds = np.asarray(chain_sds, float)
    means = np.asarray(chain_means, float)
    if p_chance is not None and np.isfinite(p_chance) and p_chance >= NEAR_LEVEL:
        return "within_chance"
    smallest = max(float(sds.min()), 1e-300)
    if sds.max() / smallest > SPREAD_RATIO:
        return "switching_chains"
    pooled = float(np.sqrt(np.mean(sds**2)))
    if pooled > 0 and (means.max() - means.min()) > MODE_SEPARATION * pooled:
        return "separate_modes"
    return "slow_mixing"


def _index_of(da: xr.DataArray, flat: int) -> dict:
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    shape = [da.sizes[d] for d in dims]
    idx = np.unravel_index(flat, shape) if shape else ()
    out = {}
    for d, i in zip(dims, idx):
        coord = da[d].values[i] if d in da.coords else i
        out[d] = coord.item() if hasattr(coord, "item") else coord
    return out


def convergence_localization(trace, var_names=None, *, top: int = 20, rhat_threshold: float = 1.01,
                             chance: bool = True, max_elements: int = 2_000_000
                             ) -> dict[str, VariableConvergence]:
    """Per-element R-hat/ESS of each variable on its own dims, and its worst elements with their pattern.

    Parameters
    ----------
    trace : xarray.DataTree
        With a ``posterior`` group of at least two chains.
    var_names : list of str, optional
        Default: every posterior variable.
    top : int
        Worst elements kept per variable (by R-hat, then lowest bulk ESS).
    rhat_threshold : float
        Elements above it are flagged.
    chance : bool
        Read each flagged element's R-hat against chance at its own within-chain ESS
        (:func:`.chance.element_chance`): elements whose R-hat that many exactly converged elements show with
        probability at least :data:`.chance.NEAR_LEVEL` are ``within_chance``, and the variable gets its
        :class:`~.chance.RhatExceedances`.
    max_elements : int
        Variables larger than this are skipped (their per-element arrays would not fit a report).
    """
    post = _group(trace, "posterior")
    if post is None:
        raise ValueError("the trace has no posterior group.")
    names = list(var_names or post.data_vars)
    out = {}
    for name in names:
        da = post[name]
        if da.sizes.get("chain", 1) < 2 or da.size // max(1, da.sizes["chain"] * da.sizes["draw"]) > max_elements:
            continue
        dims = [d for d in da.dims if d not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *dims).values  # its own dtype (float32 positions stay float32)
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        rhat, bulk, tail = element_diagnostics(flat)
        shape = values.shape[2:]
        coords = {d: da[d] for d in dims if d in da.coords}
        as_da = lambda a: xr.DataArray(a.reshape(shape), dims=dims, coords=coords)  # noqa: E731
        flagged = np.flatnonzero(np.nan_to_num(rhat, nan=-np.inf) > rhat_threshold)
        p_chance, exceedances = np.full(rhat.size, np.nan), None
        if chance and flagged.size:
            found = element_chance(da, rhat, bulk, bound=rhat_threshold)
            exceedances = summarize_exceedances(found, rhat, rhat_threshold)
            p_chance = np.where(found.unjudged, np.nan, found.p_among())
        order = flagged[np.lexsort((np.nan_to_num(bulk[flagged], nan=np.inf), -rhat[flagged]))][:top]
        worst = []
        for i in order:
            means = flat[:, :, i].mean(axis=1, dtype=np.float64)
            sds = flat[:, :, i].astype(np.float64).std(axis=1)
            p = None if np.isnan(p_chance[i]) else float(p_chance[i])
            worst.append(ElementDiagnosis(_index_of(da, int(i)), float(rhat[i]), float(bulk[i]), float(tail[i]),
                                          [float(m) for m in means], [float(s) for s in sds],
                                          classify_element(means, sds, p), p))
        patterns = {}
        for e in worst:
            patterns[e.pattern] = patterns.get(e.pattern, 0) + 1
        out[name] = VariableConvergence(name, as_da(rhat), as_da(bulk), as_da(tail), worst, int(flagged.size),
                                        rhat_threshold, as_da(p_chance) if chance else None, exceedances,
                                        patterns)
    return out


def localize_flagged(trace, summary: dict, rhat_threshold: float = 1.01) -> dict:
    """:func:`convergence_localization` of every variable whose max R-hat in ``summary`` (from
    :func:`~gimbal.diagnostics.sampling.sampling_summary`) is over ``rhat_threshold``, each element read against
    chance at its own within-chain ESS (chains that barely move there are not read as chance)."""
    flagged = [v for v, row in (summary.get("per_variable") or {}).items() if (row.get("rhat") or 0.0) > rhat_threshold]
    return convergence_localization(trace, flagged, rhat_threshold=rhat_threshold)


def stranded_chains(trace, gap: float = STRANDED_GAP) -> StrandedChains | None:
    """Chains whose mean log density lies more than ``gap`` pooled within-chain sds below the highest chain's.

    A chain that ends warm-up in another mode of lower density keeps a lower log density for the whole run, and makes
    every variable that differs between the modes look unconverged. Whether that mode matters (it may hold mass:
    density is not mass) is for the modeller to judge; a higher log density throughout is only a strong hint that
    the other chains found the main mode.

    Parameters
    ----------
    trace : xarray.DataTree
        From nutpie or PyMC (``sample_stats`` with ``logp`` or ``lp``).
    gap : float
        Threshold in pooled within-chain sds.

    Returns
    -------
    StrandedChains or None
        None with fewer than two chains or without the log density in the sample statistics; else every chain's
        numbers and the stranded ones (possibly none).
    """
    lp = _chain_lp(trace)
    if lp is None or lp.shape[0] < 2:
        return None
    means, sds = lp.mean(axis=1), lp.std(axis=1)
    pooled = float(np.sqrt(np.mean(sds**2)))
    if not (np.isfinite(pooled) and pooled > 0):
        return None
    gaps = (means.max() - means) / pooled
    return StrandedChains(chains=[int(c) for c in np.flatnonzero(gaps > gap)], mean_lp=means.tolist(),
                          sd_lp=sds.tolist(), gap_sd=gaps.tolist())


@dataclass(frozen=True)
class RegionDifference:
    """One element whose means differ between regions of chains."""

    variable: str
    index: dict  # dim name -> coordinate value
    means: list  # the element's mean in each region (draws of all the region's chains)
    separation: float  # largest difference between two regions' means, in pooled within-chain sds


@dataclass(frozen=True)
class ChainRegions:
    """Chains grouped by where they sampled the global variables (:func:`chain_regions`)."""

    regions: list  # lists of chain indices, highest mean log density first (else by first chain)
    mean_lp: list | None  # each region's mean log density over its draws; None without it in the trace
    sd_lp: float | None  # pooled within-chain sd of the log density
    differences: list  # RegionDifference, most separated first
    separation: float  # the threshold used, in pooled within-chain sds

    @property
    def split(self) -> bool:
        """Whether the chains sit in more than one region."""
        return len(self.regions) > 1

    def to_json(self) -> dict:
        return asdict(self)


def _globals(post: xr.Dataset, max_size: int) -> list[str]:
    out = []
    for name, da in post.data_vars.items():
        per_draw = da.size // max(1, da.sizes.get("chain", 1) * da.sizes.get("draw", 1))
        if per_draw <= max_size and np.issubdtype(da.dtype, np.number):
            out.append(str(name))
    return out


def chain_regions(trace, var_names=None, *, separation: float = REGION_SEPARATION, top: int = 20,
                  max_size: int = GLOBAL_SIZE) -> ChainRegions | None:
    """Group chains into regions of the global variables: chains in one region agree, regions differ.

    Two chains are in one region when every element of the compared variables has chain means within
    ``separation`` pooled within-chain sds of each other, and regions are the connected groups of that relation.
    Chains that each found another mode (of which detections to believe, say) show up as several regions, with
    the elements that tell them apart; a chain alone in a region of lower log density is also what
    :func:`stranded_chains` names, but regions are found whatever the log densities.

    Parameters
    ----------
    trace : xarray.DataTree
        With a ``posterior`` group; ``sample_stats`` ``logp``/``lp`` is used when present.
    var_names : list of str, optional
        Default: every numeric posterior variable with at most ``max_size`` elements per draw (the globals;
        per-frame latents are many elements each moved by few data and would split chains by chance).
    separation : float
        Threshold in pooled within-chain sds.
    top : int
        Separating elements kept.

    Returns
    -------
    ChainRegions or None
        None with fewer than two chains or nothing to compare.
    """
    post = _group(trace, "posterior")
    if post is None or post.sizes.get("chain", 1) < 2:
        return None
    names = list(var_names) if var_names is not None else _globals(post, max_size)
    if not names:
        return None
    n_chains = post.sizes["chain"]
    means, pooled, where = [], [], []
    for name in names:
        da = post[name]
        dims = [d for d in da.dims if d not in ("chain", "draw")]
        values = np.asarray(da.transpose("chain", "draw", *dims).values, float).reshape(n_chains, da.sizes["draw"], -1)
        means.append(values.mean(axis=1))
        pooled.append(np.sqrt(np.mean(values.var(axis=1), axis=0)))
        where += [(name, i) for i in range(values.shape[2])]
    means, pooled = np.concatenate(means, axis=1), np.concatenate(pooled)
    keep = np.isfinite(pooled) & (pooled > 0) & np.isfinite(means).all(axis=0)
    if not keep.any():
        return None
    z = means[:, keep] / pooled[keep]
    apart = np.abs(z[:, None, :] - z[None, :, :]).max(axis=-1) > separation  # (chain, chain)
    label = list(range(n_chains))  # connected components of "not apart"
    for i in range(n_chains):
        for j in range(i + 1, n_chains):
            if not apart[i, j] and label[j] != label[i]:
                old = label[j]
                label = [label[i] if v == old else v for v in label]
    groups = [sorted(c for c in range(n_chains) if label[c] == v) for v in sorted(set(label), key=label.index)]
    mean_lp, sd_lp = _region_lp(trace, groups)
    if mean_lp is not None:
        order = np.argsort(-np.asarray(mean_lp), kind="stable")
        groups, mean_lp = [groups[i] for i in order], [mean_lp[i] for i in order]
    differences = []
    if len(groups) > 1:
        region_means = np.stack([means[g].mean(axis=0) for g in groups])  # equal draws per chain
        spread = np.where(keep, (region_means.max(axis=0) - region_means.min(axis=0)) / np.where(keep, pooled, 1.0), 0.0)
        for i in np.argsort(-spread)[:top]:
            if spread[i] <= separation:
                break
            name, flat = where[i]
            differences.append(RegionDifference(name, _index_of(post[name], flat),
                                                [float(m) for m in region_means[:, i]], float(spread[i])))
    return ChainRegions(regions=groups, mean_lp=mean_lp, sd_lp=sd_lp, differences=differences,
                        separation=float(separation))


def _chain_lp(trace) -> np.ndarray | None:
    """The log density of every draw, ``(chain, draw)`` (nutpie's ``logp`` or PyMC's ``lp``); None without it."""
    from .sampling import normalize_sample_stats

    try:
        stats = normalize_sample_stats(trace)
    except ValueError:
        return None
    if "lp" not in stats:
        return None
    return np.asarray(stats["lp"].transpose("chain", "draw").values, float)


def _region_lp(trace, groups) -> tuple[list | None, float | None]:
    lp = _chain_lp(trace)
    if lp is None:
        return None, None
    return [float(lp[g].mean()) for g in groups], float(np.sqrt(np.mean(lp.var(axis=1))))
