"""The generic engine on models nobody here wrote, and on crafted inputs."""

import json
import warnings
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr
from pytensor.compile.builders import OpFromGraph

from gimbal.diagnostics import chance, checks, io, localization, multimodality, rules, sampling
from gimbal.divergence import rules as study_rules
from gimbal.divergence import schema
from gimbal.divergence.groups import GROUPS
from gimbal.divergence.paths import archive_legacy, make_paths
from gimbal.model.fitting import sample_model

EIGHT_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def centered_eight_schools():
    with pm.Model(coords={"school": list("ABCDEFGH")}) as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta = pm.Normal("theta", mu, tau, dims="school")
        pm.Normal("y", theta, EIGHT_SIGMA, observed=EIGHT_Y, dims="school")
    return model


@pytest.fixture(scope="module")
def eight_schools_trace():
    fit = sample_model(centered_eight_schools(), chains=2, tune=500, draws=500, seed=7, progress=False, jitter=True)
    return fit.trace


@pytest.mark.slow
def test_engine_reports_divergences_and_points_at_small_tau(eight_schools_trace):
    s = sampling.sampling_summary(eight_schools_trace, ["mu", "tau"], wall_time_s=1.0)
    assert s["divergences"] > 0 and 0 < s["divergence_fraction"] < 1
    loc = localization.divergence_localization(eight_schools_trace)
    tau = next(v for v in loc["variables"] if v["name"] == "tau")
    assert tau["z"] < -0.3  # divergent draws sit at smaller tau than the rest: the funnel's neck
    assert loc["variables"][0]["name"] in ("tau", "theta")
    verdict = study_rules.rule_sampling("3", s)
    assert verdict.status == "finding" and "divergences" in verdict.problems
    # a table computed beforehand (keeping theta's R-hat per element) gives the same summary
    table = sampling.convergence_table(eight_schools_trace, keep=["theta"])
    given = sampling.sampling_summary(eight_schools_trace, ["mu", "tau"], wall_time_s=1.0, table=table)
    assert given == s
    assert table["rhat_theta"].max() == s["per_variable"]["theta"]["rhat"]
    with pytest.raises(ValueError, match="does not cover"):
        sampling.sampling_summary(eight_schools_trace, table=sampling.convergence_table(eight_schools_trace, ["mu"]))


@pytest.mark.slow
def test_stat_names_are_normalized_for_both_samplers():
    model = centered_eight_schools()
    keys = None
    for sampler_name in ("nutpie", "pymc"):
        fit = sample_model(model, sampler=sampler_name, chains=2, tune=100, draws=50, seed=1, progress=False, jitter=True)
        stats = sampling.normalize_sample_stats(fit.trace)
        assert {"diverging", "tree_depth", "step_size", "n_steps", "energy", "lp"} <= set(stats.data_vars), sampler_name
        s = sampling.sampling_summary(fit.trace)
        assert s["mean_grad_evals_per_draw"] is not None and s["max_treedepth_fraction"] is not None
        keys = set(s) if keys is None else keys
        assert set(s) == keys  # same summary shape for both samplers


def test_finite_difference_check_catches_a_wrong_gradient():
    x = pt.dscalar("x")
    wrong = OpFromGraph([x], [x**2], lop_overrides=lambda inps, outs, grads: [grads[0] * 3 * inps[0]])
    with pm.Model() as model:
        a = pm.Normal("a", 0, 1, initval=0.7)
        pm.Potential("bad", -wrong(a))
    report = checks.finite_difference_check(checks.compile_logp_and_grad(model), max_components=None)
    assert not report["passed"] and report["worst"][0]["name"] == "a"
    assert rules.rule_gradient({"finite": True}, report).code == "gradient_mismatch"


