"""R-hat against chance: what exactly converged chains show, to read a measured R-hat against.

R-hat is judged element by element, but a verdict such as "R-hat <= 1.01 everywhere" takes the worst of many elements,
and each element's R-hat fluctuates around 1 with a spread set by its effective sample size. Two readings:

- :func:`chance_max_rhat` / :func:`rhat_against_chance`: the largest R-hat converged chains reach over as many
  elements at the run's median ESS (a simulation), against the measured maximum.
- :func:`rhat_exceedances`: each element's R-hat against what converged chains reach by chance at that element's
  *own* mixing speed (each chain's own ESS, summed over chains), and how many elements such chains would put above a
  bound on average, against how many are there. The pooled ESS is not used there: chains that sit apart lower it,
  so conditioning on it would explain any disagreement away as chance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr
from scipy import stats

from .sampling import _CHUNK_VALUES, _vectorized, element_draws, without_numbagg

__all__ = ["chance_max_rhat", "rhat_against_chance", "MIN_CHANCE_ESS_PER_CHAIN", "exceedance_probability",
           "within_chain_ess", "RhatExceedances", "rhat_exceedances", "CHANCE_LEVEL", "NEAR_LEVEL",
           "MIN_JUDGED_ESS_PER_CHAIN", "ElementChance", "element_chance", "summarize_exceedances"]


def _stationary_ar1(rng, n_chains: int, n_draws: int, n_elements: int, ess_fraction: float) -> np.ndarray:
    """Standard-normal AR(1) chains ``(chain, draw, element)`` with ESS / draws = ``ess_fraction``."""
    rho = (1.0 - ess_fraction) / (1.0 + ess_fraction)  # AR(1): ESS / N = (1 - rho) / (1 + rho)
    chains = np.empty((n_chains, n_draws, n_elements))
    chains[:, 0] = rng.standard_normal((n_chains, n_elements))  # the stationary distribution: no warm-up needed
    innovation_sd = np.sqrt(1.0 - rho**2)
    for i in range(1, n_draws):
        chains[:, i] = rho * chains[:, i - 1] + innovation_sd * rng.standard_normal((n_chains, n_elements))
    return chains


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
    returns the worst rank-normalized split R-hat (arviz_stats' definition) over
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
    with without_numbagg():
        for start in range(0, n_elements, per_block):
            chains = _stationary_ar1(rng, n_chains, n_draws, min(per_block, n_elements - start), ess_fraction)
            rhat = _vectorized().rhat(xr.DataArray(chains, dims=("chain", "draw", "element")))
            worst = max(worst, float(np.nanmax(rhat)))
    return float(worst)


MIN_CHANCE_ESS_PER_CHAIN = 10
"""Median bulk ESS per chain below which :func:`rhat_against_chance` cannot judge (chains barely move)."""


def rhat_against_chance(summary: dict, seed: int = 0) -> dict | None:
    """The worst variable's max R-hat next to what exactly converged chains reach by chance.

    R-hat is judged per element, but the verdict takes the maximum over every
    element; over ~10^5 positions that maximum exceeds 1.01 by chance alone when
    the ESS is modest. This simulates :func:`chance_max_rhat` for the worst
    variable's number of elements and median bulk ESS, so a report can say
    whether the measured maximum is within chance (more draws lower it) or
    beyond it (some elements really mix slowly).

    One simulated maximum is itself random: over 8 seeds its excess over 1
    varied by a factor of up to 1.8 (5,000 elements) and 1.4 (20,000 elements).
    So the measured maximum counts as ``"within"`` chance up to the simulated
    one, ``"beyond"`` only when its excess over 1 is more than twice the
    simulated excess, and ``"near"`` (one run cannot tell) in between.

    The reference is calibrated at the measured ESS, which is circular when the
    chains barely move: chains stuck in different places have a tiny ESS, and
    converged chains at that ESS reach almost any R-hat by chance. Below
    :data:`MIN_CHANCE_ESS_PER_CHAIN` effective draws per chain (median element)
    the verdict is ``"cannot_judge"``: chance cannot be told from
    non-convergence, and no element may be read as within chance.

    Parameters
    ----------
    summary : dict
        From :func:`sampling_summary` (needs ``per_variable``).
    seed : int
        Seed of the simulation.

    Returns
    -------
    dict or None
        ``variable``, ``max_rhat``, ``n_elements``, ``median_ess_bulk``,
        ``median_ess_per_chain``, ``min_ess_bulk``, ``chance_max_rhat`` and ``verdict`` ("within", "near", "beyond" or
        "cannot_judge");
        None when the summary has no R-hat (a single chain) or no per-variable
        table.
    """
    name = summary.get("max_rhat_all_var")
    row = (summary.get("per_variable") or {}).get(name)
    if not row or row.get("rhat") is None or not row.get("ess_bulk_median"):
        return None
    chains, draws = summary["chains"], summary["draws_per_chain"]
    if chains < 2 or draws < 4:
        return None
    fraction = min(4.0, row["ess_bulk_median"] / (chains * draws))
    chance = chance_max_rhat(chains, draws, row["n_elements"], ess_fraction=fraction, seed=seed)
    excess, chance_excess = row["rhat"] - 1.0, chance - 1.0
    verdict = "within" if excess <= chance_excess else "beyond" if excess > 2.0 * chance_excess else "near"
    per_chain = row["ess_bulk_median"] / chains
    if per_chain < MIN_CHANCE_ESS_PER_CHAIN:
        verdict = "cannot_judge"
    return {"variable": name, "max_rhat": row["rhat"], "n_elements": row["n_elements"],
            "median_ess_bulk": row["ess_bulk_median"], "median_ess_per_chain": per_chain,
            "min_ess_bulk": row.get("ess_bulk"),
            "chance_max_rhat": chance, "verdict": verdict}


CHANCE_LEVEL = 0.01
"""Probability below which :func:`rhat_exceedances` calls the least likely R-hat beyond chance."""

NEAR_LEVEL = 0.05
"""Probability below which (and above :data:`CHANCE_LEVEL`) :func:`rhat_exceedances` calls it near chance."""

MIN_JUDGED_ESS_PER_CHAIN = 50
"""Within-chain ESS per chain below which :func:`exceedance_probability` is not trusted (it is checked from 80 up;
at 20 per chain it put 89% of 4 x 400 AR(1) elements above R-hat 1.01, ArviZ 94%)."""

_NEGLIGIBLE = 1e-9  # an element whose chance of exceeding the bound is below this (from its pooled ESS) is not read
_BLOCK = 2000  # elements whose draws are read at once (4 chains x 1000 draws: 64 MB in float64)


def exceedance_probability(ess, n_chains: int, n_draws: int, rhat: float | np.ndarray = 1.01,
                           ess_folded=None) -> np.ndarray:
    """Probability that exactly converged chains with bulk ESS ``ess`` show a split R-hat above ``rhat``.

    Split R-hat cuts each of the ``n_chains`` chains into halves: ``M = 2 n_chains`` chains of ``N = n_draws // 2``
    draws. For stationary chains from one distribution with ``ess / M`` effective draws per half, the half-chains'
    means scatter so that ``(M - 1) (ess / M) (R-hat^2 - (N - 1) / N)`` is chi-square with ``M - 1`` degrees of
    freedom. That is the probability returned, element by element (``ess`` and ``rhat`` broadcast).

    ArviZ's R-hat is the larger of that of the (rank-normalized) draws and that of their folded values (the distance
    from the median): it also sees chains that differ in spread. With ``ess_folded`` (the ESS of the folded draws,
    :func:`within_chain_ess` with ``folded=True``) the folded R-hat gets the same law at its own ESS, and the two
    are taken as independent (the halves' means and their spreads): the probability that either exceeds. This
    matters where NUTS draws are antithetic: there the bulk ESS exceeds the number of draws while the spread mixes
    more slowly, so the bulk law alone calls the folded R-hat's chance excursions improbable.

    Checked against ArviZ's rank-normalized R-hat on simulated AR(1) chains (tests/test_chance.py). At 4 x 1000
    draws the share above 1.01, per bin of estimated bulk ESS, was 0.47 / 0.28 / 0.14 / 0.07 / 0.03 for ESS
    300-400 / 400-500 / 500-600 / 600-700 / 700-800, as this gives. Each R-hat's own probability below 1% (5%)
    came out for 0.3-0.8% (2.3-6.1%) of converged elements at ESS / draw 0.3-2.5 with both ESS (2 x 100 to
    4 x 1000 draws; 1.7% at 4 x 100 and 0.3), and for up to 58% with the bulk ESS alone at ESS / draw 2.5. With
    under about :data:`MIN_JUDGED_ESS_PER_CHAIN` effective draws per chain it drifts (a few points of probability).

    Parameters
    ----------
    ess : array_like
        Bulk ESS of each element (all chains together).
    n_chains, n_draws : int
        The run's chains and kept draws per chain.
    rhat : float or array_like
        The R-hat to exceed.
    ess_folded : array_like, optional
        ESS of each element's folded draws; without it the folded R-hat is not read.

    Returns
    -------
    numpy.ndarray
    """
    if n_chains < 1 or n_draws < 4:
        raise ValueError(f"need at least one chain of at least 4 draws, got {n_chains} x {n_draws}.")
    m, n = 2 * n_chains, n_draws // 2
    excess = np.square(np.asarray(rhat, dtype=float)) - (n - 1) / n

    def tail(effective):
        return stats.chi2.sf((m - 1) * (np.asarray(effective, dtype=float) / m) * excess, m - 1)

    p = tail(ess)
    if ess_folded is None:
        return p
    folded = tail(ess_folded)
    return p + folded - p * folded


def within_chain_ess(draws: xr.DataArray, folded: bool = False) -> xr.DataArray:
    """Each element's bulk ESS computed in every chain on its own, summed over the chains.

    Where the chains sample one distribution this is the pooled bulk ESS (same definition, ArviZ's); where they sit
    apart it stays what each chain's own mixing gives, while the pooled ESS falls with their disagreement.

    Parameters
    ----------
    draws : xarray.DataArray
        With ``chain`` and ``draw`` dimensions (at least 4 draws).
    folded : bool
        The ESS of each chain's distance from its own median instead (how fast the spread mixes: the ESS of the
        folded R-hat).

    Returns
    -------
    xarray.DataArray
        On ``draws``' other dimensions.
    """
    with without_numbagg():  # numbagg's median would compile its kernels afresh in every process (~20 s)
        if folded:
            draws = abs(draws - draws.median("draw"))
        return sum(_vectorized().ess(draws.isel(chain=[c]), method="bulk") for c in range(draws.sizes["chain"]))


@dataclass(frozen=True)
class RhatExceedances:
    """How many elements are above an R-hat bound, against how many exactly converged chains would put there.

    ``expected`` sums each element's :func:`exceedance_probability` at its within-chain ESS: the mean count. It is a
    mean only: elements that move together (a keypoint's three axes, a pose's keypoints along one slow direction)
    share their chain means' scatter and go above the bound together, so one run's count varies far more than
    independent elements' would (on the real SLEAP mouse, 0 coordinates above 1.01 where 115 are expected). The
    verdict therefore rests on single elements: ``worst_*`` name the element whose R-hat is least likely at its ESS,
    ``p_worst_alone`` its chance as one element and ``p_worst`` that chance over all ``n_elements`` (Bonferroni, valid
    however the elements depend on each other); ``unjudged`` counts the elements above the bound whose chains barely
    move (within-chain ESS per chain below :data:`MIN_JUDGED_ESS_PER_CHAIN`).

    ``verdict``: ``"beyond"`` where ``p_worst`` is below :data:`CHANCE_LEVEL` (there the chains differ by more than
    their mixing explains: still drifting towards one distribution, or sitting apart); else ``"cannot_judge"`` where
    some elements are unjudged; else ``"near"`` where it is below :data:`NEAR_LEVEL` (one run cannot tell); else
    ``"within"`` (every R-hat is one that chains mixing this fast show by chance: more draws, a higher ESS, lower
    them); ``"none"`` where no element is above the bound.
    """

    bound: float
    n_elements: int
    observed: int
    expected: float
    worst_rhat: float | None
    worst_ess: float | None
    p_worst_alone: float | None
    p_worst: float | None
    unjudged: int
    verdict: str
    worst_ess_folded: float | None = None  # the within-chain ESS of the least likely element's spread

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """One sentence for a run's summary."""
        expected = f"{self.expected:.2g}" if self.expected < 10 else f"{self.expected:,.0f}"
        if self.verdict == "none":
            return (f"no element above R-hat {self.bound:g} (converged chains that mix as fast would put "
                    f"{expected} there on average).")
        reading = {"within": "within chance: the chains mix slowly there, and more draws (a higher ESS) lower R-hat",
                   "near": ("near chance (one run cannot tell): the chains may mix slowly there or sit slightly apart; "
                            "another seed tells"),
                   "beyond": ("beyond chance: there the chains differ by more than their own mixing explains (they "
                              "have not reached one distribution yet, or some sit apart)"),
                   "cannot_judge": (f"chance cannot be judged: at {self.unjudged:,} of them the chains barely move "
                                    f"(under {MIN_JUDGED_ESS_PER_CHAIN} effective draws per chain)")}[self.verdict]
        least = ""
        if self.worst_rhat is not None:
            spread = f" ({self.worst_ess_folded:.0f} of its spread)" if self.worst_ess_folded is not None else ""
            least = (f"; the least likely, R-hat {self.worst_rhat:.4f} at a within-chain ESS of {self.worst_ess:.0f}"
                     f"{spread}, has chance {self.p_worst_alone:.2g} alone, {self.p_worst:.2g} among "
                     f"{self.n_elements:,}")
        return (f"{self.observed:,} of {self.n_elements:,} elements above R-hat {self.bound:g}, where exactly "
                f"converged chains that mix as fast (each chain's own ESS) would put {expected} on average "
                f"(elements that move together go above together: one run's count varies far more){least}: "
                f"{reading}.")


@dataclass(frozen=True)
class ElementChance:
    """Each element's R-hat read against chance (:func:`element_chance`), in the flattened element order."""

    own_ess: np.ndarray  # within-chain bulk ESS where it was computed, NaN elsewhere
    own_ess_folded: np.ndarray  # within-chain ESS of the folded draws (the spread), there
    chance: np.ndarray  # probability of exceeding the bound at that ESS (at the pooled ESS where not computed)
    p_alone: np.ndarray  # probability of an R-hat at least this high, for elements above the bound read, else NaN
    unjudged: np.ndarray  # bool: above the bound, but the chains barely move (or no ESS): p_alone not trusted

    def p_among(self, n_elements: int | None = None) -> np.ndarray:
        """``p_alone`` over ``n_elements`` elements (Bonferroni; default all): the chance that any of that many
        exactly converged elements shows an R-hat this improbable."""
        n = self.p_alone.size if n_elements is None else n_elements
        return np.minimum(1.0, self.p_alone * n)


def element_chance(draws: xr.DataArray, rhat, ess_bulk, *, bound: float = 1.01,
                   max_read: int = 20_000) -> ElementChance:
    """Each element's chance of exceeding an R-hat ``bound``, and of its own R-hat, had the chains converged exactly.

    Read at each element's :func:`within_chain_ess`, of the draws and of their folded values, with
    :func:`exceedance_probability`. Those ESS are computed only where they can matter: for the elements above the
    bound and those whose pooled bulk ESS, capped at the number of draws, leaves a chance above 1e-9 (at most
    ``max_read`` of them, the likeliest first); the others keep that capped ESS's chance. (The cap: antithetic NUTS
    draws have a bulk ESS above the number of draws, their spread seldom does.) That misses the folded R-hat's chance
    of the elements not read, so ``expected`` is low by about that much: on T = 1800 draws of the realistic rodent
    (6,000 random coordinates, 2 chains) the spread's ESS per draw had median 0.63 (1st percentile 0.40) against the
    bulk's 1.23, and over 97,200 such coordinates the folded part adds about 0.3 expected elements above 1.01.

    Parameters
    ----------
    draws : xarray.DataArray
        The variable's draws, ``chain`` and ``draw`` first or not.
    rhat, ess_bulk : array_like
        Every element's R-hat and pooled bulk ESS, on ``draws``' other dimensions (e.g. from
        :func:`gimbal.diagnostics.sampling.convergence_table` with ``keep``).
    bound : float
        The R-hat bound (1.01 by convention).
    max_read : int
        Most elements whose within-chain ESS is computed.

    Returns
    -------
    ElementChance
    """
    chains, n_draws = draws.sizes["chain"], draws.sizes["draw"]
    if chains < 2:
        raise ValueError("R-hat compares chains: the draws have one chain.")
    others = [d for d in draws.dims if d not in ("chain", "draw")]
    flat_rhat = np.asarray(rhat, dtype=float).ravel()
    capped = np.minimum(np.asarray(ess_bulk, dtype=float).ravel(), chains * n_draws)
    pooled = exceedance_probability(capped, chains, n_draws, bound)
    if flat_rhat.shape != pooled.shape or flat_rhat.size != int(np.prod([draws.sizes[d] for d in others])):
        raise ValueError(f"rhat and ess_bulk must hold one value per element of the draws ({others}).")
    above = flat_rhat > bound
    candidates = np.flatnonzero(above | (pooled > _NEGLIGIBLE))
    candidates = candidates[np.argsort(-np.where(above[candidates], 2.0, pooled[candidates]), kind="stable")][:max_read]
    chance = np.where(np.isfinite(pooled), pooled, 0.0)
    own, own_folded = np.full(flat_rhat.size, np.nan), np.full(flat_rhat.size, np.nan)
    for start in range(0, candidates.size, _BLOCK):
        block = candidates[start:start + _BLOCK]
        picked = xr.DataArray(element_draws(draws, block), dims=("chain", "draw", "element"))
        own[block] = within_chain_ess(picked).values
        own_folded[block] = within_chain_ess(picked, folded=True).values
    chance[candidates] = np.nan_to_num(exceedance_probability(own[candidates], chains, n_draws, bound,
                                                              own_folded[candidates]))
    read = np.zeros(flat_rhat.size, dtype=bool)
    read[candidates] = True
    # an element above the bound whose chains barely move (or whose ESS is undefined) cannot be judged
    unjudged = above & read & ~(np.fmin(own, own_folded) >= MIN_JUDGED_ESS_PER_CHAIN * chains)
    p_alone = np.full(flat_rhat.size, np.nan)
    hit = above & np.isfinite(own) & np.isfinite(own_folded)
    p_alone[hit] = exceedance_probability(own[hit], chains, n_draws, flat_rhat[hit], own_folded[hit])
    return ElementChance(own, own_folded, chance, p_alone, unjudged)


def rhat_exceedances(draws: xr.DataArray, rhat, ess_bulk, *, bound: float = 1.01,
                     max_read: int = 20_000) -> RhatExceedances:
    """Read a run's elements above an R-hat ``bound`` against what exactly converged chains would show.

    Each element is read by :func:`element_chance` (parameters as there); :func:`summarize_exceedances` gives the
    verdict.

    Returns
    -------
    RhatExceedances
    """
    found = element_chance(draws, rhat, ess_bulk, bound=bound, max_read=max_read)
    return summarize_exceedances(found, rhat, bound)


def summarize_exceedances(found: ElementChance, rhat, bound: float = 1.01) -> RhatExceedances:
    """The :class:`RhatExceedances` of elements read by :func:`element_chance` (``rhat`` and ``bound`` as there)."""
    flat_rhat = np.asarray(rhat, dtype=float).ravel()
    above = flat_rhat > bound
    worst = dict(worst_rhat=None, worst_ess=None, p_worst_alone=None, p_worst=None, worst_ess_folded=None)
    if np.isfinite(found.p_alone).any():
        i = int(np.nanargmin(found.p_alone))
        worst = dict(worst_rhat=float(flat_rhat[i]), worst_ess=float(found.own_ess[i]),
                     worst_ess_folded=float(found.own_ess_folded[i]),
                     p_worst_alone=float(found.p_alone[i]), p_worst=float(found.p_among()[i]))
    observed, unjudged = int(above.sum()), int(found.unjudged.sum())
    least = 1.0 if worst["p_worst"] is None else worst["p_worst"]
    if observed == 0:
        verdict = "none"
    elif least < CHANCE_LEVEL:
        verdict = "beyond"
    elif unjudged:
        verdict = "cannot_judge"
    elif least < NEAR_LEVEL:
        verdict = "near"
    else:
        verdict = "within"
    return RhatExceedances(bound=float(bound), n_elements=int(flat_rhat.size), observed=observed,
                           expected=float(found.chance.sum()), unjudged=unjudged, verdict=verdict, **worst)
