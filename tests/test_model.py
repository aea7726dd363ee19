import itertools
import os
from pathlib import Path

import numpy as np
import pytensor
import pytest

from gimbal.model.cameras import triangulate_robust

from gimbal.datasets import load_dataset
from gimbal.diagnostics.checks import (
    compile_logp_and_grad,
    evaluate_at,
    finite_difference_check,
    gradient_report,
    safe_point_logps,
)
from gimbal.model.initialization import (InitializationError, check_initial_point, init_point_for,
                                        initialize_from_observations_dlt)
from gimbal.model.build import build_model


@pytest.mark.parametrize("use_mixture,use_hmm", list(itertools.product([False, True], repeat=2)))
def test_logp_and_gradient_finite_at_init_for_every_toggle(use_mixture, use_hmm):
    ds = load_dataset("v0.2.1_L02_outliers", max_T=30)
    model = build_model(ds, use_mixture=use_mixture, use_directional_hmm=use_hmm, n_states=2)
    logps = safe_point_logps(model)
    assert logps["finite"], logps["nonfinite_terms"]
    assert {"y_obs", "pose_prior", "temporal_prior"} <= set(logps["terms"])
    assert gradient_report(compile_logp_and_grad(model))["finite"]
    assert ("logodds_inlier" in model.named_vars) == use_mixture
    assert ("transition" in model.named_vars) == use_hmm


@pytest.mark.parametrize(
    "options",
    [
        dict(directions="explicit"),
        dict(state_params="learned", n_states=2),
        dict(scales="learned"),
        dict(freeze_latents="truth"),
        dict(freeze_latents="init", use_mixture=False),
    ],
)
def test_model_variants_are_finite(options):
    ds = load_dataset("v0.2.1_L00_minimal", max_T=20)
    model = build_model(ds, **options)
    assert safe_point_logps(model)["finite"]
    if options.get("freeze_latents"):
        assert "x" not in model.named_vars and "pose_prior" not in model.named_vars


def test_autodiff_gradient_matches_finite_differences():
    ds = load_dataset("v0.2.1_L02_outliers", max_T=20)
    model = build_model(ds, n_states=2, state_params="learned", scales="learned")
    # epsilon 1e-5: at 1e-6 the differences of this logp (~ -1700, a sum of thousands of terms) carry rounding errors
    # of several 1e-6 (measured: the error grows as epsilon shrinks, 2e-7 at 1e-4, 6e-6 at 1e-6, 2e-5 at 1e-7)
    report = finite_difference_check(compile_logp_and_grad(model), epsilon=1e-5, max_components=120, seed=1)
    assert report["n_checked"] == 120
    assert report["passed"], report["worst"][:3]


def _compiled_node_count(model):
    fn = model.compile_dlogp()
    return len(fn.f.maker.fgraph.apply_nodes)


def test_graph_size_does_not_grow_with_T():
    small = build_model(load_dataset("v0.2.1_L00_minimal", max_T=80), n_states=2, validate=False)
    large = build_model(load_dataset("v0.2.1_L00_minimal", max_T=1800), n_states=2, validate=False)
    symbolic = [len(pytensor.graph.traversal.io_toposort(m.value_vars, [m.logp()])) for m in (small, large)]
    assert symbolic[0] == symbolic[1]
    assert _compiled_node_count(small) == _compiled_node_count(large)


@pytest.mark.parametrize("options", [dict(n_states=2), dict(kernels="graph", n_states=2),
                                     dict(directions="explicit", scales="learned", state_params="learned", n_states=2)])
