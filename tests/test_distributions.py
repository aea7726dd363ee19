import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, multivariate_t, vonmises_fisher

from gimbal.model.distributions import (STEP_DOF, hmm_forward_logp, hmm_parallel_logp, marginal_bone_logp, step_logp,
                                       vmf_log_normalizer, vmf_logp)

KAPPAS = np.logspace(-3, 4, 29)


@pytest.fixture(scope="module")
def vmf_fns():
    u, mu, k = pt.dvector(), pt.dvector(), pt.dscalar()
    lp = vmf_logp(u, mu, k)
    return pytensor.function([u, mu, k], [lp, pytensor.grad(lp, k)])


def test_vmf_logpdf_matches_scipy_over_kappa_range(vmf_fns):
    rng = np.random.default_rng(0)
    mu = np.array([0.3, -0.4, 0.866])
    mu /= np.linalg.norm(mu)
    for kappa in KAPPAS:
        u = vonmises_fisher(mu, kappa).rvs(3, random_state=rng)
        for ui in u:
            ours, grad = vmf_fns(ui, mu, kappa)
            ref = vonmises_fisher(mu, kappa).logpdf(ui)
            assert ours == pytest.approx(ref, rel=1e-9, abs=1e-9), kappa
            assert np.isfinite(grad)


def test_vmf_normalizer_gradient_matches_finite_differences():
    k = pt.dvector()
    f = pytensor.function([k], vmf_log_normalizer(k))
    g = pytensor.function([k], pytensor.grad(vmf_log_normalizer(k).sum(), k))
    ks = np.logspace(-3, 4, 15)
    eps = 1e-6 * np.maximum(ks, 1.0)
    fd = (f(ks + eps) - f(ks - eps)) / (2 * eps)
    np.testing.assert_allclose(g(ks), fd, rtol=1e-5, atol=1e-6)
    # edge cases stay finite: exactly 0, the series branch, and far beyond sinh overflow
    vals = f(np.array([0.0, 1e-9, 800.0, 1e5]))
    assert np.all(np.isfinite(vals)) and np.all(np.isfinite(g(np.array([0.0, 1e-9, 800.0, 1e5]))))


def _fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], -1)


def test_marginal_bone_density_equals_numerical_integral():
    """log p(delta) with the direction integrated out, against quadrature over the sphere."""
    u = _fibonacci_sphere(200_000)
    mu = np.array([0.0, 0.6, 0.8])
    d, r, s, k = pt.dvector(), pt.dscalar(), pt.dscalar(), pt.dscalar()
    f = pytensor.function([d, r, s, k], marginal_bone_logp(d, r, s, pt.as_tensor(mu), k))
    for delta, rho, sigma, kappa in [([1.0, 2.0, 8.0], 9.0, 1.5, 5.0), ([0.5, -1.0, 3.0], 4.0, 1.0, 20.0)]:
        delta = np.asarray(delta)
        vmf = vonmises_fisher(mu, kappa).logpdf(u)
        gauss = -0.5 * np.sum((delta - rho * u) ** 2, -1) / sigma**2 - 1.5 * np.log(2 * np.pi * sigma**2)
        ref = logsumexp(vmf + gauss) + np.log(4 * np.pi / len(u))
        assert f(delta, rho, sigma, kappa) == pytest.approx(ref, abs=1e-4)


@pytest.fixture(scope="module")
def hmm_fn():
    e, a, b = pt.dmatrix(), pt.dvector(), pt.dmatrix()
    out = hmm_forward_logp(e, a, b)
    return pytensor.function([e, a, b], [out, pytensor.grad(out, e)])


def _random_hmm(rng, T, S):
    E = rng.normal(size=(T, S))
    init = np.log(rng.dirichlet(np.ones(S)))
    A = np.log(rng.dirichlet(np.ones(S), size=S))
    return E, init, A


@pytest.mark.parametrize("T,S", [(1, 2), (2, 3), (5, 2), (6, 3)])
def test_hmm_forward_matches_brute_force_enumeration(hmm_fn, T, S):
    E, init, A = _random_hmm(np.random.default_rng(T * 10 + S), T, S)
    paths = itertools.product(range(S), repeat=T)
    brute = logsumexp(
        [init[p[0]] + E[0, p[0]] + sum(A[p[t - 1], p[t]] + E[t, p[t]] for t in range(1, T)) for p in paths]
    )
    ours, grad = hmm_fn(E, init, A)
    assert ours == pytest.approx(brute, rel=1e-12)
    # d logZ / d emission[t, s] is the posterior marginal of state s at t: rows sum to one
    np.testing.assert_allclose(grad.sum(axis=1), 1.0, atol=1e-10)


