"""Whitened tracks: the coordinates in which the sampler moves the 3D positions.

Each keypoint's track is tied to itself by the random walk (step sd ``s``) and to the cameras by its
triangulation information ``w_t`` per frame and coordinate. Read as a Gaussian, one coordinate of one
track has the tridiagonal precision ``Q = D / s**2 + diag(w)`` (``D`` the path graph's Laplacian).
Where the animal sits still, ``s`` is far below the triangulation noise and ``Q`` is badly conditioned
even after the diagonal scaling that NUTS adapts: on the real SLEAP + Anipose mouse (120 frames, step
sds 0.02-0.3 mm against 1-4 mm of triangulation noise) the square root of its condition number is 20-220
per keypoint, and NUTS took about 500 gradients per draw.

:class:`TrackWhitening` is a PyMC transform that samples ``z`` with ``x = mu + L^-T z`` for the Cholesky
factor ``Q = L L^T`` (lower bidiagonal), so that ``z`` has identity covariance under that Gaussian
reading; where the cameras dominate (``w >> 1 / s**2``) it is a per-frame scaling, where the walk does
it is the walk's own whitening. The map is linear with a constant Jacobian, so the model's density is
unchanged; the trace holds ``x`` itself. The solve and its transpose are O(T) recurrences
(:class:`BidiagonalSolve`, numba, value and pullback).

``build_model(whitened_tracks="still")`` whitens the tracks of the keypoints the walk dominates
(:func:`walk_dominated`: step sd below the triangulation sd), ``"all"`` every track, ``"none"`` (the default) none.
On the mouse above ``"still"`` took sampling from 665-743 s to about 100 s (4 x (1000 + 1000); 63 instead of about 500
gradients per draw), but its chains settled in other regions of the observation parameters than the unwhitened ones
(README, *Your recordings*); on the simulated moving rodent ``"all"`` gained nothing without a prior (T = 100, one
run: min bulk ESS 296 against 883), but with a trained prior (and the Student-t steps' earlier 3 degrees of freedom; with
the 10 of the default since, the unwhitened fits converge in those four seeds) it made all four 100-frame seeds reach min bulk ESS
867-1087 (133-1237 unwhitened; 3 of 4 with every R-hat <= 1.01 against 2 of 4), while at T = 300 (two seeds: min
bulk ESS 430 and 118 against 347 and 251), T = 1800 and on the real recordings it was no better. Hence an option, not the default.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numba
import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

# PyTensor's on-disk numba cache is keyed by the Op's class and properties: this module's source joins the key so that
# a changed solve is never served from a cache compiled from the old one (as for the kernels)
SOURCE_KEY = zlib.crc32(Path(__file__).read_bytes())

__all__ = ["BidiagonalSolve", "TrackWhitening", "track_factor", "walk_dominated", "whitened_flat", "whitening_of",
           "whitened_keypoints", "to_positions", "to_coordinates"]


def track_factor(information: np.ndarray, step_sigma: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factor of each track coordinate's precision ``D / s**2 + diag(w)``.

    Parameters
    ----------
    information : (T, K, 3) array
        ``w``: the cameras' information about each coordinate (1 / variance; 0 where they say nothing).
    step_sigma : (K,) array
        The random walk's step sd per keypoint.
    floor : float
        Added to ``w`` so that a track no camera informs still has a positive-definite precision.

    Returns
    -------
    diag, sub : (T, K, 3) arrays
        ``L[t, t]`` and ``L[t, t - 1]`` (``sub[0]`` is 0).
    """
    w = np.asarray(information, float) + float(floor)
    T = w.shape[0]
    inv_s2 = 1.0 / np.asarray(step_sigma, float)[None, :, None] ** 2
    neighbours = np.full((T, 1, 1), 2.0)
    neighbours[[0, -1]] = 1.0
    d = w + (neighbours * inv_s2 if T > 1 else 0.0)
    diag, sub = np.empty_like(d), np.zeros_like(d)
    diag[0] = np.sqrt(d[0])
    for t in range(1, T):
        sub[t] = -inv_s2[0] / diag[t - 1]
        diag[t] = np.sqrt(d[t] - sub[t] ** 2)
    return diag, sub


def walk_dominated(covariance: np.ndarray, step_sigma: np.ndarray) -> np.ndarray:
    """``(K,)`` bool: keypoints whose step sd is below their points' triangulation sd (median over frames and axes).

    There the random walk ties the frames together more tightly than the cameras pin each one, and the positions'
    own coordinates are badly conditioned; where the cameras dominate, whitening is a per-frame scaling that the
    sampler's diagonal mass matrix already provides (on ``rodent18_realistic``, triangulation sd / step sd is
    0.2 for every keypoint; on the real SLEAP + Anipose mouse 8-88).

    Parameters
    ----------
    covariance : (T, K, 3, 3) array
        The start's triangulation covariance (NaN where fewer than two cameras).
    step_sigma : (K,) array
    """
    variance = np.diagonal(np.asarray(covariance, float), axis1=-2, axis2=-1)  # (T, K, 3)
    known = np.isfinite(variance).any(axis=(0, 2))
    typical = np.full(variance.shape[1], np.nan)
    typical[known] = np.nanmedian(variance[:, known], axis=(0, 2))
    return known & (typical > np.asarray(step_sigma, float) ** 2)


