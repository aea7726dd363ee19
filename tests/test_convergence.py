"""Non-convergence localization: crafted traces whose pattern is known, mapped back onto the variable's dims."""

import numpy as np
import pytest
import xarray as xr

from gimbal.diagnostics.convergence import classify_element, convergence_localization


def _ar1(rng, phi, shape):
    out = np.empty(shape)
    out[:, 0] = rng.normal(0, 1, shape[:1] + shape[2:])
    for t in range(1, shape[1]):
        out[:, t] = phi * out[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(0, 1, shape[:1] + shape[2:])
    return out


@pytest.fixture(scope="module")
def crafted():
    """4 chains x 1000 draws of x (frame 4, keypoint 3): converged noise except at three planted elements."""
    rng = np.random.default_rng(11)
    C, D = 4, 1000
    x = rng.normal(0, 1, (C, D, 4, 3))
    x[2:, :, 1, 0] += 10.0  # separate modes: chains 2 and 3 sit 10 sd away
    hop = rng.random((2, D)) < 0.5  # switching: chains 0 and 1 hop between 0 and 10, chains 2 and 3 stay at 0
    x[:2, :, 2, 1] = np.where(hop, 10.0, 0.0) + rng.normal(0, 1, (2, D))
    x[:, :, 0, 2] = _ar1(rng, 0.98, (C, D))  # slow mixing: one mode, explored slowly by every chain
    post = xr.Dataset({"x": (("chain", "draw", "frame", "keypoint"), x)},
                      coords={"frame": [10, 11, 12, 13], "keypoint": ["nose", "elbow", "knee"]})
    return xr.DataTree.from_dict({"posterior": post})


def test_each_planted_element_is_found_where_it_is_and_named(crafted):
    loc = convergence_localization(crafted, ["x"])["x"]
    assert loc.rhat.dims == ("frame", "keypoint") and loc.rhat.shape == (4, 3)
    found = {(e.index["frame"], e.index["keypoint"]): e.pattern for e in loc.worst}
    assert found[(11, "nose")] == "separate_modes"
    assert found[(12, "elbow")] == "switching_chains"
    assert found[(10, "knee")] == "slow_mixing"
    assert loc.n_flagged == 3 and set(found) == {(11, "nose"), (12, "elbow"), (10, "knee")}
    modes = next(e for e in loc.worst if e.pattern == "separate_modes")
    assert np.allclose(sorted(modes.chain_means), [0, 0, 10, 10], atol=0.2)
    switch = next(e for e in loc.worst if e.pattern == "switching_chains")
    assert max(switch.chain_sds) > 4 and min(switch.chain_sds) < 1.2
    data = loc.to_json()
    assert data["where"]["frame"][:2] and data["patterns"] == {"separate_modes": 1, "switching_chains": 1, "slow_mixing": 1}


def test_elements_read_against_chance_at_their_own_ess():
    """1,000 elements of chains that all sample one distribution at ESS ~400: their R-hats above 1.01 are chance;
    one element where a chain sits a posterior sd away is not, however low its pooled ESS falls."""
    rng = np.random.default_rng(3)
    x = _ar1(rng, 0.8, (4, 1000, 1000))  # ESS / draw = (1 - 0.8) / (1 + 0.8): ~440 over 4 x 1000
    x[1, :, 7] += 1.0
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": (("chain", "draw", "e"), x)})})
    loc = convergence_localization(tree, ["x"], top=1000)["x"]
    by_element = {e.index["e"]: e for e in loc.worst}
    assert loc.n_flagged > 100 and len(by_element) == loc.n_flagged  # ~28% by chance at this ESS
    assert by_element[7].pattern != "within_chance" and by_element[7].p_chance < 1e-6
    others = [e for i, e in by_element.items() if i != 7]
    assert all(e.pattern == "within_chance" and e.p_chance >= 0.05 for e in others)
    ex = loc.exceedances
    assert ex.verdict == "beyond" and ex.observed == loc.n_flagged
    assert ex.worst_rhat == pytest.approx(by_element[7].rhat)
    assert ex.expected == pytest.approx(loc.n_flagged - 1, rel=0.25)
    beyond = loc.beyond_chance()
    assert beyond.dims == ("e",) and np.flatnonzero(beyond.values).tolist() == [7]
    assert loc.to_json()["exceedances"]["verdict"] == "beyond"
    without = convergence_localization(tree, ["x"], top=5, chance=False)["x"]
    assert without.exceedances is None and "within_chance" not in without.patterns
    assert int(without.beyond_chance().sum()) == without.n_flagged
    assert classify_element([0.0, 0.1], [1.0, 1.1], p_chance=0.2) == "within_chance"
    assert classify_element([0.0, 0.1], [1.0, 1.1], p_chance=0.01) == "slow_mixing"
    assert classify_element([0.0, 0.1], [1.0, 1.1], p_chance=float("nan")) == "slow_mixing"  # not judged


def test_per_element_rhat_and_ess_equal_arviz(crafted):
    import arviz_stats as azs

    loc = convergence_localization(crafted, ["x"])["x"]
    ref = crafted["posterior"].to_dataset()
    np.testing.assert_allclose(loc.rhat.values, azs.rhat(ref)["x"].values, rtol=1e-10)
    np.testing.assert_allclose(loc.ess_bulk.values, azs.ess(ref, method="bulk")["x"].values, rtol=1e-8)
    np.testing.assert_allclose(loc.ess_tail.values, azs.ess(ref, method="tail")["x"].values, rtol=1e-8)


@pytest.mark.parametrize("planted, code, words", [
    ((1, 0), "chains_in_different_modes", "More draws will not help"),
    ((2, 1), "chains_switching_modes", "More draws will not help"),
    ((0, 2), "slow_mixing", "Run longer"),
])
def test_each_pattern_gets_its_own_verdict_and_next_action(crafted, planted, code, words):
    from gimbal.diagnostics.rules import rule_convergence
    from gimbal.divergence.rules import GIMBAL_HINTS

    frame, kp = planted
    only = crafted["posterior"].to_dataset()["x"].isel(frame=[frame], keypoint=[kp])
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": only})})
    loc = {k: v.to_json() for k, v in convergence_localization(tree, ["x"]).items()}
    summary = {"divergences": 0, "max_rhat_all": loc["x"]["max_rhat"], "min_ess_bulk_all": 50.0, "total_draws": 4000,
               "ebfmi_per_chain": [1.0] * 4, "max_treedepth_fraction": 0.0}
    v = rule_convergence(summary, {"verdict": "ok"}, None, localization=loc, hints=GIMBAL_HINTS)
    assert v.code == code and words in v.next_action
    assert f"frame {10 + frame}" in v.interpretation and "keypoint" in v.interpretation
    few = rule_convergence({**summary, "total_draws": 400}, {"verdict": "ok"}, None, localization=loc)
    # 100 draws per chain: slow mixing cannot be judged, separate modes still can
    assert few.code == ("too_few_draws" if code == "slow_mixing" else code)


def test_the_summary_says_plainly_when_draws_are_too_few_to_judge():
    from gimbal.divergence.rules import rule_summary

    few = {"status": "finding", "code": "too_few_draws", "interpretation": "x", "next_action": "y"}
    results = [{"group": g, "description": "d", "verdict": few} for g in ("3", "6", "8a")]
    v = rule_summary(results + [{"group": "1", "verdict": {"status": "pass", "code": "build_ok"}}])
    assert v.code == "too_few_draws" and "(3, 6, 8a)" in v.interpretation and "--profile full" in v.next_action
    slow = dict(few, code="slow_mixing")
    assert rule_summary([{"group": "6", "description": "d", "verdict": slow}]).code == "first_finding_group_6"


def test_blocks_give_the_same_numbers_as_one_pass(crafted):
    from gimbal.diagnostics.convergence import element_diagnostics

    values = crafted["posterior"]["x"].values.reshape(4, 1000, -1).astype(np.float32)
    whole = element_diagnostics(values)
    blocked = element_diagnostics(values, block_values=4 * 1000 * 5)  # 5 elements per block
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)