def test_safe_point_logps_reports_minus_inf_without_raising():
    with pm.Model() as model:
        s = pm.HalfNormal("s", 1)
        pm.Normal("y", 0, s, observed=[1.0])
    point = model.initial_point()
    point["s_log__"] = np.array(-np.inf)
    out = checks.safe_point_logps(model, point)
    assert not out["finite"] and "y" in out["nonfinite_terms"]
    assert rules.rule_build(out).code == "logp_nonfinite"
    grad = checks.gradient_report(checks.compile_logp_and_grad(model), point)
    assert not grad["finite"] and rules.rule_gradient(grad).code == "gradient_nonfinite"


def _trace(values: dict, diverging=None):
    """A DataTree trace from {name: (chain, draw, ...) arrays}."""
    post = {}
    for name, v in values.items():
        dims = ["chain", "draw"] + [f"{name}_dim{i}" if not name.startswith("state") else ("state" if i == 0 else f"{name}_dim{i}") for i in range(v.ndim - 2)]
        post[name] = (dims, v)
    n_chain, n_draw = next(iter(values.values())).shape[:2]
    div = np.zeros((n_chain, n_draw), bool) if diverging is None else diverging
    stats = xr.Dataset({"diverging": (("chain", "draw"), div)})
    return xr.DataTree.from_dict({"posterior": xr.Dataset(post), "sample_stats": stats})


def test_multimodality_tells_label_switching_from_stuck_chains():
    rng = np.random.default_rng(0)
    means = np.array([[-2.0, 0.0, 3.0]])
    a = means + 0.1 * rng.standard_normal((500, 3))
    b = means[:, [2, 0, 1]] + 0.1 * rng.standard_normal((500, 3))  # same values, labels permuted
    pos = rng.standard_normal((2, 500, 4))
    switched = _trace({"state_mean": np.stack([a, b]), "x": pos})
    assert multimodality.multimodality_check(switched)["verdict"] == "label_switching"
    stuck = pos.copy()
    stuck[1, :, 2] += 8.0  # chain 1 sits in another mode for one position
    result = multimodality.multimodality_check(_trace({"x": stuck}))
    assert result["verdict"] == "chains_in_different_modes" and result["flagged"][0]["name"] == "x[2]"
    assert multimodality.multimodality_check(_trace({"x": pos}))["verdict"] == "ok"


def test_localization_profiles_along_frames():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 300, 50))
    div = np.zeros((2, 300), bool)
    div[:, :20] = True
    x[:, :20, 37] += 3.0  # divergent draws displaced at frame 37 only
    tr = _trace({"x": x}, div)
    tr["posterior"] = tr["posterior"].to_dataset().rename({"x_dim0": "frame"})
    loc = localization.divergence_localization(tr)
    assert loc["profiles"]["frame"]["peak"] == 37
    assert loc["elements"][0]["name"] in ("x[37]",)


def _summary(**kw):
    base = dict(divergences=0, divergence_fraction=0.0, total_draws=200, chains=2, max_rhat_all=1.005,
                min_ess_bulk_all=500.0, min_ebfmi=0.8, max_treedepth_fraction=0.0)
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "group, summary, mm, ref, code",
    [
        ("3", _summary(divergences=48, divergence_fraction=0.24), None, None, "core_ill_conditioned"),
        ("3", _summary(), None, None, "stable"),
        ("4", _summary(divergences=5, divergence_fraction=0.025), None, _summary(), "mixture_math"),
        ("4", _summary(divergences=5, divergence_fraction=0.025), None, _summary(divergences=48), "inherits_baseline"),
        ("4", _summary(), None, _summary(divergences=48), "stable"),
        ("5", _summary(divergences=66, divergence_fraction=0.33), None, _summary(), "hmm_gradients"),
        ("6", _summary(), None, None, "stable"),
        ("7", _summary(divergences=3, divergence_fraction=0.015), None, None, "observation_model_culprit"),
        ("7", _summary(max_rhat_all=1.3), None, None, "not_converged"),
        ("6", _summary(max_rhat_all=2.2), {"verdict": "label_switching"}, None, "label_switching"),
        ("6", _summary(max_rhat_all=1.85), {"verdict": "chains_in_different_modes", "threshold": 3}, None, "chains_in_different_modes"),
        ("8b", _summary(divergences=100, divergence_fraction=0.5), None, None, "temporal_divergences"),
        ("3", _summary(min_ebfmi=0.1), None, None, "inefficient"),
    ],
)
def test_decision_rules_reach_each_verdict(group, summary, mm, ref, code):
    assert study_rules.rule_sampling(group, summary, mm, ref).code == code