@numba.njit(cache=True)
def _solve(rhs, diag, sub, transpose):
    """``L^-T rhs`` (``transpose=False``: a backward recurrence) or ``L^-1 rhs`` (forward), along axis 0."""
    out = np.empty_like(rhs)
    T, K, D = rhs.shape
    for k in range(K):
        for d in range(D):
            if transpose:
                out[0, k, d] = rhs[0, k, d] / diag[0, k, d]
                for t in range(1, T):
                    out[t, k, d] = (rhs[t, k, d] - sub[t, k, d] * out[t - 1, k, d]) / diag[t, k, d]
            else:
                out[T - 1, k, d] = rhs[T - 1, k, d] / diag[T - 1, k, d]
                for t in range(T - 2, -1, -1):
                    out[t, k, d] = (rhs[t, k, d] - sub[t + 1, k, d] * out[t + 1, k, d]) / diag[t, k, d]
    return out


class BidiagonalSolve(Op):
    """``L^-T z`` for a lower-bidiagonal ``L`` given by ``diag``, ``sub`` (all ``(T, K, 3)``); ``transpose=True``: ``L^-1 z``.

    Each is the other's pullback; ``diag`` and ``sub`` are data (not differentiated).
    """

    __props__ = ("transpose",)

    def __init__(self, transpose: bool = False):
        self.transpose = bool(transpose)

    def make_node(self, z, diag, sub):
        z, diag, sub = (pt.as_tensor_variable(v).astype("float64") for v in (z, diag, sub))
        return Apply(self, [z, diag, sub], [z.type()])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = _solve(*inputs, self.transpose)

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def pullback(self, inputs, outputs, cotangents):
        _, diag, sub = inputs
        return [BidiagonalSolve(not self.transpose)(cotangents[0], diag, sub),
                *(grad_not_implemented(self, i, inputs[i]) for i in (1, 2))]


@register_funcify_default_op_cache_key(BidiagonalSolve)
def _numba_bidiagonal_solve(op, node=None, **kwargs):
    transpose = op.transpose

    @numba.njit
    def bidiagonal_solve(z, diag, sub):
        return _solve(z, diag, sub, transpose)

    return bidiagonal_solve, SOURCE_KEY


class TrackWhitening(Transform):
    """``x = mu + L^-T z`` (backward) and ``z = L^T (x - mu)`` (forward) along the frame axis.

    ``mu``, ``diag`` and ``sub`` (``(T, K, 3)``, see :func:`track_factor`) are the last three inputs of the
    variable (:func:`whitened_flat`), so that they are part of its graph.
    """

    name = "whitened"
    ndim_supp = 0

    def forward(self, value, *inputs):
        mu, diag, sub = inputs[-3:]
        u = value - mu
        ahead = pt.concatenate([sub[1:] * u[1:], pt.zeros_like(u[:1])], axis=0)
        return diag * u + ahead

    def backward(self, value, *inputs):
        mu, diag, sub = inputs[-3:]
        return mu + BidiagonalSolve()(value, diag, sub)

    def log_jac_det(self, value, *inputs):
        # log |det dx/dz| = -sum(log diag), spread over the elements (the variable's density is elementwise)
        return pt.zeros_like(value) - pt.log(inputs[-2])


def _flat_logp(value, mu, diag, sub):
    return pt.zeros_like(value)


def whitened_flat(name: str, mu, diag, sub, **kwargs):
    """A flat variable like ``pm.Flat`` that the sampler moves in :class:`TrackWhitening`'s coordinates.

    ``mu``, ``diag``, ``sub``: ``(T, K, 3)`` tensors; ``kwargs`` go to ``pm.CustomDist`` (``dims``, ``initval``).
    """
    return pm.CustomDist(name, mu, diag, sub, logp=_flat_logp, transform=TrackWhitening(), signature="(),(),()->()",
                         **kwargs)


def whitening_of(model, rv) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(mu, diag, sub)`` as arrays where ``rv`` is sampled in :class:`TrackWhitening`'s coordinates, else None."""
    if not isinstance(model.rvs_to_transforms.get(rv), TrackWhitening):
        return None
    return tuple(np.asarray(v.get_value() if hasattr(v, "get_value") else v.data, float) for v in rv.owner.inputs[-3:])


def whitened_keypoints(model) -> list[str]:
    """Names of the keypoints whose tracks ``model`` samples whitened (none where ``x`` is not whitened)."""
    rv = model.named_vars.get("x")
    arrays = None if rv is None else whitening_of(model, rv)
    if arrays is None:
        return []
    chosen = (arrays[2] != 0).any(axis=(0, 2))  # a whitened track is tied to its neighbours: sub != 0
    return [str(k) for k, c in zip(model.coords["keypoint"], chosen) if c]


def to_positions(z: np.ndarray, mu: np.ndarray, diag: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """:class:`TrackWhitening`'s backward map on arrays: ``x = mu + L^-T z``."""
    return mu + _solve(np.asarray(z, float), diag, sub, False)


def to_coordinates(x: np.ndarray, mu: np.ndarray, diag: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """:class:`TrackWhitening`'s forward map on arrays: ``z = L^T (x - mu)``."""
    u = np.asarray(x, float) - mu
    z = diag * u
    z[:-1] += sub[1:] * u[1:]
    return z
