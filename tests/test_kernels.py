"""The fused numba kernels against the plain PyTensor graphs, brute force and finite differences."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import logsumexp

from gimbal.datasets import load_dataset
from gimbal.diagnostics.checks import compile_logp_and_grad, finite_difference_check
from gimbal.model.distributions import hmm_forward_logp, marginal_bone_logp
from gimbal.model.kernels import bone_emission_logp, hmm_logp, observation_logp
from gimbal.model.build import build_model, project_points

# the numba dispatch (nutpie) and the Op's Python `perform` (PyMC's default backend; the
# whole-model test below runs through `perform` for all three kernels)
MODES = ["NUMBA", "FAST_COMPILE"]


def _compare(inputs, ref, new, wrt, cotangent_shape, args, mode, rtol=1e-10):
    """Values and vector-Jacobian products of two graphs agree."""
    g = pt.tensor("g", shape=(None,) * len(cotangent_shape))
    grads = lambda out: pytensor.grad((g * out).sum(), wrt)  # noqa: E731
    f = pytensor.function([*inputs, g], [ref, new, *grads(ref), *grads(new)], mode=mode)
    cot = np.random.default_rng(5).normal(size=cotangent_shape)
    out = f(*args, cot)
    np.testing.assert_allclose(out[1], out[0], rtol=rtol, atol=1e-9)
    n = len(wrt)
    for a, b in zip(out[2 : 2 + n], out[2 + n :]):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10 * max(1.0, np.abs(a).max()))


@pytest.fixture(scope="module")
def rodent():
    ds = load_dataset("rodent18_multistate", max_T=40)  # 6 cameras, outliers and missing detections
    assert np.isnan(ds["observations"].values).any()
    return ds


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind, per_frame", [("uniform", True), ("gaussian", True), ("none", True),
                                             ("uniform", False), ("gaussian", False)])
def test_observation_kernel_matches_graph(rodent, kind, per_frame, mode):
    """Per-(camera, keypoint) noise, each outlier class, log-odds per detection or the same in every frame (computed
    once per pair in the kernel): values and gradients."""
    obs, cams = rodent["observations"].values, rodent["camera_matrix"].values
    seen = np.all(np.isfinite(obs), axis=-1)
    y = np.where(seen[..., None], obs, 0.0)
    T, C, K = seen.shape
    x, omega = pt.dtensor3("x"), pt.dmatrix("omega")
    logodds = pt.dtensor3("logodds") if per_frame else pt.dmatrix("logodds")
    lo = logodds if per_frame else logodds[None]
    if kind == "gaussian":
        outlier = np.linspace(150.0, 250.0, C)[:, None] * np.ones((1, K))
    else:
        outlier = -np.log(rodent["image_size"].values.prod(axis=-1))[:, None] * np.ones((1, K))
    resid2 = pt.sum((project_points(x, cams) - y) ** 2, -1)
    log_normal = -0.5 * resid2 / omega[None] ** 2 - 2 * pt.log(omega[None]) - np.log(2 * np.pi)
    if kind == "none":
        per = log_normal
    else:
        out = (-0.5 * resid2 / outlier**2 - 2 * np.log(outlier) - np.log(2 * np.pi)) if kind == "gaussian" else outlier
        per = pt.logaddexp(-pt.softplus(-lo) + log_normal, -pt.softplus(lo) + out)
    ref = pt.where(seen, per, 0.0).sum(axis=(1, 2))
    new = observation_logp(x, omega, logodds, cams, obs, outlier, kind)
    if not per_frame:
        assert new.owner.inputs[2].type.shape[0] == 1  # passed on once, not per frame
    rng = np.random.default_rng(0)
    # perturbed positions put some detections on either side of the inlier/outlier boundary; log-odds of both signs
    args = [rodent["positions_true"].values + rng.normal(scale=2.0, size=(T, K, 3)),
            rng.uniform(1.5, 4.0, size=(C, K)), rng.normal(1.0, 2.0, size=(T, C, K) if per_frame else (C, K))]
    wrt = [x, omega] if kind == "none" else [x, omega, logodds]
    _compare([x, omega, logodds], ref, new, wrt, (T,), args, mode)


def test_mixture_with_per_detection_odds_at_extremes():
    """The per-detection mixture (two exponentials, one logarithm) against scipy's log-sigmoid and logaddexp, over
    class densities and log-odds far apart in both directions (both weights underflow in the corners)."""
    from scipy.special import expit, log_expit

    from gimbal.model.kernels import _mixture_with_odds

    for a, b, lo in itertools.product([-900.0, -40.0, -1.0, 0.0, 2.5, 60.0, 850.0], [-3.0, 0.0, 5.0],
                                      [-800.0, -40.0, -3.0, 0.0, 0.7, 40.0, 760.0]):
        ref = np.logaddexp(a + log_expit(lo), b + log_expit(-lo))
        value, resp, s = _mixture_with_odds(a, b, lo)
        assert np.isfinite(value)
        np.testing.assert_allclose(value, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(resp, np.exp(a + log_expit(lo) - ref), rtol=1e-9, atol=1e-300)
        np.testing.assert_allclose(s, expit(lo), rtol=1e-12, atol=1e-300)


def _random_hmm(rng, T, S):
    return (
        rng.normal(scale=3.0, size=(T, S)),
        np.log(rng.dirichlet(np.ones(S))),
        np.log(rng.dirichlet(np.ones(S), size=S)),
    )


def test_hmm_kernel_matches_scan_graph(mode="NUMBA"):
    E, init, A = (pt.dmatrix(), pt.dvector(), pt.dmatrix())
    args = _random_hmm(np.random.default_rng(1), 300, 4)
    _compare([E, init, A], hmm_forward_logp(E, init, A), hmm_logp(E, init, A), [E, init, A], (), args, mode)


@pytest.mark.parametrize("T,S", [(1, 2), (3, 3), (6, 2)])
def test_hmm_kernel_matches_brute_force_and_finite_differences(T, S):
    E, init, A = _random_hmm(np.random.default_rng(T + 7 * S), T, S)
    brute = logsumexp(
        [
            init[p[0]] + E[0, p[0]] + sum(A[p[t - 1], p[t]] + E[t, p[t]] for t in range(1, T))
            for p in itertools.product(range(S), repeat=T)
        ]
    )
    e, i, a = pt.dmatrix(), pt.dvector(), pt.dmatrix()
    out = hmm_logp(e, i, a)
    f = pytensor.function([e, i, a], [out, *pytensor.grad(out, [e, i, a])], mode="NUMBA")
    value, *grads = f(E, init, A)
    assert value == pytest.approx(brute, rel=1e-12)
    h = 1e-6
    for k, arr in enumerate((E, init, A)):  # central differences on every component
        for idx in np.ndindex(arr.shape):
            up, down = [v.copy() for v in (E, init, A)], [v.copy() for v in (E, init, A)]
            up[k][idx] += h
            down[k][idx] -= h
            fd = (f(*up)[0] - f(*down)[0]) / (2 * h)
            assert grads[k][idx] == pytest.approx(fd, abs=1e-7)


def test_bone_emission_kernel_matches_graph(mode="NUMBA"):
    rng = np.random.default_rng(2)
    T, K, S = 30, 6, 3
    children, parents = np.array([1, 2, 3, 4, 5]), np.array([0, 1, 2, 1, 4])
    B = len(children)
    x, rho, sigma, mean, kappa = pt.dtensor3(), pt.dvector(), pt.dvector(), pt.dtensor3(), pt.dmatrix()
    delta = (x[:, children] - x[:, parents])[:, None]
    ref = marginal_bone_logp(delta, rho, sigma, mean[None], kappa[None]).sum(-1)
    new = bone_emission_logp(x, children, parents, rho, sigma, mean, kappa)
    mu = rng.normal(size=(S, B, 3))
    mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
    kap = np.exp(rng.normal(scale=2.0, size=(S, B)))
    kap[0, 0], kap[1, 1] = 1e-7, 3e-5  # the small-kappa series branch and its neighbourhood
    args = [rng.normal(size=(T, K, 3)), rng.uniform(0.5, 2, B), rng.uniform(0.1, 1, B), mu, kap]
    wrt = [x, rho, sigma, mean, kappa]
    _compare([x, rho, sigma, mean, kappa], ref, new, wrt, (T, S), args, mode, rtol=1e-9)


@pytest.mark.parametrize("options", [
    dict(),
    dict(state_params="learned", scales="learned"),
    dict(observation="camera_keypoint", outlier_model="gaussian", confidence=True),
])
def test_fused_model_equals_graph_model(rodent, options, python_mode):
    """The whole model: same log-density and gradient with either implementation.

    The fused model runs as sampled (numba); the plain-graph reference is evaluated by PyTensor's Python
    implementations: the same graph, without a numba compile of its scan (about 70 s cold).
    """
    if options.get("confidence"):  # scores that track the outlier flags, with noise
        flags = rodent["is_outlier"].values
        score = np.where(flags, 0.3, 0.8) + np.random.default_rng(3).uniform(-0.2, 0.2, flags.shape)
        rodent = rodent.assign(confidence=(("frame", "camera", "keypoint"), score))
    fused = build_model(rodent, **options)
    graph = build_model(rodent, kernels="graph", init=fused.gimbal_init, validate=False, **options)
    f_fused, f_graph = compile_logp_and_grad(fused), compile_logp_and_grad(graph, mode=python_mode)
    start = f_fused.flatten(fused.initial_point())
    q = start + np.random.default_rng(4).normal(scale=0.05, size=start.shape)
    assert f_fused.logp(q) == pytest.approx(f_graph.logp(q), rel=1e-10)
    gg = f_graph.dlogp(q)
    np.testing.assert_allclose(f_fused.dlogp(q), gg, rtol=1e-7, atol=1e-8 * np.abs(gg).max())
    report = finite_difference_check(f_fused, max_components=60, seed=2)
    assert report["passed"], report["worst"][:3]


def test_numba_cache_key_follows_the_kernel_source(monkeypatch):
    """PyTensor keys its on-disk numba cache by Op class and properties: the kernels' source must be in the key,
    or an upgraded gimbal would be served the old compiled kernel (a stale (T, C, K) kernel indexing new
    (1, C, K) log-odds returned NaN)."""
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key

    import gimbal.model.kernels as kernels

    ops = [kernels.ObservationLogp("gaussian"), kernels.BoneEmissionLogp(), kernels.HMMLogp()]
    keys = [numba_funcify_and_cache_key(op)[1] for op in ops]
    assert all(key is not None for key in keys)
    monkeypatch.setattr(kernels, "KERNEL_SOURCE_KEY", kernels.KERNEL_SOURCE_KEY + 1)
    changed = [numba_funcify_and_cache_key(op)[1] for op in ops]
    assert all(a != b for a, b in zip(keys, changed))
