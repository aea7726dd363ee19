"""R-hat against chance, element by element (gimbal.diagnostics.chance), checked against ArviZ on simulated chains."""

import numpy as np
import pytest
import xarray as xr
from gimbal.diagnostics import chance
from gimbal.diagnostics.sampling import convergence_table


def _chains(seed, n_elements, fraction, n_chains=4, n_draws=400):
    return xr.DataArray(chance._stationary_ar1(np.random.default_rng(seed), n_chains, n_draws, n_elements, fraction),
                        dims=("chain", "draw", "element"))


def _table(draws):
    table = convergence_table(xr.DataTree.from_dict({"posterior": xr.Dataset({"z": draws})}), keep=["z"])
    return table["rhat_z"].values, table["ess_bulk_z"].values


@pytest.mark.parametrize(("fraction", "bounds"), [(0.2, (1.01, 1.02)), (0.5, (1.005, 1.01))])
def test_exceedance_probability_matches_arvizs_rhat_on_converged_chains(fraction, bounds):
    """The chi-square law against ArviZ's rank-normalized split R-hat of stationary AR(1) chains (4 x 400 draws), at
    their estimated bulk ESS: the share above each bound as predicted (within 4 binomial sds)."""
    draws = _chains(5, 4000, fraction)
    rhat, ess = _table(draws)
    for bound in bounds:
        predicted = chance.exceedance_probability(ess, 4, 400, bound).mean()
        observed = (rhat > bound).mean()
        assert 0.002 < predicted < 0.9
        binomial_sd = np.sqrt(predicted * (1 - predicted) / rhat.size)
        assert abs(observed - predicted) < 4 * binomial_sd + 0.005, (bound, observed, predicted)


def test_antithetic_chains_need_the_folded_rhat_read_at_its_own_ess():
    """NUTS draws are often antithetic (bulk ESS above the number of draws) while their spread mixes more slowly;
    ArviZ's R-hat is the larger of the draws' and the folded draws'. Read with the bulk ESS alone, converged
    chains' R-hats looked improbable far more often than their nominal 1%; with the folded ESS too, as often as
    nominal."""
    draws = _chains(9, 4000, 2.5)  # ESS / draw 2.5: lag-1 correlation -0.43
    rhat, ess = _table(draws)
    assert np.median(ess) > 2 * 1600
    found = chance.element_chance(draws, rhat, ess, bound=1.0)  # every element "above": each R-hat's own chance
    bulk_only = chance.exceedance_probability(found.own_ess, 4, 400, rhat)
    assert (bulk_only < 0.01).mean() > 0.2
    assert np.median(found.own_ess_folded) < 0.5 * np.median(found.own_ess)
    assert (found.p_alone < 0.01).mean() == pytest.approx(0.01, abs=0.006)
    assert (found.p_alone < 0.05).mean() == pytest.approx(0.05, abs=0.02)
    # and the share above 1.005, as ArviZ's R-hat puts it
    predicted = chance.exceedance_probability(found.own_ess, 4, 400, 1.005, found.own_ess_folded).mean()
    assert (rhat > 1.005).mean() == pytest.approx(predicted, abs=4 * np.sqrt(predicted / rhat.size) + 0.005)


def test_exceedance_probability_falls_with_ess_and_validates():
    p = chance.exceedance_probability([100, 400, 1000, 4000], 4, 1000)
    assert np.all(np.diff(p) < 0) and p[0] > 0.9 and p[-1] < 1e-6
    with pytest.raises(ValueError, match="at least 4 draws"):
        chance.exceedance_probability(400, 4, 3)


def test_within_chain_ess_is_the_pooled_ess_for_converged_chains_and_ignores_disagreement():
    draws = _chains(1, 500, 0.3)
    _, pooled = _table(draws)
    own = chance.within_chain_ess(draws).values
    assert np.median(own / pooled) == pytest.approx(1.0, abs=0.05)
    apart = draws.copy()
    apart[0] += 1.0  # one chain one sd away: the pooled ESS collapses, each chain's own does not move
    _, pooled_apart = _table(apart)
    assert np.median(pooled_apart) < 0.1 * np.median(pooled)
    np.testing.assert_allclose(chance.within_chain_ess(apart).values, own, rtol=1e-9)


def test_rhat_exceedances_reads_converged_chains_as_chance_and_chains_apart_as_beyond():
    draws = _chains(2, 3000, 0.12, n_draws=1000)  # ESS about 480 of 4,000: many elements above 1.01 by chance alone
    rhat, ess = _table(draws)
    converged = chance.rhat_exceedances(draws, rhat, ess)
    assert converged.observed > 300 and converged.verdict == "within" and converged.unjudged == 0
    assert converged.expected == pytest.approx(converged.observed, rel=0.1)
    assert "within chance" in converged.text() and f"{converged.observed:,} of 3,000" in converged.text()

    apart = draws.copy()
    apart[0, :, :60] += 0.5  # one chain half an sd off in 60 elements: their pooled ESS falls, their R-hat rises
    rhat, ess = _table(apart)
    beyond = chance.rhat_exceedances(apart, rhat, ess)
    assert beyond.verdict == "beyond" and beyond.p_worst < chance.CHANCE_LEVEL
    # conditioning on the pooled ESS instead would have explained them away
    assert chance.exceedance_probability(ess[:60], 4, 1000).mean() > 0.5  # against 0.2 at their own ESS

    barely = _chains(4, 500, 0.04)  # ESS about 16 per chain: too few draws to tell chance
    rhat, ess = _table(barely)
    res = chance.rhat_exceedances(barely, rhat, ess)
    assert res.verdict == "cannot_judge" and res.unjudged > 0 and "cannot be judged" in res.text()


def test_rhat_exceedances_finds_one_chain_slightly_apart_in_many_elements():
    draws = _chains(6, 3000, 0.3, n_draws=1000)  # ESS about 1,200: hardly any element above 1.01 by chance
    draws[0, :, :300] += 0.2  # one chain a fifth of an sd off in 300 elements: each alone looks ordinary
    rhat, ess = _table(draws)
    res = chance.rhat_exceedances(draws, rhat, ess)
    assert res.observed > 3 * res.expected + 10 and res.p_worst < chance.CHANCE_LEVEL and res.verdict == "beyond"
    assert "beyond chance" in res.text()


def test_rhat_exceedances_one_element_far_apart_is_beyond_chance():
    draws = _chains(3, 2000, 0.5)  # ESS about 800: few elements above 1.01 by chance
    draws[1, :, 7] += 3.0
    rhat, ess = _table(draws)
    res = chance.rhat_exceedances(draws, rhat, ess)
    assert res.verdict == "beyond" and res.worst_rhat == pytest.approx(rhat[7]) and res.p_worst < 1e-6
    none = chance.rhat_exceedances(draws[:, :, 8:], rhat[8:], ess[8:], bound=1.5)
    assert none.verdict == "none" and none.observed == 0 and "no element above R-hat 1.5" in none.text()
    with pytest.raises(ValueError, match="one value per element"):
        chance.rhat_exceedances(draws, rhat[:-1], ess[:-1])
    with pytest.raises(ValueError, match="one chain"):
        chance.rhat_exceedances(draws.isel(chain=[0]), rhat, ess)