def test_the_logp_graph_holds_no_data_so_one_compilation_serves_every_recording(options):
    """The data and everything estimated from them enter as shared inputs, never as constants (a constant is part
    of the compiled function's identity, so PyTensor's numba cache would miss for every new recording): two
    recordings of different T and different values give graphs with the same constants and the same types."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor import TensorConstant

    def identity(ds):
        m = build_model(ds, validate=False, **options)
        nodes = list(ancestors([m.logp()]))
        consts = sorted(repr(np.asarray(v.data).tolist()) for v in nodes if isinstance(v, TensorConstant))
        shared = sorted((v.name, str(v.type)) for v in nodes if isinstance(v, SharedVariable))
        return consts, shared, {v.name: v for v in nodes if isinstance(v, SharedVariable)}

    a_consts, a_shared, a = identity(load_dataset("v0.2.1_L00_minimal", max_T=10))
    b_consts, b_shared, b = identity(load_dataset("v0.2.1_L01_noise", max_T=17))
    assert a_consts == b_consts and a_shared == b_shared
    assert max(len(c) for c in a_consts) < 200  # no array of data hides among the constants
    assert a["observations_filled"].get_value().shape[0] == 10 and b["observations_filled"].get_value().shape[0] == 17
    assert not np.allclose(a["observations_filled"].get_value(), b["observations_filled"].get_value()[:10])
    # the arrays of fixed size are slices of one vector per dtype (nutpie's per-process wrapper costs about half a
    # second per shared input): what is left is per-frame data, those vectors and PyMC's dimension lengths
    dims = set(load_dataset("v0.2.1_L00_minimal", max_T=10).dims) | {"bone", "xyz", "state", "state_to"}
    for name, v in a.items():
        assert name in dims or v.type.shape[0] is None, (name, v.type)
    assert {"data_float64", "data_int64"} <= set(a)


def test_is_data_tells_fixed_inputs_from_random_variables():
    import pymc as pm
    import pytensor.tensor as pt

    from gimbal.model._inputs import data_input, is_data

    with pm.Model():
        packed = data_input(np.arange(6.0).reshape(2, 3), "a")
        mu = pm.Normal("mu")
    assert packed.name == "a" and packed.type.shape == (2, 3)
    assert np.array_equal(packed.eval(), np.arange(6.0).reshape(2, 3))
    assert is_data(packed) and is_data(pt.log(packed)) and is_data(np.ones(2)) and is_data(2.0)
    assert not is_data(mu) and not is_data(packed * mu)


def test_missing_observations_contribute_exactly_zero():
    ds = load_dataset("v0.2.1_L00_minimal", max_T=10)
    holes = ds.copy(deep=True)
    obs = holes["observations"].values
    obs[3, 0, 2] = np.nan  # one detection missing in frame 3
    obs[5] = np.nan  # every detection missing in frame 5
    for mixture in (False, True):
        init = initialize_from_observations_dlt(ds)
        full = build_model(ds, use_mixture=mixture, init=init)
        holed = build_model(holes, use_mixture=mixture, init=init)
        point = full.initial_point()
        a, b = (evaluate_at(m, m["log_obs_t"], point) for m in (full, holed))
        assert b[5] == 0.0
        assert np.isfinite(b).all()
        np.testing.assert_allclose(np.delete(a, [3, 5]), np.delete(b, [3, 5]))
        assert b[3] > a[3]  # one fewer (negative) term, never NaN


def test_validation_gate_names_the_offending_terms():
    ds = load_dataset("v0.2.1_L00_minimal", max_T=10)
    model = build_model(ds, validate=False)
    point = model.initial_point()
    point["bone_length_log__"] = np.full_like(point["bone_length_log__"], np.nan)
    with pytest.raises(InitializationError, match="bone_length"):
        check_initial_point(model, point)


def test_initialization_is_close_to_truth_under_outliers():
    ds = load_dataset("v0.2.1_L02_outliers", max_T=200)
    init = initialize_from_observations_dlt(ds)
    truth = ds["positions_true"].values
    err = np.linalg.norm(init.positions - truth, axis=-1)
    raw = np.linalg.norm(triangulate_robust(np.moveaxis(ds["observations"].values, 1, 2), ds["camera_matrix"].values) - truth, axis=-1)
    assert np.median(err) < 0.5
    # temporal spike removal fixes the frames where two of three views are outliers
    assert np.percentile(err, 99) < 0.25 * np.percentile(raw, 99)
    np.testing.assert_allclose(init.values["bone_length"], [10, 8, 8], rtol=0.05)
    assert 1.6 < float(init.values["obs_sigma"]) < 2.6  # true noise: 2 px


def test_noncentered_root_is_the_same_posterior_over_positions():
    """Centered and non-centered root walks differ only by the constant Jacobian of steps -> positions."""
    ds = load_dataset("v0.2.1_L02_outliers", max_T=15)
    init = initialize_from_observations_dlt(ds, n_states=int(ds.attrs.get("n_states", 1)))
    centered = build_model(ds, init=init, steps="gaussian")
    noncentered = build_model(ds, init=init, root_dynamics="noncentered", steps="gaussian")
    assert "root_steps" in noncentered.named_vars and noncentered["x"] in noncentered.deterministics
    rng = np.random.default_rng(4)
    x = init.values["x"] + rng.normal(scale=0.3, size=init.values["x"].shape)
    step = float(init.values["step_sigma"][0])
    pc, pn = centered.initial_point(), noncentered.initial_point()
    pc["x"] = x
    pn["root_start"], pn["root_steps"], pn["x_nonroot"] = x[0, 0], np.diff(x[:, 0], axis=0) / step, x[:, 1:]
    lc = float(centered.compile_logp()(pc))
    ln = float(noncentered.compile_logp()(pn))
    T = x.shape[0]
    assert lc == pytest.approx(ln - 3 * (T - 1) * np.log(step), rel=1e-10)
    names = ("root_start", "root_steps", "x_nonroot")
    expr = noncentered.replace_rvs_by_values([noncentered["x"]])[0]
    positions = pytensor.function([noncentered.rvs_to_values[noncentered[n]] for n in names], expr)(*[pn[n] for n in names])
    np.testing.assert_allclose(positions, x, rtol=1e-12)
    report = finite_difference_check(compile_logp_and_grad(noncentered), max_components=60, seed=2)
    assert report["passed"], report["worst"][:3]
    with pytest.raises(ValueError, match="scales='fixed'"):
        build_model(ds, init=init, root_dynamics="noncentered", steps="gaussian", scales="learned")


def test_student_t_steps_change_only_the_random_walk():
    """steps='student_t' (the default): the model's logp differs from the Gaussian-step model's by exactly the two
    walks' difference (scipy's densities, with the default's and with 3 degrees of freedom), its gradient passes finite
    differences, and a burst costs far less than under Gaussian steps."""
    from scipy.stats import multivariate_normal, multivariate_t

    from gimbal.settings import STEP_DOF

    ds = load_dataset("v0.2.1_L02_outliers", max_T=15)
    init = initialize_from_observations_dlt(ds, n_states=int(ds.attrs.get("n_states", 1)))
    world = dict(init=init, step_frame="world")  # every keypoint's walk in the world (the parent frame: below)
    gauss, heavy = build_model(ds, steps="gaussian", **world), build_model(ds, **world)
    heavier = build_model(ds, steps_dof=3.0, **world)
    assert heavy.gimbal_config.steps == "student_t" and gauss.gimbal_config.steps == "gaussian"  # the default: Student-t
    assert heavy.gimbal_config.step_dof == STEP_DOF and heavier.gimbal_config.step_dof == 3.0
    x = init.values["x"].copy()
    x[8:, 1] += 8 * float(np.max(init.values["step_sigma"]))  # one keypoint jumps between frames 7 and 8
    point = {**gauss.initial_point(), "x": x}
    sigma = np.asarray(init.values["step_sigma"], float)
    d = np.diff(x, axis=0)
    lg = float(gauss.compile_logp()(point))
    for model, dof in ((heavy, STEP_DOF), (heavier, 3.0)):
        walks = [sum(dist(np.zeros(3), s**2 * np.eye(3), **kw).logpdf(d[:, k]).sum() for k, s in enumerate(sigma))
                 for dist, kw in ((multivariate_normal, {}), (multivariate_t, {"df": dof}))]
        assert float(model.compile_logp()(point)) - lg == pytest.approx(walks[1] - walks[0], rel=1e-9, abs=1e-6)
        jump = d[7, 1]
        burst = [dist(np.zeros(3), sigma[1] ** 2 * np.eye(3), **kw).logpdf(jump) for dist, kw in
                 ((multivariate_normal, {}), (multivariate_t, {"df": dof}))]
        assert burst[1] - burst[0] > 5  # the Student-t lets the burst through
    report = finite_difference_check(compile_logp_and_grad(heavy, point), max_components=60, seed=2)
    assert report["passed"], report["worst"][:3]
    with pytest.raises(ValueError, match="steps='gaussian'"):
        build_model(ds, init=init, root_dynamics="noncentered")
    with pytest.raises(ValueError, match="steps must be one of"):
        build_model(ds, init=init, steps="laplace")
    with pytest.raises(ValueError, match="steps_dof must be a positive number"):
        build_model(ds, init=init, steps_dof=0.0)


def test_steps_relative_to_the_parent_change_only_the_random_walk():
    """step_frame='parent' / 'auto': the model's logp differs from the world-frame model's by exactly the two walks'
    difference (scipy's multivariate_t on the change of each keypoint's vector from its parent, the root's in the
    world); 'auto' takes the parent frame where that step size is the smaller; the gradient passes finite
    differences; a relative step's scale is fitted to those vectors' steps (on an animal that moves as a whole it is
    a fraction of the world step)."""
    from scipy.stats import multivariate_t

    from gimbal.settings import STEP_DOF

    ds = load_dataset("rodent18_realistic", max_T=40)
    init = initialize_from_observations_dlt(ds, step_dof=STEP_DOF)
    parents = ds["parents"].values
    world_s, parent_s = init.values["step_sigma"], init.values["step_sigma_parent"]
    assert parent_s[0] == world_s[0]  # the root steps in the world either way
    assert np.median(parent_s[1:] / world_s[1:]) < 0.6  # the rodent walks and turns as a whole
    models = {f: build_model(ds, init=init, step_frame=f) for f in ("world", "parent", "auto")}
    assert not models["world"].gimbal_step_relative.any()
    np.testing.assert_array_equal(models["parent"].gimbal_step_relative, parents >= 0)
    np.testing.assert_array_equal(models["auto"].gimbal_step_relative, (parents >= 0) & (parent_s < world_s))
    point = models["world"].initial_point()
    x = point["x"]

    def walk(relative):
        r = x.copy()
        r[:, relative] = x[:, relative] - x[:, parents[relative]]
        d, s = np.diff(r, axis=0), np.where(relative, parent_s, world_s)
        return sum(multivariate_t(np.zeros(3), s[k] ** 2 * np.eye(3), df=STEP_DOF).logpdf(d[:, k]).sum()
                   for k in range(len(s)))

    lw = float(models["world"].compile_logp()(point))
    world_walk = walk(np.zeros(len(parents), bool))
    for frame in ("parent", "auto"):
        rel = models[frame].gimbal_step_relative
        assert float(models[frame].compile_logp()(point)) - lw == pytest.approx(walk(rel) - world_walk, rel=1e-9,
                                                                                  abs=1e-6)
    report = finite_difference_check(compile_logp_and_grad(models["parent"], point), max_components=60, seed=3)
    assert report["passed"], report["worst"][:3]
    with pytest.raises(ValueError, match="step_frame must be one of"):
        build_model(ds, init=init, step_frame="body")


def test_parallel_hmm_model_equals_the_sequential_one(python_mode):
    """hmm_algorithm='parallel' (for GPUs) is the same density as the frame-by-frame forward algorithm."""
    ds = load_dataset("rodent18_multistate", max_T=11)  # not a power of two: the tree pads its last level
    init = initialize_from_observations_dlt(ds, n_states=int(ds.attrs["n_states"]))
    assert init.pose_states.n_states > 1  # the HMM is in the model
    seq = build_model(ds, init=init, kernels="graph", validate=False)
    par = build_model(ds, init=init, kernels="graph", hmm_algorithm="parallel", validate=False)
    point = seq.initial_point()
    point["x"] = point["x"] + np.random.default_rng(5).normal(scale=0.2, size=point["x"].shape)
    # the two graphs compared by PyTensor's Python implementations: the same arithmetic without a numba compile of
    # each (the parallel form is the JAX backend's; tests/test_jax_backend.py compiles it there)
    values = [m.compile_logp(mode=python_mode)(point) for m in (seq, par)]
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    grads = [m.compile_dlogp(vars=[m["x"]], mode=python_mode)(point) for m in (seq, par)]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="kernels='graph'"):
        build_model(ds, init=init, hmm_algorithm="parallel")
    with pytest.raises(ValueError, match="hmm_algorithm"):
        build_model(ds, init=init, kernels="graph", hmm_algorithm="tree")


def test_student_t_likelihood_matches_scipy_and_replaces_the_mixture():
    """outlier_model='student_t': scipy's multivariate_t density, no inlier log-odds, exact gradient."""
    import pytensor.tensor as pt
    from scipy.stats import multivariate_t

    from gimbal.model.observation import STUDENT_T_DOF, student_t_2d_logp

    resid = np.array([[0.5, -1.0], [12.0, 5.0], [400.0, -250.0]])
    ours = pytensor.function([], student_t_2d_logp(pt.as_tensor((resid**2).sum(-1)), 2.5))()
    ref = multivariate_t(loc=[0.0, 0.0], shape=2.5**2 * np.eye(2), df=STUDENT_T_DOF).logpdf(resid)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    ds = load_dataset("v0.2.1_L02_outliers", max_T=12)
    model = build_model(ds, kernels="graph", outlier_model="student_t")
    assert "logodds_inlier" not in model.named_vars and "obs_sigma" in model.named_vars
    report = finite_difference_check(compile_logp_and_grad(model), max_components=60, seed=3)
    assert report["passed"], report["worst"][:3]
    with pytest.raises(ValueError, match="kernels='graph'"):
        build_model(ds, outlier_model="student_t")
    with pytest.raises(ValueError, match="outlier_model"):
        build_model(ds, kernels="graph", outlier_model="cauchy")