def test_temporal_and_summary_rules():
    sudden = [{"T": 80, "divergence_fraction": 0.0}, {"T": 200, "divergence_fraction": 0.5}, {"T": 500, "divergence_fraction": 0.6}]
    v = study_rules.rule_temporal(sudden)
    assert v.code == "temporal_threshold" and "T=80 and T=200" in v.interpretation and "suddenly" in v.interpretation
    gradual = [{"T": 80, "divergence_fraction": 0.0}, {"T": 200, "divergence_fraction": 0.01}, {"T": 500, "divergence_fraction": 0.05},
               {"T": 1000, "divergence_fraction": 0.09}]
    assert "gradually" in study_rules.rule_temporal(gradual).interpretation
    assert study_rules.rule_temporal([{"T": 1800, "divergence_fraction": 0.0}]).code == "temporal_stable"
    results = [
        {"group": "1", "verdict": {"status": "pass"}},
        {"group": "3", "description": "baseline", "verdict": {"status": "finding", "problems": ["divergences"], "interpretation": "x", "next_action": "y"}},
    ]
    assert study_rules.rule_summary(results).code == "first_failure_group_3"
    assert study_rules.rule_summary(results[:1]).code == "all_clear"


def test_a_finding_at_frames_with_an_ill_defined_heading_is_traced_to_the_trained_prior():
    """rule_heading: a sampling finding whose unconverged frames the heading check traces to short heading
    baselines, or whose divergent draws peak at one, names the body frame and the fix; otherwise, or for a pass,
    the verdict is unchanged."""
    from gimbal.diagnostics.rules import Verdict
    from gimbal.model.prior import heading_check

    finding = Verdict("finding", "hmm_gradients", "2 divergent draws.", "Check the HMM.", ("divergences", "rhat"))
    x = np.zeros((20, 2, 3))
    x[:, 1, 0] = 1.0  # the heading baseline: 1 long seen from above ...
    x[:2, 1] = [0.02, 0.0, 1.0]  # ... but upright in frames 0 and 1
    unconverged = np.isin(np.arange(20), [0, 1, 9, 13])
    check = heading_check(x, [0, 1], np.eye(3), ["root", "proximal"], unconverged)
    assert check["short_frames"] == [0, 1] and check["unconverged_at_short"] == 2 and check["traced"]
    heading = {**check, "divergence_peak_frame": 16}
    v = study_rules.rule_heading(finding, heading)
    assert v.code == "heading_ill_defined" and v.status == "finding" and v.problems[-1] == "heading"
    assert v.interpretation.startswith("2 divergent draws. Traced to the trained prior: 2 of the 4 frames where")
    assert "(root -> proximal)" in v.interpretation and "frames 0, 1;" in v.interpretation
    assert "gimbal prior fit --heading" in v.next_action and v.next_action.endswith("Check the HMM.")
    # one of four unconverged frames at a short one: not traced, unless the divergences peak at one
    fewer = {**heading_check(x, [0, 1], np.eye(3), ["root", "proximal"], np.isin(np.arange(20), [1, 5, 9, 13])),
             "divergence_peak_frame": 16}
    assert not fewer["traced"] and study_rules.rule_heading(finding, fewer) is finding
    v = study_rules.rule_heading(finding, {**fewer, "divergence_peak_frame": 1})
    assert v.code == "heading_ill_defined" and "divergent draws peak at frame 1, where the heading" in v.interpretation
    # half the frames short: two of four unconverged there is no concentration
    x[:10, 1] = [0.02, 0.0, 1.0]
    half = heading_check(x, [0, 1], np.eye(3), ["root", "proximal"], unconverged)
    assert len(half["short_frames"]) == 10 and not half["traced"]
    assert study_rules.rule_heading(finding, None) is finding
    passed = Verdict("pass", "converged", "ok", "none")
    assert study_rules.rule_heading(passed, heading) is passed