def test_hmm_forward_matches_hmmlearn(hmm_fn):
    hmm_base = pytest.importorskip("hmmlearn.base")
    rng = np.random.default_rng(3)
    T, S = 200, 4
    E, init, A = _random_hmm(rng, T, S)

    class FixedEmissionHMM(hmm_base.BaseHMM):
        def _compute_log_likelihood(self, X):
            return E[X[:, 0].astype(int)]

        def _init(self, X, lengths=None):
            pass

        def _check(self):
            pass

        def _get_n_fit_scalars_per_param(self):
            return {}

        def _generate_sample_from_state(self, state, random_state=None):
            return np.zeros(1)

    model = FixedEmissionHMM(n_components=S)
    model.startprob_ = np.exp(init)
    model.transmat_ = np.exp(A)
    ref = model.score(np.arange(T)[:, None])
    assert hmm_fn(E, init, A)[0] == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("T,S", [(1, 2), (2, 3), (5, 2), (6, 3)])
def test_parallel_hmm_matches_brute_force_enumeration(T, S):
    """The log-depth tree over frames sums the same paths as the enumeration (odd and even T)."""
    E, init, A = _random_hmm(np.random.default_rng(T * 10 + S + 1), T, S)
    brute = logsumexp(
        [init[p[0]] + E[0, p[0]] + sum(A[p[t - 1], p[t]] + E[t, p[t]] for t in range(1, T))
         for p in itertools.product(range(S), repeat=T)]
    )
    e, a, b = pt.dmatrix(), pt.dvector(), pt.dmatrix()
    f = pytensor.function([e, a, b], hmm_parallel_logp(e, a, b, T), on_unused_input="ignore")  # T=1: no transition
    assert f(E, init, A) == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("T", [37, 200, 1025])
def test_parallel_hmm_value_and_gradients_match_the_forward_algorithm(hmm_fn, T, python_mode):
    E, init, A = _random_hmm(np.random.default_rng(T), T, 4)
    E = 5 * E  # sharp emissions: large log-space ranges in the products
    e, a, b = pt.dmatrix(), pt.dvector(), pt.dmatrix()
    out = hmm_parallel_logp(e, a, b, T)
    # Python implementations: the arithmetic is compared, not a numba compile of each tree depth
    f = pytensor.function([e, a, b], [out, *pytensor.grad(out, [e, a, b])], mode=python_mode)
    g = pytensor.function([e, a, b], [o := hmm_forward_logp(e, a, b), *pytensor.grad(o, [e, a, b])], mode=python_mode)
    par, seq = f(E, init, A), g(E, init, A)
    assert par[0] == pytest.approx(seq[0], rel=1e-12)
    for x, y in zip(par[1:], seq[1:]):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-11)


def test_parallel_hmm_checks_the_number_of_frames():
    E, init, A = _random_hmm(np.random.default_rng(0), 8, 2)
    e, a, b = pt.dmatrix(), pt.dvector(), pt.dmatrix()
    f = pytensor.function([e, a, b], hmm_parallel_logp(e, a, b, 8))
    with pytest.raises(AssertionError, match="expected 8"):
        f(E[:5], init, A)
    with pytest.raises(ValueError, match="n_frames"):
        hmm_parallel_logp(e, a, b, 0)


@pytest.mark.parametrize("dof", [None, STEP_DOF, 1.0])
def test_step_density_matches_scipy(dof):
    """A random walk's 3D step: isotropic Gaussian or multivariate Student-t with scale sigma, as scipy has them."""
    rng = np.random.default_rng(0)
    sigma = np.array([0.05, 0.3, 2.0])
    # steps from well inside the scale to far in the tail (up to about 50 scales)
    d = rng.normal(size=(3, 20, 3)) * sigma[:, None, None] * np.exp(rng.normal(scale=1.5, size=(1, 20, 1)))
    got = step_logp(pt.as_tensor(np.sum(d**2, axis=-1)), pt.as_tensor(sigma[:, None]), dof).eval()
    for i, s in enumerate(sigma):
        ref = (multivariate_normal(np.zeros(3), s**2 * np.eye(3)).logpdf(d[i]) if dof is None
               else multivariate_t(np.zeros(3), s**2 * np.eye(3), df=dof).logpdf(d[i]))
        np.testing.assert_allclose(got[i], ref, rtol=1e-10, atol=1e-10)