def test_freezing_at_a_truth_with_gaps_uses_the_initialization_where_markers_were_lost(minimal80):
    """Real motion capture loses markers (NaN): group 7's frozen positions must stay finite."""
    from gimbal.datasets import truncate
    from gimbal.model.build import build_model

    ds = truncate(minimal80, max_T=12).copy(deep=True)
    ds["positions_true"].values[3:6, 2] = np.nan
    model = build_model(ds, freeze_latents="truth")  # validates the start point (raises when not finite)
    from gimbal.diagnostics.checks import evaluate_at

    per_frame = np.asarray(evaluate_at(model, model["log_obs_t"]))
    assert per_frame.shape == (12,) and np.isfinite(per_frame).all()
    assert np.isfinite(model.compile_logp()(model.initial_point()))


def test_skeleton_consistent_triangulation_breaks_ties_between_camera_subsets():
    """An elbow seen at a wrong but self-consistent place by 3 of 6 cameras: the bone lengths decide."""
    from gimbal.model.cameras import project
    from gimbal.model.initialization import triangulate_sequence

    ds = load_dataset("rodent18_multistate", max_T=120).copy(deep=True)
    truth = ds["positions_true"].values
    k = list(ds["keypoint"].values).index("ElbowL")
    parent = int(ds["parents"].values[k])
    bone = np.median(np.linalg.norm(truth[:, k] - truth[:, parent], axis=-1))
    # the wrong point: 1.5 bone lengths further along the bone, seen (with the usual noise) by cameras 0-2 in
    # runs covering 3/4 of the frames (so most frames' plain choice has the wrong length)
    bad = (np.arange(ds.sizes["frame"]) // 10) % 4 != 0
    wrong = truth[bad, k] + 1.5 * (truth[bad, k] - truth[bad, parent])
    obs = ds["observations"].values
    noise = obs[bad, :3, k] - project(truth[bad, k][:, None], ds["camera_matrix"].values[:3])[:, :, 0]
    obs[bad, :3, k] = project(wrong[:, None], ds["camera_matrix"].values[:3])[:, :, 0] + np.nan_to_num(noise)
    ds["observations"].values[:] = obs
    plain = np.linalg.norm(triangulate_sequence(ds, skeleton_consistent=False)[:, k] - truth[:, k], axis=-1)
    consistent = np.linalg.norm(triangulate_sequence(ds)[:, k] - truth[:, k], axis=-1)
    # a 3-3 tie: the plain consensus often takes the wrong side; the bones decide it (the frames left are those
    # where the recording's own outliers or gaps leave the right side fewer than two cameras)
    assert np.mean(plain[bad] > 0.5 * bone) > 0.2
    assert np.mean(consistent[bad] > 0.5 * bone) < 0.25 * np.mean(plain[bad] > 0.5 * bone)
    # elsewhere the cameras agree: all but the few points where the recording's own outliers made a tie change
    other = [j for j in range(ds.sizes["keypoint"]) if j not in (k, parent) and ds["parents"].values[j] != k]
    moved = np.linalg.norm(triangulate_sequence(ds)[:, other] - triangulate_sequence(ds, skeleton_consistent=False)[:, other], axis=-1)
    assert np.mean(moved > 1e-9) < 0.005


def test_a_pose_state_no_frame_visits_leaves_no_flat_start():
    """5 frames of rodent18_realistic, 4 pose states: the transition rows of states no frame visits sit at their
    Dirichlet prior's mode, where the gradient is zero but for round-off (1e-16, which a run's summation order made
    exactly 0 or not: the start gate refused one cold test run). build_model moves just those unconstrained
    components by FLAT_NUDGE, and their gradient is then clearly non-zero."""
    from gimbal.diagnostics.checks import compile_logp_and_grad
    from gimbal.model import build
    from gimbal.model.initialization import FLAT_NUDGE

    ds = load_dataset("rodent18_realistic", max_T=5)

    def transition_gradient(model):
        point = model.initial_point()
        checker = compile_logp_and_grad(model, point)
        grad, offset = checker.dlogp(checker.flatten(point)), 0
        for name, _, size, _ in checker.template.point_map_info:
            if name == "transition_simplex__":
                return point[name].ravel(), grad[offset:offset + size]
            offset += size

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "off_exact_zeros", lambda model, init, checker: init)
        before, flat = transition_gradient(build.build_model(ds, step_frame="world", validate=False))
    after, grad = transition_gradient(build.build_model(ds, step_frame="world"))
    moved = np.abs(flat) < 1e-12
    assert 0 < moved.sum() < moved.size  # measured: 3 of 12
    np.testing.assert_allclose(after[moved] - before[moved], FLAT_NUDGE)
    np.testing.assert_allclose(after[~moved], before[~moved], rtol=1e-12)  # through the simplex transform and back
    assert np.abs(grad).min() > 1e-3