def test_paths_json_and_archive(tmp_path):
    p = make_paths("group_3_sampling_baseline_minimal", "2025-12-19T21-00-00", tmp_path)
    assert p.results_run.name == "results_group_3_sampling_baseline_minimal__2025-12-19T21-00-00.json"
    assert p.results_latest.name == "results_group_3_sampling_baseline_minimal.json"
    assert p.report_run.name == "report_group_3_sampling_baseline_minimal__2025-12-19T21-00-00.md"
    assert p.plots_latest.as_posix().endswith("plots/group_3_sampling_baseline_minimal")
    with pytest.raises(ValueError, match="run_id"):
        make_paths("group_3_x", "bad/id", tmp_path)
    io.write_json(tmp_path / "a.json", {"b": float("-inf"), "a": np.float32(1.5), "c": [np.nan]})
    text = (tmp_path / "a.json").read_text()
    assert text.index('"a"') < text.index('"b"') and json.loads(text) == {"a": 1.5, "b": "-Infinity", "c": ["NaN"]}
    assert not list(tmp_path.glob(".a.json*"))  # no temporary files left behind
    (tmp_path / "report_tg1_old.md").write_text("old")
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "report_tg1_old.md").write_text("older")
    moved = archive_legacy(tmp_path)
    assert [m.name for m in moved] == ["report_tg1_old.1.md"]
    assert (tmp_path / "archive" / "report_tg1_old.md").read_text() == "older"


def test_schema_rejects_malformed_results():
    with pytest.raises(Exception):
        schema.validate_results({"schema_version": schema.SCHEMA_VERSION, "status": "ok"})
    versions = schema.load_schema()["properties"]["schema_version"]["enum"]
    assert versions[-1] == schema.SCHEMA_VERSION and "1.0" in versions  # files written by earlier versions still load


def test_convergence_table_in_blocks_equals_arviz_on_the_whole_variable():
    """Large variables are processed in blocks; the worst element must not depend on the blocking."""
    import arviz_stats as azs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 300, 50, 3)).cumsum(axis=1) * 0.05 + rng.normal(size=(4, 300, 50, 3))  # autocorrelated
    x[1, :, 7, 2] += 3.0  # one element whose chain 1 sits elsewhere
    post = xr.Dataset({"x": (("chain", "draw", "frame", "xyz"), x), "s": (("chain", "draw"), rng.normal(size=(4, 300)))})
    tree = xr.DataTree.from_dict({"posterior": post})
    whole = sampling.convergence_table(tree)
    blocked = sampling.convergence_table(tree, chunk_values=4 * 300 * 3 * 4)  # 4 frames per block
    for stat in ("rhat", "ess_bulk", "ess_tail"):
        np.testing.assert_array_equal(whole[stat].values, blocked[stat].values)
    ref_rhat = azs.rhat(post[["x"]])["x"].values
    ref_ess = azs.ess(post[["x"]], method="bulk")["x"].values
    table = sampling.convergence_table(tree, chunk_values=4 * 300 * 3 * 4, keep=["x"])
    kept = table["rhat_x"]
    assert kept.dims == table["ess_bulk_x"].dims == ("frame", "xyz")
    np.testing.assert_allclose(kept.values, ref_rhat, rtol=1e-12)  # the blocks' elements back in their places
    np.testing.assert_allclose(table["ess_bulk_x"].values, ref_ess, rtol=1e-12)
    assert whole["rhat"].sel(var="x") == pytest.approx(ref_rhat.max())
    assert whole["ess_bulk"].sel(var="x") == pytest.approx(ref_ess.min())
    assert whole["rhat"].sel(var="x") > 1.5  # the displaced element is the worst one


