"""PyTensor building blocks: von Mises-Fisher on S^2, the HMM forward algorithm, a random walk's steps.

Everything here is a pure graph function (tensors in, tensor out) with exact
autodiff gradients. Only the parallel-in-time HMM loops in Python, over
``ceil(log2 T)`` levels, so graph size grows with ``log T`` at most.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor import scan
from scipy.special import gammaln

from ..settings import STEP_DOF  # the Student-t steps' default degrees of freedom, declared with the other settings

__all__ = [
    "vmf_log_normalizer",
    "vmf_logp",
    "marginal_bone_logp",
    "hmm_forward_logp",
    "hmm_parallel_logp",
    "safe_norm",
    "step_logp",
    "STEP_DOF",
]


_SMALL_KAPPA = 1e-6


def vmf_log_normalizer(kappa):
    """``log c3(kappa)`` of the von Mises-Fisher density on the 2-sphere.

    ``c3(k) = k / (4 pi sinh k)``, computed as
    ``log k - log 2pi - k - log(-expm1(-2k))``, which neither overflows for
    large ``k`` nor loses precision for small ``k``. Below ``1e-6`` a series
    is used; the exact branch is then evaluated at a harmless dummy value so
    that neither branch can inject NaN into the gradient.
    """
    kappa = pt.as_tensor_variable(kappa)
    small = kappa < _SMALL_KAPPA
    k_safe = pt.switch(small, 1.0, kappa)
    exact = pt.log(k_safe) - np.log(2 * np.pi) - k_safe - pt.log(-pt.expm1(-2.0 * k_safe))
    # log(k / (4 pi sinh k)) = -log(4 pi) - k^2/6 + O(k^4)
    series = -np.log(4 * np.pi) - kappa**2 / 6.0
    return pt.switch(small, series, exact)


def vmf_logp(u, mu, kappa):
    """Log density of unit vectors ``u`` under vMF(``mu``, ``kappa``) on S^2 (last axis = 3)."""
    return vmf_log_normalizer(kappa) + kappa * pt.sum(mu * u, axis=-1)


def safe_norm(v, axis=-1, eps=1e-12):
    """Euclidean norm with a finite gradient at zero."""
    return pt.sqrt(pt.sum(v**2, axis=axis) + eps)


def step_logp(squared_step, sigma, dof=None):
    """Log density of a 3D step ``d``, given ``|d|^2``: isotropic Gaussian with per-axis sd ``sigma`` (``dof=None``),
    or the multivariate Student-t with ``dof`` degrees of freedom and scale ``sigma``, whose heavy tails let a
    keypoint that mostly holds still move in bursts (a burst costs a logarithm, not a square)."""
    if dof is None:
        return -0.5 * squared_step / sigma**2 - 3 * pt.log(sigma) - 1.5 * np.log(2 * np.pi)
    c = gammaln((dof + 3) / 2) - gammaln(dof / 2) - 1.5 * np.log(dof * np.pi)
    return -0.5 * (dof + 3) * pt.log1p(squared_step / (dof * sigma**2)) - 3 * pt.log(sigma) + c


def marginal_bone_logp(delta, rho, sigma, mu, kappa):
    """``log p(x_child | x_parent)`` with the bone direction integrated out.

    The generative step is ``x_child = x_parent + rho * u + N(0, sigma^2 I)``
    with ``u ~ vMF(mu, kappa)``. Integrating ``u`` over the sphere gives

    ``log c3(kappa) - log c3(|kappa mu + rho delta / sigma^2|)
    - 3/2 log(2 pi sigma^2) - (|delta|^2 + rho^2) / (2 sigma^2)``

    with ``delta = x_child - x_parent``. All arguments broadcast; the last
    axis of ``delta`` and ``mu`` is the 3D axis.
    """
    sigma2 = sigma**2
    combined = kappa[..., None] * mu + (rho / sigma2)[..., None] * delta
    return (
        vmf_log_normalizer(kappa)
        - vmf_log_normalizer(safe_norm(combined))
        - 1.5 * pt.log(2 * np.pi * sigma2)
        - (pt.sum(delta**2, axis=-1) + rho**2) / (2 * sigma2)
    )


def hmm_forward_logp(log_emission, log_init, log_transition):
    """Marginal log-likelihood of an HMM, states summed out by the forward algorithm.

    Parameters
    ----------
    log_emission : (T, S) tensor
        ``log p(observation_t | state_t = s)``.
    log_init : (S,) tensor
        Log initial state probabilities.
    log_transition : (S, S) tensor
        ``log_transition[i, j] = log p(state_t = j | state_{t-1} = i)``.

    Returns
    -------
    scalar tensor
        ``log sum_{s_1..s_T} p(s) prod_t p(y_t | s_t)``.

    Notes
    -----
    One ``scan`` step per frame in log space (``logsumexp``), so the graph is
    the same size for every ``T`` and the gradient is PyTensor's exact
    reverse-mode derivative of the recursion.
    """
    log_emission = pt.as_tensor_variable(log_emission)
    n_frames = log_emission.shape[0]
    is_first = pt.eq(pt.arange(n_frames), 0)

    def step(emission_t, first_t, alpha_prev, log_A, log_pi):
        # the first step starts from the initial distribution instead of a transition
        predicted = pt.switch(first_t, log_pi, pt.logsumexp(alpha_prev[:, None] + log_A, axis=0))
        return predicted + emission_t

    alphas = scan(
        fn=step,
        sequences=[log_emission, is_first],
        outputs_info=[pt.zeros_like(log_init)],
        non_sequences=[log_transition, log_init],
        return_updates=False,
    )
    return pt.logsumexp(alphas[-1])


def _log_matmul(a, b):
    """Batched matrix product in the log semiring: ``logsumexp_k a[..., i, k] + b[..., k, j]``."""
    return pt.logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)


def hmm_parallel_logp(log_emission, log_init, log_transition, n_frames: int):
    """The same marginal log-likelihood as :func:`hmm_forward_logp`, computed parallel in time.

    Parameters
    ----------
    log_emission : (T, S) tensor
        ``log p(observation_t | state_t = s)``.
    log_init : (S,) tensor
        Log initial state probabilities.
    log_transition : (S, S) tensor
        ``log_transition[i, j] = log p(state_t = j | state_{t-1} = i)``.
    n_frames : int
        ``T``, known when the graph is built (the tree below is unrolled over it).

    Returns
    -------
    scalar tensor

    Notes
    -----
    Frame ``t >= 2`` contributes the matrix ``M_t[i, j] = log_transition[i, j] +
    log_emission[t, j]``; the likelihood is the log-semiring product
    ``M_2 M_3 ... M_T`` between the first frame's vector and a sum over end states.
    Adjacent matrices are multiplied pairwise, halving their number per level, so
    the dependency chain is ``ceil(log2 T)`` batched products instead of ``T``
    sequential steps: the form that suits a GPU (JAX), where each sequential
    ``scan`` step costs a kernel launch. Work is ``O(T S^3)`` against the forward
    algorithm's ``O(T S^2)``, negligible for a few pose states.
    """
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}.")
    n_frames = int(n_frames)
    log_emission = pt.as_tensor_variable(log_emission)
    # checked when the function runs: the unrolled tree is only right for this many frames
    log_emission = pt.specify_shape(log_emission, (n_frames, log_emission.shape[1]))
    first = log_init + log_emission[0]
    if n_frames == 1:
        return pt.logsumexp(first)
    m = log_transition[None, :, :] + log_emission[1:, None, :]
    n = n_frames - 1
    while n > 1:
        paired = 2 * (n // 2)
        products = _log_matmul(m[0:paired:2], m[1:paired:2])
        # an odd one out waits, in order, for the next level
        m = pt.concatenate([products, m[paired:]], axis=0) if n % 2 else products
        n = n // 2 + n % 2
    return pt.logsumexp(first[:, None] + m[0])