def test_initial_scales_are_net_of_triangulation_noise():
    """L00: 2 px detection noise, bone jitter 0.1 per axis; a reconstruction's own noise must not be read as motion."""
    from gimbal.datasets import skeleton_of

    ds = load_dataset("v0.2.1_L00_minimal", max_T=200)
    init = initialize_from_observations_dlt(ds)
    assert float(init.values["obs_sigma"]) == pytest.approx(2.0, rel=0.1)  # residuals corrected for the fitted point
    truth = ds["positions_true"].values
    jitter = np.std(np.linalg.norm(skeleton_of(ds).bone_vectors(truth), axis=-1), axis=0)  # ~0.1
    ratio = init.values["bone_sigma"] / jitter
    assert np.all((0.5 < ratio) & (ratio < 2.0)), ratio  # the raw spread of triangulated lengths is 2-5x
    step_true = np.std(np.diff(truth, axis=0), axis=(0, 2))
    np.testing.assert_allclose(init.values["step_sigma"], step_true, rtol=0.25)
    student = initialize_from_observations_dlt(ds, step_dof=10.0)  # the default model's steps: Student-t, 10 dof
    np.testing.assert_allclose(student.values["step_sigma"], step_true, rtol=0.25)


def test_student_t_step_scale_is_its_maximum_likelihood_scale():
    """With Student-t steps the step size is the scale that distribution fits best (scipy's density, maximized by
    scipy), which for a keypoint that mostly holds still and moves in bursts is larger than the median step's."""
    from scipy import optimize, stats

    from gimbal.model.initialization import _step_scale_fit

    rng = np.random.default_rng(0)
    bursty = np.concatenate([rng.normal(scale=0.05, size=(170, 3)), rng.normal(scale=1.0, size=(30, 3))])
    dof = 10.0

    def nll(log_s):
        return -stats.multivariate_t(loc=np.zeros(3), shape=np.exp(2 * log_s) * np.eye(3), df=dof).logpdf(bursty).sum()

    best = np.exp(optimize.minimize_scalar(nll, bounds=(-8, 2), method="bounded", options={"xatol": 1e-10}).x)
    with_gap = np.concatenate([bursty, np.full((5, 3), np.nan)])[:, None]  # (N, K=1, 3) with unknown steps
    fitted = _step_scale_fit(with_gap, dof)
    assert fitted[0] == pytest.approx(best, rel=1e-5)
    assert fitted[0] > 1.5 * _step_scale_fit(with_gap, None)[0]  # the median step sees the stance only
    gaussian = rng.normal(scale=0.3, size=(4000, 1, 3))  # steady motion: both follow the sd
    assert _step_scale_fit(gaussian, dof)[0] == pytest.approx(0.3, rel=0.1)
    # the median step over sqrt(3), as before: a 3D Gaussian step's median length is 1.538 sd, so 0.888 sd
    assert _step_scale_fit(gaussian, None)[0] == pytest.approx(0.3 * 1.538 / np.sqrt(3), rel=0.05)
    assert np.isnan(_step_scale_fit(np.full((4, 1, 3), np.nan), dof)).all()  # never triangulated twice in a row