@pytest.mark.parametrize("n_chains", [1, 4])
def test_convergence_table_matches_arviz_element_by_element_including_odd_elements(n_chains):
    """The threaded, vectorized path must give ArviZ's own numbers, also for constant, NaN and discrete elements."""
    import arviz_stats as azs

    rng = np.random.default_rng(2)
    x = rng.normal(size=(n_chains, 200, 12)).cumsum(axis=1) * 0.1 + rng.normal(size=(n_chains, 200, 12))
    x[:, :, 1] = 3.0  # constant
    x[0, 5, 2] = np.nan  # a failed draw
    x[:, :, 3] = rng.integers(0, 2, size=(n_chains, 200))  # two values: constant tail indicator
    x[-1, :, 4] += 2.0  # one chain elsewhere
    post = xr.Dataset({"z": (("chain", "draw", "e"), x)})
    tree = xr.DataTree.from_dict({"posterior": post})
    ref = {"rhat": azs.rhat(post)["z"].values, "ess_bulk": azs.ess(post, method="bulk")["z"].values,
           "ess_tail": azs.ess(post, method="tail")["z"].values}
    for e in range(12):  # one element at a time: every element's three numbers
        with warnings.catch_warnings():  # a constant element's NaN is reported, not warned about (ArviZ warns)
            warnings.simplefilter("error", RuntimeWarning)
            one = sampling.convergence_table(xr.DataTree.from_dict({"posterior": post.isel(e=[e])}), workers=1)
        for stat, values in ref.items():
            np.testing.assert_allclose(one[stat].item(), values[e], rtol=1e-12, equal_nan=True)
    threaded = sampling.convergence_table(tree, chunk_values=n_chains * 200 * 2, workers=3,  # 6 blocks, 3 threads
                                          keep=["z"])
    for stat, reduce in (("rhat", np.nanmax), ("ess_bulk", np.nanmin), ("ess_tail", np.nanmin)):
        expected = reduce(ref[stat]) if not np.all(np.isnan(ref[stat])) else np.nan
        np.testing.assert_allclose(threaded[stat].sel(var="z").item(), expected, rtol=1e-12, equal_nan=True)
    # every element's R-hat and bulk ESS, in place, the odd elements (ArviZ's path) among the vectorized ones
    assert threaded["rhat_z"].dims == threaded["ess_bulk_z"].dims == ("e",)
    np.testing.assert_allclose(threaded["rhat_z"].values, ref["rhat"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(threaded["ess_bulk_z"].values, ref["ess_bulk"], rtol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="keep"):
        sampling.convergence_table(tree, var_names=["z"], keep=["x"])


def test_chain_disagreement_in_blocks_matches_direct_formula(monkeypatch):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 200, 40, 3)) + np.arange(3)[:, None, None, None] * 0.1
    monkeypatch.setattr(multimodality, "_CHUNK_VALUES", 600 * 7)  # 7 elements per block
    means = v.mean(axis=1)
    direct = (means.max(0) - means.min(0)) / v.std(axis=1).mean(axis=0)
    np.testing.assert_allclose(multimodality.chain_disagreement(v), direct, rtol=1e-12)
    # float32 input (positions read back from disk): float64 arithmetic per block, same answer to float32 precision
    np.testing.assert_allclose(multimodality.chain_disagreement(v.astype(np.float32)), direct, rtol=1e-5)


def test_simulated_reference_chains_have_the_requested_ess():
    """The chains behind chance_max_rhat: ArviZ's bulk ESS must match the AR(1) formula they are built from."""
    import arviz_stats as azs

    for fraction in (1.0, 0.25, 2.0):
        z = chance._stationary_ar1(np.random.default_rng(3), 4, 1000, 400, fraction)
        ess = azs.ess(xr.Dataset({"z": (("chain", "draw", "e"), z)}), method="bulk")["z"].values
        assert np.median(ess) / 4000 == pytest.approx(fraction, rel=0.1)