def test_chains_in_separate_modes_are_never_read_as_too_few_draws():
    """A real-session run (group 8e): R-hat 1.995, ESS 3, chain means apart, yet the per-element pattern said
    'within chance' and the verdict 'too few draws'. Chains in different modes win over that reading."""
    from gimbal.diagnostics.rules import rule_convergence

    summary = {"divergences": 0, "total_draws": 200, "max_rhat_all": 1.995, "min_ess_bulk_all": 3.0,
               "ebfmi_per_chain": [0.9, 0.9], "max_treedepth_fraction": 0.0, "chains": 2}
    loc = {"x": {"variable": "x", "n_flagged": 1139, "n_elements": 1440, "rhat_threshold": 1.01, "max_rhat": 1.995,
                 "min_ess_bulk": 3.0, "pattern": "within_chance", "patterns": {"within_chance": 20}, "worst": [{}] * 20,
                 "where": {"frame": [39]}}}
    v = rule_convergence(summary, {"verdict": "chains_in_different_modes", "threshold": 3}, localization=loc)
    assert v.code == "chains_in_different_modes" and "too few" not in v.next_action.lower()
    # a variable whose elements do show the modes is the one the verdict names and places
    loc["u"] = {**loc["x"], "variable": "u", "max_rhat": 1.5, "pattern": "separate_modes",
                "patterns": {"separate_modes": 5}, "where": {"frame": [3]}}
    v = rule_convergence(summary, {"verdict": "chains_in_different_modes", "threshold": 3}, localization=loc)
    assert v.code == "chains_in_different_modes" and "of 'u'" in v.interpretation and "frame 3" in v.interpretation


