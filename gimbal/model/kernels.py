"""Fused numba kernels for the three hot spots of the GIMBAL log-density, as PyTensor Ops.

The plain PyTensor graphs (:func:`gimbal.model.distributions.hmm_forward_logp` and the
projection + mixture graph in :mod:`gimbal.model.build`) are the reference
implementation and what the JAX backend compiles. On the numba backend (nutpie's
default) they cost most of a gradient evaluation: the mixture's ``logaddexp`` and
its derivative recompute the same exponentials in separate elementwise passes,
and the forward algorithm's ``scan`` pays a per-frame overhead twice (forward and
reverse mode). Each Op here computes its value *and* its Jacobian in one pass:

* :class:`ObservationLogp` - per-frame log-likelihood of the 2D detections
  (projection into every camera, Gaussian or inlier/outlier mixture with a uniform or a
  wide-Gaussian outlier class, noise per camera and keypoint, inlier odds per detection,
  missing detections skipped); what depends on the camera and keypoint only (class
  normalizers, and the class probabilities unless a covariate varies them per detection)
  is computed once per pair, leaving one exponential and one logarithm per detection (two exponentials and one
  logarithm when the log-odds differ per detection);
* :class:`BoneEmissionLogp` - ``log p(pose_t | state s)`` with the bone directions
  integrated out (the marginal density of :func:`gimbal.model.distributions.marginal_bone_logp`,
  summed over bones), for every frame and state;
* :class:`HMMLogp` - the HMM marginal log-likelihood by scaled forward-backward;
  its gradient is the posterior state marginals and expected transition counts.

Each Op is differentiable once (enough for NUTS); ``perform`` calls the same
jitted kernel, so PyMC's own sampler and plain ``pytensor.function`` use it too.
Tests check both against the reference graphs and finite differences.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

from ._inputs import is_data
from .cameras import split_missing
from .distributions import _SMALL_KAPPA  # the same series/exact switch point as the graph version

# PyTensor caches compiled numba functions on disk under a key made of the Op's class and properties only; the
# kernels' source is added to the key so that a changed kernel (a new gimbal version) is never served from a
# cache compiled from the old one
KERNEL_SOURCE_KEY = zlib.crc32(b"".join(
    (Path(__file__).parent / name).read_bytes() for name in ("kernels.py", "distributions.py")))

__all__ = [
    "ObservationLogp",
    "BoneEmissionLogp",
    "HMMLogp",
    "FUSED_OPS",
    "observation_logp",
    "bone_emission_logp",
    "hmm_logp",
]


# --- observation likelihood ----------------------------------------------------------


OUTLIER_NONE, OUTLIER_UNIFORM, OUTLIER_GAUSSIAN = 0, 1, 2
OUTLIER_KINDS = {"none": OUTLIER_NONE, "uniform": OUTLIER_UNIFORM, "gaussian": OUTLIER_GAUSSIAN}


@numba.njit(cache=True)
def _log_sigmoids(lo):
    """``log sigmoid(lo)``, ``log sigmoid(-lo)`` and ``sigmoid(lo)`` from one exponential and one logarithm."""
    e = math.exp(-abs(lo))
    l1 = math.log1p(e)
    if lo >= 0:
        return -l1, -lo - l1, 1.0 / (1.0 + e)
    return lo - l1, -l1, e / (1.0 + e)


@numba.njit(cache=True)
def _logaddexp_first(a, b):
    """``logaddexp(a, b)`` and the first term's share ``e^a / (e^a + e^b)``, from one exponential."""
    if a >= b:
        e = math.exp(b - a)
        return a + math.log1p(e), 1.0 / (1.0 + e)
    e = math.exp(a - b)
    return b + math.log1p(e), e / (1.0 + e)