def test_chance_max_rhat_grows_with_elements_and_autocorrelation():
    one = chance.chance_max_rhat(4, 1000, 1, seed=1)
    many = chance.chance_max_rhat(4, 1000, 5000, seed=1)
    sticky = chance.chance_max_rhat(4, 1000, 5000, ess_fraction=0.1, seed=1)
    assert abs(one - 1.0) < 0.005  # a single well-mixed element sits at 1 (either side)
    assert many > one + 0.002  # the worst of thousands is further out by chance alone
    assert sticky > many + 0.005  # and further still with fewer effective draws
    with pytest.raises(ValueError, match="ess_fraction"):
        chance.chance_max_rhat(4, 100, 10, ess_fraction=5.0)


@pytest.mark.slow
def test_maxdepth_caps_the_gradients_per_draw():
    fit = sample_model(centered_eight_schools(), chains=1, tune=100, draws=100, seed=2, progress=False, jitter=True,
                       maxdepth=2)
    stats = sampling.normalize_sample_stats(fit.trace)
    assert int(stats["n_steps"].max()) <= 3 and int(stats["tree_depth"].max()) <= 2
    with pytest.raises(ValueError, match="maxdepth"):
        sample_model(centered_eight_schools(), maxdepth=0)


def _summary_of(post: xr.Dataset) -> dict:
    """The parts of sampling_summary that rhat_against_chance reads, from a posterior alone."""
    table = sampling.convergence_table(xr.DataTree.from_dict({"posterior": post}))
    rhat = table["rhat"].to_series()
    worst = str(rhat.idxmax()) if rhat.notna().any() else str(table["var"].values[0])
    per_var = {str(v): {k: float(table[k].sel(var=v)) for k in table.data_vars} for v in table["var"].values}
    for row in per_var.values():
        row["n_elements"] = int(row["n_elements"])
    return {"chains": post.sizes["chain"], "draws_per_chain": post.sizes["draw"], "max_rhat_all_var": worst,
            "max_rhat_all": per_var[worst]["rhat"], "per_variable": per_var}


def test_rhat_against_chance_tells_a_chance_maximum_from_a_stuck_element():
    """Stationary chains: the worst of 2000 R-hats is a chance maximum; one displaced chain is beyond it."""
    z = chance._stationary_ar1(np.random.default_rng(11), 4, 500, 2000, 0.5)
    converged = _summary_of(xr.Dataset({"x": (("chain", "draw", "e"), z)}))
    res = chance.rhat_against_chance(converged, seed=3)
    assert res["variable"] == "x" and res["n_elements"] == 2000
    assert res["median_ess_bulk"] == pytest.approx(0.5 * 2000, rel=0.15)  # the AR(1) chains' ESS per draw, 0.5
    assert res["verdict"] in ("within", "near") and res["chance_max_rhat"] > 1.005
    stuck = z.copy()
    stuck[2, :, 17] += 1.0  # one element: chain 2 sits one posterior sd away
    res = chance.rhat_against_chance(_summary_of(xr.Dataset({"x": (("chain", "draw", "e"), stuck)})), seed=3)
    assert res["verdict"] == "beyond" and res["max_rhat"] > 1.05
    # the verdict names it and says what to do; one chain has no R-hat
    v = study_rules.rule_sampling("8e", {**converged, "divergences": 0, "max_rhat_all": res["max_rhat"], "min_ess_bulk_all": 900.0,
                                   "chains": 4}, rhat_chance=res)
    assert v.code == "not_converged" and "more than twice as far from 1" in v.interpretation and "'x'" in v.next_action
    assert f"slowest element's bulk ESS is {res['min_ess_bulk']:.0f}" in v.interpretation and res["min_ess_bulk"] < 100
    one_chain = _summary_of(xr.Dataset({"x": (("chain", "draw", "e"), z[:1])}))
    assert chance.rhat_against_chance(one_chain) is None