def test_student_t_step_scale_skips_steps_to_points_the_cameras_dispute():
    from gimbal.model.initialization import MIN_AGREED_STEPS, _agreed_steps

    agreed = np.ones((12, 2), bool)
    agreed[3, 0] = False  # keypoint 0: the steps into and out of frame 3 may be a wrong choice's jump
    agreed[2:, 1] = False  # keypoint 1: one agreed step, fewer than MIN_AGREED_STEPS: all of its steps count
    steps = np.arange(11 * 2 * 3, dtype=float).reshape(11, 2, 3)
    kept = _agreed_steps(steps, agreed)
    assert np.isnan(kept[[2, 3], 0]).all()
    assert np.array_equal(np.delete(kept[:, 0], [2, 3], 0), np.delete(steps[:, 0], [2, 3], 0))
    assert MIN_AGREED_STEPS > 1 and np.array_equal(kept[:, 1], steps[:, 1])


@pytest.mark.network
def test_a_fast_movement_every_camera_agrees_on_is_not_a_spike():
    """DeepFly3D without `cam2`: the left hind leg, seen by `cam0` and `cam1` only, swings up to 2.3 mm per frame
    in frames 11-13 (the tarsus tip, whose median step is 0.2 mm). The start keeps it where the two
    cameras agree to within 4 px: the temporal spike removal had interpolated over the swing, 0.8-1.9 mm off, and
    every chain stayed there."""
    from gimbal.datasets import DeepFly3DUnavailable
    from gimbal.model.initialization import triangulate_sequence

    try:
        ds = load_dataset("deepfly3d")
    except DeepFly3DUnavailable as exc:
        pytest.skip(f"offline: {exc}")
    rest = ds.sel(camera=[c for c in ds["camera"].values if c != "cam2"])
    both = triangulate_robust(np.moveaxis(rest["observations"].values, 1, 2), rest["camera_matrix"].values)
    leg = [list(ds["keypoint"].values).index(f"LH_{j}") for j in ("FemurTibia", "TibiaTarsus", "TarsusTip")]
    swing = np.linalg.norm(both[11:15, leg] - both[10:14, leg], axis=-1)
    assert swing.max() > 1.0 and np.isfinite(rest["observations"].values[11:14, :, leg, 0]).sum(1).max() == 2
    start = triangulate_sequence(rest)
    assert np.linalg.norm(start[11:14, leg] - both[11:14, leg], axis=-1).max() < 0.01