@numba.njit(cache=True)
def _mixture_with_odds(a, b, lo):
    """``log(s e^a + (1 - s) e^b)``, the first class's responsibility and ``s = sigmoid(lo)``.

    For log-odds that differ per detection: two exponentials and one logarithm, against two of each for
    ``logaddexp(a + log sigmoid(lo), b + log sigmoid(-lo))``. The larger class's density is factored out, so
    nothing overflows; if both weights underflow (log-odds beyond +-700 against a far larger other class) the
    result falls back to that form.
    """
    e = math.exp(-abs(lo))
    q = 1.0 / (1.0 + e)
    s, s_bar = (q, e * q) if lo >= 0 else (e * q, q)
    if a >= b:
        w_in, w_out, top = s, s_bar * math.exp(b - a), a
    else:
        w_in, w_out, top = s * math.exp(a - b), s_bar, b
    total = w_in + w_out
    if total > 0.0:
        return top + math.log(total), w_in / total, s
    li, lout, s = _log_sigmoids(lo)
    value, resp = _logaddexp_first(a + li, b + lout)
    return value, resp, s


@numba.njit(cache=True)
def _observation_kernel(x, omega, logodds, cameras, y, seen, outlier, kind):
    T, K = x.shape[0], x.shape[1]
    C = cameras.shape[0]
    logp = np.zeros(T)
    jac_x = np.zeros((T, K, 3))
    jac_omega = np.zeros((T, C, K))
    jac_logodds = np.zeros((T, C, K))
    two_pi = math.log(2.0 * math.pi)
    # what depends on (camera, keypoint) only is computed once: the classes' log normalizers and inverse
    # variances, and, when the log-odds are the same in every frame (no per-detection covariate), the log
    # class probabilities
    per_frame = logodds.shape[0] > 1
    inv_var = np.empty((C, K))
    norm_in = np.empty((C, K))
    inv_var_out = np.zeros((C, K))
    norm_out = np.zeros((C, K))
    log_in = np.zeros((C, K))
    log_out = np.zeros((C, K))
    p_in = np.zeros((C, K))
    for c in range(C):
        for k in range(K):
            inv_var[c, k] = 1.0 / (omega[c, k] * omega[c, k])
            norm_in[c, k] = -2.0 * math.log(omega[c, k]) - two_pi
            if kind == OUTLIER_UNIFORM:
                norm_out[c, k] = outlier[c, k]
            elif kind == OUTLIER_GAUSSIAN:  # a wide Gaussian around the projection, standard deviation outlier[c, k]
                inv_var_out[c, k] = 1.0 / (outlier[c, k] * outlier[c, k])
                norm_out[c, k] = -2.0 * math.log(outlier[c, k]) - two_pi
            if kind != OUTLIER_NONE and not per_frame:
                log_in[c, k], log_out[c, k], p_in[c, k] = _log_sigmoids(logodds[0, c, k])
    for t in range(T):
        for c in range(C):
            P = cameras[c]
            for k in range(K):
                if not seen[t, c, k]:
                    continue
                X, Y, Z = x[t, k, 0], x[t, k, 1], x[t, k, 2]
                inv_w = 1.0 / (P[2, 0] * X + P[2, 1] * Y + P[2, 2] * Z + P[2, 3])
                u = (P[0, 0] * X + P[0, 1] * Y + P[0, 2] * Z + P[0, 3]) * inv_w
                v = (P[1, 0] * X + P[1, 1] * Y + P[1, 2] * Z + P[1, 3]) * inv_w
                du = u - y[t, c, k, 0]
                dv = v - y[t, c, k, 1]
                r2 = du * du + dv * dv
                iv = inv_var[c, k]
                a = norm_in[c, k] - 0.5 * r2 * iv  # the inlier class's log density
                # d/d r2 of the log density, summed over classes with their responsibilities
                if kind == OUTLIER_NONE:
                    logp[t] += a
                    resp = 1.0
                    d_r2 = -0.5 * iv
                else:
                    b = norm_out[c, k] - 0.5 * r2 * inv_var_out[c, k]  # the outlier class's log density
                    if per_frame:
                        value, resp, pin = _mixture_with_odds(a, b, logodds[t, c, k])
                    else:  # the log class probabilities were computed once per pair
                        value, resp = _logaddexp_first(a + log_in[c, k], b + log_out[c, k])
                        pin = p_in[c, k]
                    logp[t] += value
                    jac_logodds[t, c, k] = resp - pin
                    d_r2 = -0.5 * (resp * iv + (1.0 - resp) * inv_var_out[c, k])
                # d a / d omega = r2 / omega^3 - 2 / omega
                jac_omega[t, c, k] = resp * (r2 * iv - 2.0) / omega[c, k]
                gu = 2.0 * d_r2 * du * inv_w
                gv = 2.0 * d_r2 * dv * inv_w
                for d in range(3):
                    jac_x[t, k, d] += gu * (P[0, d] - u * P[2, d]) + gv * (P[1, d] - v * P[2, d])
    return logp, jac_x, jac_omega, jac_logodds