def test_depth_cap_is_named_where_it_cut_the_trajectories_short_and_the_run_is_not_converged():
    with pm.Model() as model:  # a plain Gaussian; at depth 1 every draw is a single leapfrog step
        pm.Normal("z", 0.0, np.geomspace(1.0, 30.0, 40), shape=40)
    capped = sample_model(model, chains=2, tune=300, draws=300, seed=2, progress=False, maxdepth=1, jitter=True)
    s = sampling.sampling_summary(capped.trace, max_treedepth=1)
    assert s["max_treedepth_fraction"] > sampling.DEPTH_CAP_SHARE and s["min_ess_bulk_all"] < 400
    text = sampling.depth_cap_text(s, 1)
    assert "cap of 2" in text and f"{100 * s['max_treedepth_fraction']:.0f}%" in text
    free = sample_model(model, chains=2, tune=300, draws=300, seed=2, progress=False, maxdepth=10, jitter=True)
    t = sampling.sampling_summary(free.trace, max_treedepth=10)
    assert t["max_treedepth_fraction"] < sampling.DEPTH_CAP_SHARE
    assert sampling.depth_cap_text(t, 10) == ""
    # at the cap but converged: nothing to say
    assert sampling.depth_cap_text({"max_treedepth_fraction": 1.0, "max_rhat_all": 1.004, "min_ess_bulk_all": 900.0},
                                   5) == ""
    assert "max R-hat 1.050" in sampling.depth_cap_text({"max_treedepth_fraction": 1.0, "max_rhat_all": 1.05,
                                                          "min_ess_bulk_all": None}, 5)


def test_rhat_against_chance_cannot_judge_chains_that_barely_move():
    """Chains that barely move (a real session's group 8e: ESS 3, R-hat 2.0): the chance reference calibrated at
    that ESS admits nearly any R-hat, so it must say it cannot judge, and nothing is read as 'too few draws'."""
    from gimbal.diagnostics.convergence import localize_flagged
    from gimbal.diagnostics.rules import rule_convergence

    rng = np.random.default_rng(5)
    walk = np.cumsum(rng.normal(size=(4, 50, 300)), axis=1)  # random walks: ESS of a few per chain
    post = xr.Dataset({"x": (("chain", "draw", "e"), walk)})
    summary = _summary_of(post)
    res = chance.rhat_against_chance(summary, seed=3)
    assert res["median_ess_bulk"] / 4 < chance.MIN_CHANCE_ESS_PER_CHAIN and res["max_rhat"] > 1.5
    assert res["verdict"] == "cannot_judge"
    # what the old reading did: at this ESS the simulated chance maximum admits the measured one
    assert res["chance_max_rhat"] > 1.2
    tree = xr.DataTree.from_dict({"posterior": post})
    loc = {k: v.to_json() for k, v in localize_flagged(tree, summary).items()}
    assert "within_chance" not in loc["x"]["patterns"]  # at their own ESS (a few per chain) none is judged
    assert loc["x"]["exceedances"]["unjudged"] > 0
    full = {**summary, "divergences": 0, "min_ess_bulk_all": res["min_ess_bulk"], "total_draws": 200,
            "ebfmi_per_chain": [1.0] * 4, "max_treedepth_fraction": 0.0}
    v = rule_convergence(full, {"verdict": "ok"}, res, localization=loc)
    assert v.code != "too_few_draws" and "barely move" in v.interpretation
    v = rule_convergence(full, {"verdict": "ok"}, res)  # without localization: the not-converged text says so
    assert v.code == "not_converged" and "cannot be told from non-convergence" in v.interpretation
    assert "Do not read this as too few draws" in v.next_action


def test_convergence_table_reports_nan_for_an_empty_variable():
    """A variable with no elements (e.g. no missing detections to impute) gives NaN, not an error."""
    rng = np.random.default_rng(5)
    post = xr.Dataset({"empty": (("chain", "draw", "k"), np.zeros((4, 50, 0))), "a": (("chain", "draw"), rng.normal(size=(4, 50)))})
    table = sampling.convergence_table(xr.DataTree.from_dict({"posterior": post}))
    assert np.isnan(table["rhat"].sel(var="empty")) and int(table["n_elements"].sel(var="empty")) == 0
    assert int(table["n_elements"].sel(var="a")) == 1 and np.isfinite(table["ess_bulk"].sel(var="a"))