def test_continuous_track_keeps_the_explanation_of_the_frames_around_a_tie():
    """Per frame, a wrong candidate with a hair more support wins; the track through frames keeps the right one,
    uses the fallback where no candidate is usable, and still takes a jump that many cameras support."""
    from gimbal.model.initialization import continuous_track

    T = 40
    truth = np.stack([np.arange(T, dtype=float), np.zeros(T), np.zeros(T)], axis=-1)  # 1 mm per frame
    truth[30:] += [15.0, 0.0, 0.0]  # a real, fast move at frame 30
    points = np.stack([truth, truth + [0.0, 20.0, 0.0]])  # (2, T, 3): the truth and a wrong explanation 20 mm off
    score = np.stack([np.full(T, 3.0), np.full(T, -np.inf)])
    score[1, 10:15] = 3.2  # frames 10-14: three cameras for each, the wrong side a little tighter
    score[:, 20:23] = -np.inf  # frames 20-22: no usable pair
    score[0, 30:] = 6.0  # after the move every camera agrees...
    score[1, 30:], points[1, 30:] = 2.0, truth[29]  # ...and two still see the old place
    fallback = truth + [0.0, 0.0, 0.5]
    track = continuous_track(points, score, fallback, step=1.0)
    per_frame = points[np.argmax(score, axis=0), np.arange(T)]
    assert np.all(np.linalg.norm(per_frame[10:15] - truth[10:15], axis=-1) > 19)  # the per-frame choice is wrong
    np.testing.assert_allclose(track[10:15], truth[10:15])
    np.testing.assert_allclose(track[20:23], fallback[20:23])
    np.testing.assert_allclose(track[30:], truth[30:])
    np.testing.assert_allclose(track[:10], truth[:10])
    never = np.full((T, 3), np.nan)  # a keypoint no pair ever triangulated stays NaN (filled in later)
    assert np.isnan(continuous_track(points, np.full((2, T), -np.inf), never, step=1.0)).all()