class ObservationLogp(Op):
    """Per-frame log-likelihood of 2D detections, with its per-frame Jacobians.

    Inputs: ``x`` (T, K, 3) positions, ``omega`` (C, K) inlier pixel noise, ``logodds``
    (T, C, K) inlier log-odds per detection, or (1, C, K) when they are the same in every frame
    (then the class probabilities are computed once per camera and keypoint), ``cameras``
    (C, 3, 4), ``y`` (T, C, K, 2) detections (any value where unseen), ``seen`` (T, C, K) bool, ``outlier`` (C, K): the outlier
    class's log density (``outlier="uniform"``) or its standard deviation in pixels around
    the projection (``"gaussian"``); ignored with ``"none"`` (one Gaussian class).
    Outputs: ``logp`` (T,) and the Jacobians of each frame's value with respect to
    ``x``, ``omega`` and ``logodds``. ``outlier`` is data (not differentiated).
    """

    __props__ = ("outlier",)

    def __init__(self, outlier: str = "uniform"):
        if outlier not in OUTLIER_KINDS:
            raise ValueError(f"outlier must be one of {sorted(OUTLIER_KINDS)}, got {outlier!r}.")
        self.outlier = outlier

    def make_node(self, x, omega, logodds, cameras, y, seen, outlier):
        x = pt.as_tensor_variable(x).astype("float64")
        omega = pt.as_tensor_variable(omega).astype("float64")
        logodds = pt.as_tensor_variable(logodds).astype("float64")
        cameras = pt.as_tensor_variable(cameras).astype("float64")
        y = pt.as_tensor_variable(y).astype("float64")
        seen = pt.as_tensor_variable(seen).astype("bool")
        outlier = pt.as_tensor_variable(outlier).astype("float64")
        inputs = [x, omega, logodds, cameras, y, seen, outlier]
        outputs = [pt.dvector(), pt.dtensor3(), pt.dtensor3(), pt.dtensor3()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        x, omega, logodds, cameras, y, seen, outlier = inputs
        results = _observation_kernel(x, omega, logodds, cameras, y, seen, outlier, OUTLIER_KINDS[self.outlier])
        for storage, value in zip(output_storage, results):
            storage[0] = value

    def infer_shape(self, node, shapes):
        x_shape, seen_shape = shapes[0], shapes[5]
        return [(x_shape[0],), x_shape, seen_shape, seen_shape]

    def pullback(self, inputs, outputs, cotangents):
        _, jac_x, jac_omega, jac_logodds = outputs
        g = cotangents[0]  # the Jacobian outputs are not meant to be differentiated further
        g_logodds = g[:, None, None] * jac_logodds
        if inputs[2].type.broadcastable[0]:  # one set of log-odds for every frame
            g_logodds = pt.sum(g_logodds, axis=0, keepdims=True)
        return [
            g[:, None, None] * jac_x,
            pt.sum(g[:, None, None] * jac_omega, axis=0),
            g_logodds,
            *(grad_not_implemented(self, i, inputs[i]) for i in range(3, 7)),
        ]


@register_funcify_default_op_cache_key(ObservationLogp)
def _numba_observation_logp(op, node=None, **kwargs):
    kind = OUTLIER_KINDS[op.outlier]

    @numba.njit
    def observation_logp(x, omega, logodds, cameras, y, seen, outlier):
        return _observation_kernel(x, omega, logodds, cameras, y, seen, outlier, kind)

    return observation_logp, KERNEL_SOURCE_KEY


def observation_logp(x, omega, logodds, cameras, observations, outlier, kind: str = "uniform", seen=None):
    """Per-frame observation log-likelihood ``(T,)`` through :class:`ObservationLogp`.

    ``observations`` is a ``(T, C, K, 2)`` array with NaN where a keypoint was not
    detected; those entries contribute exactly 0. With ``seen`` (``(T, C, K)``, the mask of
    detected keypoints) ``observations`` are the detections with missing entries already
    filled (:func:`gimbal.model.cameras.split_missing`), as arrays or tensors (shared inputs).
    ``omega`` (inlier noise, pixels), ``logodds`` (inlier log-odds) and ``outlier`` (see
    :class:`ObservationLogp`) broadcast against ``(C, K)``, ``(T, C, K)`` and ``(C, K)``: a scalar noise, per-keypoint
    log-odds ``(K,)`` or a per-camera outlier density ``(C, 1)`` are all fine; log-odds of fewer than three
    dimensions are the same in every frame and passed on as ``(1, C, K)``. ``logodds`` and ``outlier`` are
    ignored when ``kind`` is ``"none"``.
    """
    y = observations
    if seen is None:
        y, seen = split_missing(observations)
    y, seen = pt.as_tensor_variable(y), pt.as_tensor_variable(seen)
    T, C, K = seen.shape[0], seen.shape[1], seen.shape[2]
    omega = pt.broadcast_to(pt.as_tensor_variable(omega).astype("float64"), (C, K))
    logodds = pt.as_tensor_variable(logodds).astype("float64")
    logodds = pt.broadcast_to(logodds, (T if logodds.ndim == 3 else 1, C, K))
    outlier = pt.broadcast_to(pt.as_tensor_variable(outlier).astype("float64"), (C, K))
    return ObservationLogp(kind)(x, omega, logodds, cameras, y, seen, outlier)[0]


# --- pose emissions with bone directions integrated out ---------------------------------

_NORM_EPS = 1e-12  # as gimbal.model.distributions.safe_norm's default eps


_LARGE_KAPPA = 20.0  # above it exp(-2 kappa) < 5e-18: the sinh correction is below double precision


@numba.njit(cache=True)
def _vmf_log_c3(k):
    if k < _SMALL_KAPPA:
        return -math.log(4.0 * math.pi) - k * k / 6.0
    if k > _LARGE_KAPPA:
        return math.log(k) - math.log(2.0 * math.pi) - k
    return math.log(k) - math.log(2.0 * math.pi) - k - math.log(-math.expm1(-2.0 * k))


@numba.njit(cache=True)
def _vmf_log_c3_deriv(k):
    # d/dk log(k / (4 pi sinh k)) = 1/k - coth(k); series below 1e-4 avoids cancellation
    if k < 1e-4:
        return -k / 3.0
    if k > _LARGE_KAPPA:
        return 1.0 / k - 1.0
    return 1.0 / k - 1.0 - 2.0 / math.expm1(2.0 * k)


@numba.njit(cache=True)
def _bone_emission_kernel(x, children, parents, rho, sigma, mean, kappa, grad_sigma, grad_states):
    T, K = x.shape[0], x.shape[1]
    S, B = kappa.shape
    emission = np.zeros((T, S))
    jac_x = np.zeros((T, S, K, 3))
    # the parameters' Jacobians are kept per frame: `pullback` weights each frame by its cotangent
    # Jacobians of constant parameters are not computed (empty arrays): they are
    # half of the memory traffic, and by default sigma, mean and kappa are fixed
    Ts, Tm = (T if grad_sigma else 0), (T if grad_states else 0)
    jac_rho_t = np.zeros((T, S, B))
    jac_sigma_t = np.zeros((Ts, S, B))
    jac_kappa_t = np.zeros((Tm, S, B))
    jac_mean_t = np.zeros((Tm, S, B, 3))
    log_c_kappa = np.empty((S, B))
    dlog_c_kappa = np.empty((S, B))
    for s in range(S):
        for b in range(B):
            log_c_kappa[s, b] = _vmf_log_c3(kappa[s, b])
            dlog_c_kappa[s, b] = _vmf_log_c3_deriv(kappa[s, b])
    v = np.empty(3)
    for t in range(T):
        for b in range(B):
            ch, pa = children[b], parents[b]
            d0 = x[t, ch, 0] - x[t, pa, 0]
            d1 = x[t, ch, 1] - x[t, pa, 1]
            d2 = x[t, ch, 2] - x[t, pa, 2]
            s2 = sigma[b] * sigma[b]
            a = rho[b] / s2
            dd = d0 * d0 + d1 * d1 + d2 * d2
            const = -1.5 * math.log(2.0 * math.pi * s2) - (dd + rho[b] * rho[b]) / (2.0 * s2)
            for s in range(S):
                k = kappa[s, b]
                v[0] = k * mean[s, b, 0] + a * d0
                v[1] = k * mean[s, b, 1] + a * d1
                v[2] = k * mean[s, b, 2] + a * d2
                n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + _NORM_EPS)
                emission[t, s] += log_c_kappa[s, b] - _vmf_log_c3(n) + const
                q = _vmf_log_c3_deriv(n) / n  # d log c3(n) / d v = q * v
                v_dot_d = v[0] * d0 + v[1] * d1 + v[2] * d2
                # d/d delta = -q a v - delta / s2
                g0 = -q * a * v[0] - d0 / s2
                g1 = -q * a * v[1] - d1 / s2
                g2 = -q * a * v[2] - d2 / s2
                jac_x[t, s, ch, 0] += g0
                jac_x[t, s, ch, 1] += g1
                jac_x[t, s, ch, 2] += g2
                jac_x[t, s, pa, 0] -= g0
                jac_x[t, s, pa, 1] -= g1
                jac_x[t, s, pa, 2] -= g2
                jac_rho_t[t, s, b] = -q * v_dot_d / s2 - rho[b] / s2
                if grad_sigma:
                    jac_sigma_t[t, s, b] = (
                        2.0 * q * v_dot_d * rho[b] / (s2 * sigma[b])
                        - 3.0 / sigma[b]
                        + (dd + rho[b] * rho[b]) / (s2 * sigma[b])
                    )
                if grad_states:
                    v_dot_m = v[0] * mean[s, b, 0] + v[1] * mean[s, b, 1] + v[2] * mean[s, b, 2]
                    jac_kappa_t[t, s, b] = dlog_c_kappa[s, b] - q * v_dot_m
                    for d in range(3):
                        jac_mean_t[t, s, b, d] = -q * k * v[d]
    return emission, jac_x, jac_rho_t, jac_sigma_t, jac_mean_t, jac_kappa_t