def test_a_contrast_run_is_shown_against_its_default_never_as_the_first_failure():
    from gimbal.divergence.runner import notebook_for, parse_groups
    from gimbal.divergence.summary import summary_markdown

    assert GROUPS["6c"].contrast_of == "6" and notebook_for("6c").name == "group_6c_contrast_earlier_port.ipynb"
    assert parse_groups("6c,6") == ["6", "6c"] and "6c" in parse_groups("all") and parse_groups("6") == ["6"]
    loc = {"n_divergent": 60, "variables": [{"name": "u", "max_abs_z": 1.8, "z": -1.8, "index": [3, 2]}],
           "profiles": {"frame": {"peak": 3}, "keypoint": {"peak": "nose"}}}
    diverging = {"divergences": 60, "divergence_fraction": 0.3, "total_draws": 200, "max_rhat_all": 1.9}
    v = study_rules.rule_sampling("6c", diverging, divergences=loc)
    assert v.code == "earlier_port_diverges" and "'u'[3, 2] (z=-1.80)" in v.interpretation and "frame 3" in v.interpretation
    assert "group 6" in v.next_action
    clean = {"divergences": 0, "divergence_fraction": 0.0, "total_draws": 200, "max_rhat_all": 1.0}
    rows = [{"group": "6", "description": "full", "status": "ok", "verdict": {"status": "pass", "code": "stable"},
             "sampling": clean},
            {"group": "6c", "description": "contrast", "status": "ok", "contrast_of": "6", "sampling": diverging,
             "verdict": {**v.as_dict()}}]
    assert study_rules.rule_summary(rows).code == "all_clear"  # the contrast's divergences are not the study's
    c = study_rules.rule_contrast(rows[1], rows[0])
    assert c.code == "contrast_default_removes_divergences"
    assert "60 of 200 draws divergent: 60 divergent draws (30.0%)" in c.interpretation
    assert "(group 6) had 0 of 200 draws divergent: the default removes them." in c.interpretation
    assert study_rules.rule_contrast(rows[1], None).code == "contrast_inconclusive"
    assert study_rules.rule_contrast({**rows[1], "status": "failed", "sampling": None}, rows[0]).code == "contrast_failed"
    results = [{"header": {"group": g["group"], "description": g["description"], "T": 20, "title": g["group"]},
                "status": "ok", "verdict": g["verdict"], "sampling": {**g["sampling"], "ebfmi_per_chain": []}} for g in rows]
    text = summary_markdown(results, "r")
    assert "**Contrast.** The contrast run (group 6c, contrast), 60 of 200 draws divergent" in text


def test_element_draws_reads_the_elements_in_c_order_of_the_other_dimensions():
    rng = np.random.default_rng(4)
    values = rng.normal(size=(5, 3, 2, 4))  # (frame, chain, xyz, draw): sample dimensions not first
    da = xr.DataArray(values, dims=("frame", "chain", "xyz", "draw"))
    flat = np.array([7, 0, 3])  # (frame, xyz) = (3, 1), (0, 0), (1, 1)
    got = sampling.element_draws(da, flat)
    assert got.shape == (3, 4, 3)
    np.testing.assert_array_equal(got[:, :, 0], values[3, :, 1, :])
    np.testing.assert_array_equal(got[:, :, 2], values[1, :, 1, :])
    scalar = xr.DataArray(values[0, :, 0, :], dims=("chain", "draw"))  # a scalar variable: one element
    np.testing.assert_array_equal(sampling.element_draws(scalar, [0])[:, :, 0], values[0, :, 0, :])
    with pytest.raises(IndexError, match="one element"):
        sampling.element_draws(scalar, [1])