def test_the_track_through_frames_corrects_a_swap_the_bones_cannot_see():
    """A knee seen by 3 of 6 cameras at a wrong place as far from its parent as the true one, for runs of 4 frames:
    the skeleton cannot break that tie, the frames around it do."""
    from gimbal.model.cameras import project
    from gimbal.model.initialization import triangulate_sequence

    ds = load_dataset("rodent18_multistate", max_T=120).copy(deep=True)
    truth = ds["positions_true"].values
    k = list(ds["keypoint"].values).index("KneeL")
    parent = int(ds["parents"].values[k])
    bad = (np.arange(ds.sizes["frame"]) % 12) >= 8  # runs of 4 wrong frames every 12
    bone = truth[bad, k] - truth[bad, parent]
    wrong = truth[bad, parent] + bone * [-1.0, -1.0, 1.0]  # the bone turned by 180 degrees about the vertical
    obs = ds["observations"].values
    noise = obs[bad, :3, k] - project(truth[bad, k][:, None], ds["camera_matrix"].values[:3])[:, :, 0]
    obs[bad, :3, k] = project(wrong[:, None], ds["camera_matrix"].values[:3])[:, :, 0] + np.nan_to_num(noise) * 0.5
    ds["observations"].values[:] = obs
    per_frame = np.linalg.norm(triangulate_sequence(ds, temporal=False)[:, k] - truth[:, k], axis=-1)
    tracked = np.linalg.norm(triangulate_sequence(ds)[:, k] - truth[:, k], axis=-1)
    far = 0.5 * np.median(np.linalg.norm(bone, axis=-1))
    # measured: 0.43 of the swapped points wrong frame by frame, 0.20 as tracks. This knee moves ~10 mm per frame
    # against a ~30 mm swap, so a jump costs under 2 cameras and short runs with a lost right side still go wrong
    assert np.mean(per_frame[bad] > far) > 0.3
    assert np.mean(tracked[bad] > far) < 0.5 * np.mean(per_frame[bad] > far)


def test_sparse_frames_are_cleaned_by_the_skeleton_not_by_time():
    """Frames far apart in time: a point far off its bone and a missing root are replaced from the skeleton, a child
    of a replaced point that the bones allow is kept, and every other point is left exactly as it was."""
    from gimbal.model.initialization import _skeleton_cleaned

    rng = np.random.default_rng(0)
    T = 30
    parents = np.array([-1, 0, 1, 0, 0, 0, 0])  # a root with five children; keypoint 2 is the child of 1
    lengths = np.array([0.0, 10.0, 6.0, 8.0, 8.0, 12.0, 12.0])
    x = np.zeros((T, 7, 3))
    x[:, 0] = rng.normal(0.0, 50.0, (T, 3))  # the animal anywhere, in any posture: no temporal order
    for k in range(1, 7):
        u = rng.normal(size=(T, 3))
        x[:, k] = x[:, parents[k]] + lengths[k] * u / np.linalg.norm(u, axis=-1, keepdims=True)
    dirty = x.copy()
    dirty[5, 1] += [100.0, 0.0, 0.0]  # a wrong point, 10 bones away (its child's bone now ~100 long too)
    dirty[7, 0] = np.nan  # the root missing
    dirty[9, 2] = np.nan  # a leaf missing
    clean = _skeleton_cleaned(dirty, parents)
    assert np.isfinite(clean).all()
    assert np.linalg.norm(clean[5, 1] - clean[5, 0]) <= 2 * lengths[1]  # replaced: near its parent
    np.testing.assert_array_equal(clean[5, 2], x[5, 2])  # its child is within the two bones of the root: kept
    assert np.linalg.norm(clean[7, 0] - x[7, 0]) <= 2 * lengths.max()  # the root from the other points
    assert abs(np.linalg.norm(clean[9, 2] - clean[9, 1]) - lengths[2]) < 0.5  # one (median) bone from its parent
    untouched = np.ones((T, 7), dtype=bool)
    untouched[5, 1] = untouched[7, 0] = untouched[9, 2] = False
    np.testing.assert_array_equal(clean[untouched], x[untouched])