class BoneEmissionLogp(Op):
    """``log p(pose_t | state s)`` for every frame and state, bone directions integrated out.

    Inputs: ``x`` (T, K, 3), ``children`` and ``parents`` (B,) keypoint indices of
    each bone, ``rho`` and ``sigma`` (B,) bone lengths and positional spreads,
    ``mean`` (S, B, 3) unit mean directions and ``kappa`` (S, B) concentrations.
    Outputs: the ``(T, S)`` emissions and their per-frame Jacobians with respect
    to ``x`` (T, S, K, 3), ``rho``, ``sigma``, ``kappa`` (T, S, B) and ``mean`` (T, S, B, 3).

    Parameters
    ----------
    grad_sigma, grad_states : bool
        Whether ``sigma`` (resp. ``mean`` and ``kappa``) can be differentiated. When
        False their Jacobians are skipped (empty outputs) and asking for their
        gradient is an error: :func:`bone_emission_logp` sets them from whether
        those inputs are constants.
    """

    __props__ = ("grad_sigma", "grad_states")

    def __init__(self, grad_sigma: bool = True, grad_states: bool = True):
        self.grad_sigma = bool(grad_sigma)
        self.grad_states = bool(grad_states)

    def make_node(self, x, children, parents, rho, sigma, mean, kappa):
        floats = [pt.as_tensor_variable(v).astype("float64") for v in (x, rho, sigma, mean, kappa)]
        ints = [pt.as_tensor_variable(v).astype("int64") for v in (children, parents)]
        x, rho, sigma, mean, kappa = floats
        inputs = [x, *ints, rho, sigma, mean, kappa]
        outputs = [pt.dmatrix(), pt.dtensor4(), pt.dtensor3(), pt.dtensor3(), pt.dtensor4(), pt.dtensor3()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        results = _bone_emission_kernel(*inputs, self.grad_sigma, self.grad_states)
        for storage, value in zip(output_storage, results):
            storage[0] = value

    def infer_shape(self, node, shapes):
        (T, K, _), _, _, (B,), _, (S, _, _), _ = shapes
        Ts, Tm = (T if self.grad_sigma else 0), (T if self.grad_states else 0)
        return [(T, S), (T, S, K, 3), (T, S, B), (Ts, S, B), (Tm, S, B, 3), (Tm, S, B)]

    def pullback(self, inputs, outputs, cotangents):
        _, jac_x, jac_rho, jac_sigma, jac_mean, jac_kappa = outputs
        g = cotangents[0]  # (T, S)
        not_implemented = [grad_not_implemented(self, i, inputs[i]) for i in range(7)]
        return [
            pt.sum(g[:, :, None, None] * jac_x, axis=1),
            not_implemented[1],
            not_implemented[2],
            pt.sum(g[:, :, None] * jac_rho, axis=(0, 1)),
            pt.sum(g[:, :, None] * jac_sigma, axis=(0, 1)) if self.grad_sigma else not_implemented[4],
            pt.sum(g[:, :, None, None] * jac_mean, axis=0) if self.grad_states else not_implemented[5],
            pt.sum(g[:, :, None] * jac_kappa, axis=0) if self.grad_states else not_implemented[6],
        ]


@register_funcify_default_op_cache_key(BoneEmissionLogp)
def _numba_bone_emission(op, node=None, **kwargs):
    grad_sigma, grad_states = op.grad_sigma, op.grad_states

    @numba.njit
    def bone_emission(x, children, parents, rho, sigma, mean, kappa):
        return _bone_emission_kernel(x, children, parents, rho, sigma, mean, kappa, grad_sigma, grad_states)

    return bone_emission, KERNEL_SOURCE_KEY


def bone_emission_logp(x, children, parents, rho, sigma, mean, kappa):
    """``(T, S)`` pose emissions through :class:`BoneEmissionLogp` (Jacobians of constant
    ``sigma``, ``mean``, ``kappa`` skipped)."""
    op = BoneEmissionLogp(grad_sigma=not is_data(sigma), grad_states=not (is_data(mean) and is_data(kappa)))
    as_index = (lambda v: v) if isinstance(children, pt.Variable) else np.asarray
    return op(x, as_index(children), as_index(parents), rho, sigma, mean, kappa)[0]


# --- HMM forward-backward ------------------------------------------------------------


@numba.njit(cache=True)
def _hmm_kernel(log_emission, log_init, log_transition):
    T, S = log_emission.shape
    A = np.exp(log_transition)
    alpha = np.empty((T, S))
    scaled = np.empty((T, S))  # exp(log_emission[t] - max_t)
    log_c = np.empty(T)
    logp = 0.0
    for t in range(T):
        m = log_emission[t].max()
        for j in range(S):
            scaled[t, j] = math.exp(log_emission[t, j] - m)
        total = 0.0
        for j in range(S):
            if t == 0:
                pred = math.exp(log_init[j])
            else:
                pred = 0.0
                for i in range(S):
                    pred += alpha[t - 1, i] * A[i, j]
            alpha[t, j] = pred * scaled[t, j]
            total += alpha[t, j]
        for j in range(S):
            alpha[t, j] /= total
        log_c[t] = math.log(total)
        logp += log_c[t] + m
    # backward pass: beta scaled by the same constants; gamma = alpha * beta
    grad_emission = np.empty((T, S))
    grad_transition = np.zeros((S, S))
    beta = np.ones(S)
    nxt = np.empty(S)
    for t in range(T - 1, -1, -1):
        for j in range(S):
            grad_emission[t, j] = alpha[t, j] * beta[j]
        if t == 0:
            break
        c = math.exp(log_c[t])
        for j in range(S):
            nxt[j] = scaled[t, j] * beta[j] / c
        for i in range(S):
            b = 0.0
            for j in range(S):
                xi = alpha[t - 1, i] * A[i, j] * nxt[j]
                grad_transition[i, j] += xi
                b += A[i, j] * nxt[j]
            beta[i] = b
    grad_init = grad_emission[0].copy()
    return logp, grad_emission, grad_init, grad_transition


class HMMLogp(Op):
    """HMM marginal log-likelihood (states summed out) with its gradient.

    Inputs: ``log_emission`` (T, S), ``log_init`` (S,), ``log_transition`` (S, S)
    with ``log_transition[i, j] = log p(s_t = j | s_{t-1} = i)``. Outputs: the
    scalar log-likelihood, then its gradients: the posterior state marginals
    ``(T, S)``, the first marginal ``(S,)`` and the expected transition counts ``(S, S)``.
    """

    __props__ = ()

    def make_node(self, log_emission, log_init, log_transition):
        inputs = [pt.as_tensor_variable(v).astype("float64") for v in (log_emission, log_init, log_transition)]
        outputs = [pt.dscalar(), pt.dmatrix(), pt.dvector(), pt.dmatrix()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        logp, g_em, g_init, g_trans = _hmm_kernel(*inputs)
        output_storage[0][0] = np.asarray(logp)
        output_storage[1][0] = g_em
        output_storage[2][0] = g_init
        output_storage[3][0] = g_trans

    def infer_shape(self, node, shapes):
        return [(), shapes[0], shapes[1], shapes[2]]

    def pullback(self, inputs, outputs, cotangents):
        g = cotangents[0]
        return [g * outputs[1], g * outputs[2], g * outputs[3]]


@register_funcify_default_op_cache_key(HMMLogp)
def _numba_hmm_logp(op, node=None, **kwargs):
    @numba.njit
    def hmm_logp(log_emission, log_init, log_transition):
        logp, g_em, g_init, g_trans = _hmm_kernel(log_emission, log_init, log_transition)
        return np.asarray(logp), g_em, g_init, g_trans

    return hmm_logp, KERNEL_SOURCE_KEY


FUSED_OPS = (ObservationLogp, BoneEmissionLogp, HMMLogp)


def hmm_logp(log_emission, log_init, log_transition):
    """HMM marginal log-likelihood through :class:`HMMLogp` (same contract as
    :func:`gimbal.model.distributions.hmm_forward_logp`)."""
    return HMMLogp()(log_emission, log_init, log_transition)[0]