def _with_lp(lp: np.ndarray, name: str = "logp") -> xr.DataTree:
    post = xr.Dataset({"mu": (("chain", "draw"), np.zeros_like(lp))})
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": xr.Dataset({name: (("chain", "draw"), lp)})})


def test_a_chain_left_in_a_lower_density_region_is_named():
    """One chain's log density 6 within-chain sds below the others' for the whole run: stranded; the others not."""
    from gimbal.diagnostics import stranded_chains

    rng = np.random.default_rng(3)
    lp = rng.normal(-35200.0, 50.0, (4, 1000))
    lp[2] -= 300.0
    found = stranded_chains(_with_lp(lp))
    assert found.chains == [2]
    assert found.gap_sd[2] == pytest.approx(6.0, abs=0.3) and max(found.gap_sd[c] for c in (0, 1, 3)) < 0.3
    assert "chain 2 (mean log density" in found.text() and "another seed" in found.text()
    assert found.to_json()["chains"] == [2]
    # PyMC names it "lp"; chains that only wander (AR(1), one mode) are not stranded
    slow = -35200.0 + 50.0 * _ar1(rng, 0.9, (4, 1000))
    assert stranded_chains(_with_lp(slow, "lp")).chains == []


def test_stranded_chains_need_two_chains_and_the_log_density():
    from gimbal.diagnostics import stranded_chains

    assert stranded_chains(_with_lp(np.zeros((1, 50)) - 3.0)) is None
    no_lp = xr.DataTree.from_dict({"posterior": xr.Dataset({"mu": (("chain", "draw"), np.zeros((2, 5)))}),
                                   "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), np.zeros((2, 5)))})})
    assert stranded_chains(no_lp) is None
    assert stranded_chains(xr.DataTree.from_dict({"posterior": no_lp["posterior"].to_dataset()})) is None


def _globals_trace(means: np.ndarray, rng, n_draws: int = 1000, lp_shift=None) -> xr.DataTree:
    """4 chains of a (2,)-vector ``a`` and a scalar ``b``: AR(1) noise (sd 1) around per-chain means."""
    n_chains = means.shape[0]
    a = means[:, None, :2] + _ar1(rng, 0.5, (n_chains, n_draws, 2))
    b = means[:, None, 2] + _ar1(rng, 0.5, (n_chains, n_draws))
    lp = rng.normal(-1000.0, 10.0, (n_chains, n_draws)) + (0.0 if lp_shift is None else np.asarray(lp_shift)[:, None])
    post = xr.Dataset({"a": (("chain", "draw", "slot"), a), "b": (("chain", "draw"), b),
                       "x": (("chain", "draw", "frame"), rng.normal(size=(n_chains, n_draws, 2000)))},
                      coords={"slot": ["p", "q"]})
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": xr.Dataset({"logp": (("chain", "draw"), lp)})})


def test_chains_in_different_regions_of_the_globals_are_grouped():
    """Chains 1 and 3 sit 12 sds away in a[q] (and 8 in b): two regions, ordered by log density, with what separates
    them; the 2000-element per-draw variable is not a global and is not compared."""
    from gimbal.diagnostics import chain_regions

    rng = np.random.default_rng(5)
    means = np.zeros((4, 3))
    means[[1, 3], 1] = 12.0
    means[[1, 3], 2] = -8.0
    found = chain_regions(_globals_trace(means, rng, lp_shift=[0.0, 30.0, 0.0, 30.0]))
    assert found.split and found.regions == [[1, 3], [0, 2]]  # the higher log density first
    assert found.mean_lp[0] - found.mean_lp[1] == pytest.approx(30.0, abs=1.0) and found.sd_lp == pytest.approx(10.0, rel=0.05)
    top = found.differences[0]
    assert (top.variable, top.index) == ("a", {"slot": "q"}) and top.separation == pytest.approx(12.0, rel=0.1)
    assert top.means[0] == pytest.approx(12.0, abs=0.3) and top.means[1] == pytest.approx(0.0, abs=0.3)
    assert [d.variable for d in found.differences] == ["a", "b"]  # a[p] agrees across chains: not a difference
    assert found.to_json()["regions"] == [[1, 3], [0, 2]]


def test_chains_that_agree_are_one_region_and_one_chain_is_none():
    from gimbal.diagnostics import chain_regions

    rng = np.random.default_rng(6)
    found = chain_regions(_globals_trace(np.zeros((4, 3)), rng, n_draws=200))  # slow (AR 0.5), 200 draws: chance only
    assert not found.split and found.regions == [[0, 1, 2, 3]] and found.differences == []
    assert chain_regions(_globals_trace(np.zeros((1, 3)), rng)) is None
    # without a log density the regions are still found, in chain order
    means = np.zeros((4, 3))
    means[2, 0] = 9.0
    trace = _globals_trace(means, rng)
    bare = xr.DataTree.from_dict({"posterior": trace["posterior"].to_dataset()})
    found = chain_regions(bare)
    assert found.regions == [[0, 1, 3], [2]] and found.mean_lp is None


def test_a_scalar_variable_is_read_against_chance_too():
    """A scalar (one element per draw, as a noise scale) flagged by R-hat: read like any other variable."""
    rng = np.random.default_rng(8)
    s = _ar1(rng, 0.5, (4, 1000))
    s[0] += 0.5  # chain 0 sits half a posterior sd away
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"sigma": (("chain", "draw"), s)})})
    loc = convergence_localization(tree, ["sigma"])["sigma"]
    assert loc.n_flagged == 1 and loc.exceedances.n_elements == 1 and loc.exceedances.verdict == "beyond"
    assert loc.worst[0].pattern != "within_chance" and bool(loc.beyond_chance())