DANNCE = Path(os.environ.get("GIMBAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "dannce_markerless_mouse"


@pytest.mark.skipif(not DANNCE.is_dir(), reason=f"DANNCE labelled mice not found at {DANNCE}")
def test_sparse_labelled_frames_start_closer_to_their_3d_labels(monkeypatch):
    """DANNCE mouse 2's labelled frames (sparse over the video) with detector-like errors: the start judged by the
    skeleton is closer to the manual 3D labels, in mean and p90, than the temporal clean-up it replaces (which
    compared frames seconds apart). Measured on seeds 0-2 of both mice: mean 2.5-3.4 mm against 4.2-6.3."""
    import sys

    import gimbal.model.initialization as initialization
    from gimbal.io.label3d import load_label3d

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's benchmarks/ package
    from benchmarks.prior_transfer import detector_errors

    ds = detector_errors(load_label3d(DANNCE / "markerless_mouse_2" / "label3d_dannce.mat",
                                      DANNCE / "mouse22_skeleton.mat"), seed=0)
    truth = ds["positions_true"].values

    def errors(points):
        err = np.linalg.norm(points - truth, axis=-1)
        return np.nanmean(err), np.nanpercentile(err, 90)

    assert ds.attrs["frames_consecutive"] == 0
    skeleton = errors(initialization.triangulate_sequence(ds))
    monkeypatch.setattr(initialization, "_skeleton_cleaned", lambda points, parents: initialization._cleaned(points))
    temporal = errors(initialization.triangulate_sequence(ds))
    assert skeleton[0] < 0.75 * temporal[0] and skeleton[1] < temporal[1], (skeleton, temporal)


def test_random_walk_map_is_the_minimum_of_its_objective():
    """The smoothed track against scipy's minimizer on the same quadratic (points with information, random walk)."""
    from scipy.optimize import minimize

    from gimbal.model.initialization import _random_walk_map

    rng = np.random.default_rng(4)
    T, step = 12, 0.3
    points = np.cumsum(rng.normal(0, 1.0, (T, 3)), axis=0)
    a = rng.normal(0, 1, (T, 3, 3))
    info = np.einsum("tij,tkj->tik", a, a) + 0.1 * np.eye(3)
    info[4:7] = 0.0  # three frames without information: interpolated by the random walk

    def objective(flat):
        x = flat.reshape(T, 3)
        r, d = x - points, np.diff(x, axis=0)
        grad = np.einsum("tij,tj->ti", info, r)
        grad[1:] += d / step**2
        grad[:-1] -= d / step**2
        return 0.5 * np.einsum("ti,tij,tj->", r, info, r) + 0.5 * np.sum(d**2) / step**2, grad.ravel()

    ours = _random_walk_map(points, info, step)
    ref = minimize(objective, points.ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": 50000, "ftol": 1e-15, "gtol": 1e-11}).x
    np.testing.assert_allclose(ours, ref.reshape(T, 3), atol=1e-6)
    assert objective(ours.ravel())[0] <= objective(ref)[0] + 1e-9


def test_smoothed_start_agrees_with_the_priors_it_starts_from():
    """``start="smoothed"``: bone lengths exactly the starting ones, a far higher temporal-prior and total log density
    than the tracks (the default start); a bad value names the choices."""
    ds = load_dataset("v0.2.1_L02_outliers", max_T=60)
    tracks = build_model(ds)
    smooth = build_model(ds, start="smoothed")
    assert tracks.gimbal_config.start == "tracks" and tracks.gimbal_init.start == "tracks"
    assert smooth.gimbal_config.start == "smoothed" and smooth.gimbal_init.start == "smoothed"
    x = smooth.gimbal_init.positions
    lengths = np.linalg.norm(x[:, 1:] - x[:, ds["parents"].values[1:]], axis=-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(smooth.gimbal_init.values["bone_length"], lengths.shape), rtol=1e-9)
    np.testing.assert_array_equal(tracks.gimbal_init.positions, initialize_from_observations_dlt(ds).positions)
    a, b = (m.point_logps(init_point_for(m, m.gimbal_init), round_vals=6) for m in (tracks, smooth))
    assert b["temporal_prior"] > a["temporal_prior"] and sum(b.values()) > sum(a.values())
    truth = ds["positions_true"].values
    err = [np.median(np.linalg.norm(m.gimbal_init.positions - truth, axis=-1)) for m in (tracks, smooth)]
    assert err[1] < 1.5 * err[0]  # still the data's positions, not the prior's
    with pytest.raises(ValueError, match="start must be one of"):
        build_model(ds, start="triangulated")


def test_finite_difference_check_is_not_fooled_by_the_rounding_noise_of_a_large_logp():
    """The seed's T = 20 model (group 2's quick run): its logp, summed from many terms, carries ~1e-11 of rounding
    noise, so central differences at eps = 1e-6 miss the (correct) gradient by up to ~5e-6 on some positions; the
    check must not call that a wrong gradient, and must agree with differences at a 10x larger step."""
    from gimbal.datasets import truncate
    from gimbal.divergence.groups import _spec, resolve_settings
    from gimbal.model.initialization import init_point_for

    settings = resolve_settings("2", "quick")
    ds = truncate(load_dataset("v0.2.1_L00_minimal"), max_T=settings["max_T"])
    model = build_model(ds, seed=123, validate=False, **dict(_spec("2").model))
    point = init_point_for(model, model.gimbal_init)
    report = finite_difference_check(compile_logp_and_grad(model, point), point, max_components=300, seed=123)
    assert report["passed"], report["worst"][:3]
    rows = report["worst"]
    assert any(r["abs_error"] > r["tolerance"] for r in rows)  # the noise is there at eps = 1e-6 alone ...
    assert all(r["abs_error_10eps"] <= 1e-6 * max(1.0, abs(r["grad"])) for r in rows)  # ... and gone at 10 eps
