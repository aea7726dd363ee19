"""Metropolis moves between a keypoint's explanations, to run next to NUTS in PyMC's compound sampler.

Where a keypoint's detections disagree, its posterior has two (or more) separate modes: two groups of cameras agree
on two different 3D points (a left/right swap, a confusion with another body part seen the same way by two cameras);
one camera's detection is a few noise sds off the point the others agree on (an inlier or an outlier: both fit);
or one camera's ray crosses the sphere of the bone's length around the parent twice. NUTS moves within a mode;
between modes it needs a trajectory through the low-density region between them, which it rarely finds once
warm-up has shrunk its steps, so chains that warm up in different modes stay there or cross rarely (R-hat > 1.01
and a low ESS at those positions).

A *move* jumps between the modes directly. The candidates come from the detections, before sampling (they never
depend on a chain's state; :func:`explanation_blocks`): for a run of frames where a keypoint has two explanations
``A_t`` and ``B_t`` (two camera groups' points, or the other cameras' point without and with one camera), the move
reflects the keypoint's position in each frame of the run across the plane halfway between ``A_t`` and ``B_t`` (so
``A_t`` and ``B_t`` trade places); for a run where no two cameras agree and one camera sees it, the move reflects it
across the plane through its parent perpendicular to that camera's ray (the two crossings of the ray with any sphere
around the parent trade places). Either move can carry the keypoint's descendants along by the same displacement.
Every move is an involution with unit Jacobian, so the Metropolis acceptance probability is the ratio of the
posterior densities, and the moves leave the posterior exactly invariant.

The density ratio is computed locally (:class:`ExplanationMoves`): the model's per-frame observation log-likelihood
and pose emissions depend on their own frame only, so they are evaluated once at the current point and once per
round with all of the round's moves applied (a round's moves never share a frame, nor a frame next to one); the
temporal prior's steps into and out of the block are added, and the HMM's marginal likelihood (which couples all
frames) is recomputed over the block from the forward message before it and the backward message after it.
``tests/test_moves.py`` checks every ratio against the full model log density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pymc.step_methods.compound import BlockedStep, Competence

from .cameras import ray_directions, reprojection_error, triangulate_dlt, triangulation_candidates
from .whitening import to_coordinates, to_positions, whitening_of

__all__ = ["ExplanationBlock", "explanation_blocks", "ExplanationMoves", "move_counts", "sum_counts",
           "DEFAULT_ROUNDS", "GROUP_SEPARATION_SD", "CAMERA_BAND_SD"]

# in pixel-noise standard deviations: two camera groups count as two explanations when each group's cameras put the
# other's point this far off; a detection this far from the other cameras' point may be an inlier or an outlier
# (the mixture's transition zone)
GROUP_SEPARATION_SD = 5.0
CAMERA_BAND_SD = (2.5, 15.0)
# rounds of moves per iteration (ExplanationMoves)
DEFAULT_ROUNDS = 16


@dataclass(frozen=True)
class ExplanationBlock:
    """A run of frames where one keypoint has a second explanation, and the reflection that swaps the two.

    ``kind`` is ``"groups"`` (two camera groups) or ``"camera"`` (one camera's detection an inlier or not): reflect
    across the plane through ``anchor[i]`` with unit normal ``normal[i]``; or ``"ray"`` (one camera): reflect across
    the plane through the parent's current position with unit normal ``normal[i]``, the camera's ray (``anchor``
    unused; never the root).
    """

    keypoint: int
    frames: np.ndarray  # (L,) consecutive frame indices
    kind: str
    normal: np.ndarray  # (L, 3) unit vectors
    anchor: np.ndarray  # (L, 3)

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])


def _runs(mask: np.ndarray, max_len: int):
    """Runs of consecutive True frames in ``mask`` (T,), split into pieces of at most ``max_len``."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    return [r[i:i + max_len] for r in runs for i in range(0, r.size, max_len)]


def explanation_blocks(dataset: xr.Dataset, pixel_noise: float = 4.0, *, max_frames: int = 30, rays: bool = True,
                       cameras: bool = True) -> list[ExplanationBlock]:
    """The moves' candidates: runs of frames where a keypoint's detections support two explanations.

    Parameters
    ----------
    dataset : xarray.Dataset
        ``observations`` (frame, camera, keypoint, 2) and ``camera_matrix`` (camera, 3, 4).
    pixel_noise : float
        The detections' noise standard deviation in pixels (e.g. the model's start value,
        ``model.gimbal_init.values["obs_sigma"]``). A camera agrees with a point when its detection is within
        ``GROUP_SEPARATION_SD`` noise sds of the point's projection. Two explanations: the best two-view candidate
        (most agreeing cameras) and another that at least two cameras agree with, at least two of which disagree
        with the first.
    max_frames : int
        Longer runs are split: a long run is swapped as a whole less often than its pieces.
    rays : bool
        Also make one-camera blocks: runs where no two cameras agree on a point but one detects the keypoint (one
        block per such camera; not for the root, which has no parent to reflect about).
    cameras : bool
        Also make one block per camera and run of frames where that camera's detection lies ``CAMERA_BAND_SD``
        noise sds from the projection of the best candidate fitted without it (which at least two other cameras
        agree on): the two explanations are that point and the one fitted with the camera (its detection an inlier
        or an outlier: the transition zone of the inlier/outlier mixture, where such positions mix slowly).

    Returns
    -------
    list of ExplanationBlock
    """
    obs = np.moveaxis(dataset["observations"].values, 1, 2)  # (T, K, C, 2)
    P = dataset["camera_matrix"].values
    T, K = obs.shape[:2]
    if not (np.isfinite(pixel_noise) and pixel_noise > 0):
        raise ValueError(f"pixel_noise must be a positive number of pixels, got {pixel_noise!r}.")
    threshold_px = GROUP_SEPARATION_SD * float(pixel_noise)
    cand = triangulation_candidates(obs, P, threshold_px, normalize=False)  # the start's candidates' solve
    points = cand.points  # (pairs, T, K, 3)
    err = reprojection_error(points, obs[None], P)  # (pairs, T, K, C)
    with np.errstate(invalid="ignore"):
        agree = err <= threshold_px  # NaN compares False
    best = np.argmax(cand.score, axis=0)  # (T, K)
    has_best = np.isfinite(np.take_along_axis(cand.score, best[None], axis=0)[0])
    agree_best = np.take_along_axis(agree, best[None, ..., None], axis=0)[0]  # (T, K, C)
    # a second explanation: its agreeing cameras include >= 2 that disagree with the best one
    other = (agree & ~agree_best[None]).sum(-1) >= 2  # (pairs, T, K)
    other &= np.isfinite(cand.score) & has_best[None]
    score2 = np.where(other, cand.score, -np.inf)
    second = np.argmax(score2, axis=0)
    has_second = np.isfinite(np.take_along_axis(score2, second[None], axis=0)[0])
    a = np.take_along_axis(points, best[None, ..., None], axis=0)[0]
    b = np.take_along_axis(points, second[None, ..., None], axis=0)[0]
    blocks = _swap_blocks(has_second, a, b, "groups", max_frames)
    if cameras:
        band = (CAMERA_BAND_SD[0] * float(pixel_noise), CAMERA_BAND_SD[1] * float(pixel_noise))
        blocks += _camera_blocks(obs, P, agree_best & has_best[..., None], band, max_frames)
    if rays:
        seen = np.isfinite(obs).all(-1)  # (T, K, C)
        ray = np.moveaxis(ray_directions(np.moveaxis(obs, 1, 2), P), 1, 2)  # (T, K, C, 3)
        weak = ~has_best
        parents = dataset["parents"].values
        for k in range(K):
            if parents[k] < 0:
                continue  # the root: no parent to reflect about
            for c in range(P.shape[0]):
                for run in _runs(weak[:, k] & seen[:, k, c], max_frames):
                    blocks.append(ExplanationBlock(k, run, "ray", ray[run, k, c], np.zeros((run.size, 3))))
    return blocks


def _camera_blocks(obs, P, agree_best, band_px, max_frames) -> list[ExplanationBlock]:
    """One-camera blocks: the best candidate's cameras without camera ``c`` against them with ``c``."""
    C = agree_best.shape[-1]
    seen = np.isfinite(obs).all(-1)
    blocks = []
    for c in range(C):
        others = agree_best.copy()
        others[..., c] = False
        usable = others.sum(-1) >= 2
        a = triangulate_dlt(np.where(others[..., None], obs, np.nan), P, normalize=False)  # (T, K, 3) without c
        with_c = others.copy()
        with_c[..., c] = seen[..., c]
        b = triangulate_dlt(np.where(with_c[..., None], obs, np.nan), P, normalize=False)
        with np.errstate(invalid="ignore"):
            off = reprojection_error(a, obs, P)[..., c]  # (T, K): c's detection from the point fitted without it
            ok = usable & seen[..., c] & (off >= band_px[0]) & (off <= band_px[1])
        blocks += _swap_blocks(ok, a, b, "camera", max_frames)
    return blocks


def _swap_blocks(mask, a, b, kind: str, max_frames: int) -> list[ExplanationBlock]:
    """Blocks over the runs of ``mask`` (T, K) whose move reflects across the plane halfway between ``a`` and ``b``."""
    diff = b - a
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(diff, axis=-1)
        mask = mask & (dist > 0)  # NaN (no point) compares False
    blocks = []
    for k in range(mask.shape[1]):
        for run in _runs(mask[:, k], max_frames):
            normal = diff[run, k] / dist[run, k, None]
            blocks.append(ExplanationBlock(k, run, kind, normal, 0.5 * (a[run, k] + b[run, k])))
    return blocks


@numba.njit(cache=True)
def _backward_messages(log_emission, A):
    """Scaled backward messages ``beta[t] proportional to p(frames after t | state at t)``, ``(T, S)``."""
    T, S = log_emission.shape
    beta = np.ones((T, S))
    for t in range(T - 2, -1, -1):
        m = log_emission[t + 1].max()
        total = 0.0
        for i in range(S):
            b = 0.0
            for j in range(S):
                b += A[i, j] * math.exp(log_emission[t + 1, j] - m) * beta[t + 1, j]
            beta[t, i] = b
            total += b
        for i in range(S):
            beta[t, i] /= total
    return beta


@numba.njit(cache=True)
def _advance(alpha, log_emission, A, init):
    """The scaled forward message after the frames of ``log_emission``, from ``alpha`` (or the start when it is
    empty: ``init`` are the first frame's state probabilities); returns the message and its log scale."""
    S = log_emission.shape[1]
    a = alpha.copy()
    log_scale = 0.0
    nxt = np.empty(S)
    for t in range(log_emission.shape[0]):
        m = log_emission[t].max()
        total = 0.0
        for j in range(S):
            if a.size == 0:
                pred = init[j]
            else:
                pred = 0.0
                for i in range(S):
                    pred += a[i] * A[i, j]
            nxt[j] = pred * math.exp(log_emission[t, j] - m)
            total += nxt[j]
        a = nxt / total
        log_scale += math.log(total) + m
    return a, log_scale


@numba.njit(cache=True)
def _block_log_ratio(alpha, current, proposed, beta_next, A, init):
    """log of the HMM's marginal likelihood with a block of frames' emissions ``proposed`` over ``current``, the
    frames before it summarized by the forward message ``alpha`` (empty at the first frame) and those after it by
    the backward message ``beta_next``."""
    a_cur, s_cur = _advance(alpha, current, A, init)
    a_new, s_new = _advance(alpha, proposed, A, init)
    return s_new - s_cur + math.log(np.dot(a_new, beta_next)) - math.log(np.dot(a_cur, beta_next))


@numba.njit(cache=True)
def _assign_rounds(order, first, last, n_rounds, n_frames):
    """Each block's round (-1: left out this time): in ``order``, the first round where none of its frames, nor
    the frame either side, belongs to a block already there."""
    taken = np.zeros((n_rounds, n_frames + 2), np.bool_)
    out = np.full(first.size, -1)
    for i in order:
        for r in range(n_rounds):
            free = True
            for t in range(first[i], last[i] + 3):  # frames first-1 .. last+1, shifted by one
                if taken[r, t]:
                    free = False
                    break
            if free:
                for t in range(first[i], last[i] + 3):
                    taken[r, t] = True
                out[i] = r
                break
    return out


def _descendants(parents: np.ndarray, k: int) -> np.ndarray:
    """``k`` and every keypoint below it in the skeleton (``parents[root] == -1`` or the root itself)."""
    out = [k]
    changed = True
    while changed:
        changed = False
        for j, p in enumerate(parents):
            if j not in out and p in out and p != j:
                out.append(j)
                changed = True
    return np.array(sorted(out))


@dataclass(frozen=True)
class _Packed:
    """Blocks as flat arrays for the compiled round: block ``i`` covers rows ``offset[i]:offset[i + 1]`` of
    ``frames``, ``normal`` and ``anchor``."""

    offset: np.ndarray  # (n + 1,) int64
    frames: np.ndarray  # (rows,) int64
    normal: np.ndarray  # (rows, 3)
    anchor: np.ndarray  # (rows, 3)
    keypoint: np.ndarray  # (n,) int64
    ray: np.ndarray  # (n,) bool: reflect about the parent's current position

    @classmethod
    def of(cls, blocks: list[ExplanationBlock]) -> "_Packed":
        if not blocks:
            return cls(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)),
                       np.zeros(0, np.int64), np.zeros(0, np.bool_))
        offset = np.concatenate([[0], np.cumsum([b.frames.size for b in blocks])]).astype(np.int64)
        return cls(offset, np.concatenate([b.frames for b in blocks]).astype(np.int64),
                   np.concatenate([b.normal for b in blocks]).astype(float),
                   np.concatenate([b.anchor for b in blocks]).astype(float),
                   np.array([b.keypoint for b in blocks], np.int64), np.array([b.kind == "ray" for b in blocks]))


@numba.njit(cache=True)
def _moves_along(below, k, j, carry):
    """Whether a move of keypoint ``k`` moves keypoint ``j`` (itself, or one below it when ``carry``)."""
    return j == k or (carry and below[k, j])


@numba.njit(cache=True)
def _propose(x, prop, idx, carry, offset, frames, normal, anchor, keypoint, ray, parents, below):
    """Write each chosen block's reflection of ``x`` into ``prop`` (the moved keypoint, and with ``carry`` the ones
    below it, shifted by the same vector)."""
    K = x.shape[1]
    for m in range(idx.size):
        i = idx[m]
        k = keypoint[i]
        for row in range(offset[i], offset[i + 1]):
            f = frames[row]
            d = 0.0
            for a in range(3):
                base = x[f, parents[k], a] if ray[i] else anchor[row, a]
                d += (x[f, k, a] - base) * normal[row, a]
            for j in range(K):
                if _moves_along(below, k, j, carry[m]):
                    for a in range(3):
                        prop[f, j, a] = x[f, j, a] - 2.0 * d * normal[row, a]


@numba.njit(cache=True)
def _rate(x, prop, idx, carry, decision, log_u, offset, frames, keypoint, below, log_obs, log_obs_p, emission,
          emission_p, mode, A, init, log_init, beta, step_sigma, step_dof, temporal, center, anchor_spread):
    """Rate the chosen blocks (frame order, disjoint) one after the other and accept or reject each.

    ``mode``: 2 the HMM (forward message carried past accepted moves, backward messages ``beta`` from the round's
    start), 1 a mixture of states, 0 one state. ``decision[m]``: 1 accept, 0 reject, -1 Metropolis with ``log_u[m]``.
    ``x``, ``emission`` and ``log_obs`` are updated in place for accepted moves. ``step_dof``: 0 for Gaussian steps of
    the random walk, else the Student-t's degrees of freedom. Returns the log ratios and the number accepted.
    """
    T, K = x.shape[0], x.shape[1]
    deltas = np.empty(idx.size)
    accepted = 0
    alpha = np.zeros(0)
    done = 0
    for m in range(idx.size):
        i = idx[m]
        k = keypoint[i]
        first, last = frames[offset[i]], frames[offset[i + 1] - 1]
        delta = 0.0
        for t in range(first, last + 1):
            delta += log_obs_p[t] - log_obs[t]
        if temporal:
            lo, hi = max(first - 1, 0), min(last + 1, T - 1)
            total = 0.0
            for j in range(K):
                if not _moves_along(below, k, j, carry[m]):
                    continue
                s2 = step_sigma[j] ** 2
                for t in range(lo, hi):
                    new, old = 0.0, 0.0
                    for a in range(3):
                        dn = prop[t + 1, j, a] - prop[t, j, a]
                        do = x[t + 1, j, a] - x[t, j, a]
                        new += dn * dn
                        old += do * do
                    if step_dof > 0:  # -(dof + 3) / 2 log(1 + |d|^2 / (dof s^2)), as gimbal.model.distributions.step_logp
                        total += (step_dof + 3) * (math.log1p(new / (step_dof * s2)) - math.log1p(old / (step_dof * s2)))
                    else:
                        total += (new - old) / s2
            delta -= 0.5 * total
            if first == 0 and _moves_along(below, k, 0, carry[m]):
                acc = 0.0
                for a in range(3):
                    acc += (prop[0, 0, a] - center[a]) ** 2 - (x[0, 0, a] - center[a]) ** 2
                delta -= 0.5 * acc / anchor_spread ** 2
        if mode == 2:
            alpha, _ = _advance(alpha, emission[done:first], A, init)
            done = first
            delta += _block_log_ratio(alpha, emission[first:last + 1], emission_p[first:last + 1], beta[last], A, init)
        else:
            S = emission.shape[1]
            for t in range(first, last + 1):
                if mode == 1:
                    mp, mc = -np.inf, -np.inf
                    for s in range(S):
                        mp = max(mp, emission_p[t, s] + log_init[s])
                        mc = max(mc, emission[t, s] + log_init[s])
                    sp, sc = 0.0, 0.0
                    for s in range(S):
                        sp += math.exp(emission_p[t, s] + log_init[s] - mp)
                        sc += math.exp(emission[t, s] + log_init[s] - mc)
                    delta += mp + math.log(sp) - mc - math.log(sc)
                else:
                    delta += emission_p[t, 0] - emission[t, 0]
        deltas[m] = delta
        if decision[m] == 1:
            accept = True
        elif decision[m] == 0:
            accept = False
        else:
            accept = np.isfinite(delta) and log_u[m] < delta
        if accept:
            accepted += 1
            for t in range(first, last + 1):
                for j in range(K):
                    if _moves_along(below, k, j, carry[m]):
                        for a in range(3):
                            x[t, j, a] = prop[t, j, a]
                for s in range(emission.shape[1]):
                    emission[t, s] = emission_p[t, s]
                log_obs[t] = log_obs_p[t]
    return deltas, accepted


class ExplanationMoves(BlockedStep):
    """A PyMC step method that tries :class:`ExplanationBlock` moves, in rounds, once per iteration.

    Use it with NUTS over all variables in :func:`pymc.sample`'s ``step`` (:func:`gimbal.model.fitting.sample_model`
    with ``sampler="pymc"`` and ``moves``). Each iteration shuffles the blocks and deals them into ``rounds``: a
    block goes to the first round where its frames and the frame either side are free, and is left out this time
    where there is none; each gets a fair coin for whether the keypoint's descendants move along. In each round all
    its moves are applied at once to evaluate the model's per-frame terms (observation log-likelihood and pose
    emissions depend on their own frame only), then each move, in frame order, is accepted or rejected with its
    exact log density ratio: the changed frames' terms, the temporal prior's steps into and out of the block, and
    the HMM's marginal likelihood from the forward message before the block and the backward message after it
    (compiled: a round costs about one evaluation of the per-frame terms, however many moves it holds).

    Parameters
    ----------
    vars : list, optional
        The positions' value variable (the default; the moves change nothing else). Where the sampler moves the
        positions in whitened coordinates (``build_model(whitened_tracks="still")`` or ``"all"``) the moves still act on
        ``x`` and map to and from those coordinates (a linear map with a constant Jacobian: the same ratios).
    blocks : list of ExplanationBlock
    parents : (K,) array of int, optional
        The skeleton's parent of each keypoint (``-1`` for the root); default: the model's skeleton.
    rounds : int
        Rounds per iteration (each costs one evaluation of the per-frame terms). More rounds try more of the
        blocks per iteration: a frame belongs to one block per round.
    model : pymc.Model
        A GIMBAL model from :func:`gimbal.model.build.build_model` with free positions ``x`` (centred root dynamics),
        directions integrated out, fixed scales.
    """

    name = "explanation_moves"
    stats_dtypes_shapes = {"moves_tried": (np.int64, []), "moves_accepted": (np.int64, [])}

    def __init__(self, vars=None, *, blocks: list[ExplanationBlock], parents=None, rounds: int = DEFAULT_ROUNDS,
                 model=None, rng=None, blocked=True):
        model = pm.modelcontext(model)
        config = model.gimbal_config
        if (config.freeze_latents is not None or config.root_dynamics != "centered" or config.directions != "marginal"
                or config.scales != "fixed"):
            raise ValueError("explanation moves need free positions x (freeze_latents=None, root_dynamics='centered'), "
                             "directions='marginal' and scales='fixed'.")
        if np.any(getattr(model, "gimbal_step_relative", False)):
            raise ValueError("explanation moves score the random walk of each position in the world: build the model "
                             "with step_frame='world' (CLI: --step-frame world).")
        if int(rounds) < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}.")
        self.blocks = list(blocks)
        self.packed = _Packed.of(self.blocks)
        self.first = self.packed.frames[self.packed.offset[:-1]]
        self.last = self.packed.frames[self.packed.offset[1:] - 1]
        self.rounds = int(rounds)
        self.model = model
        value = model.rvs_to_values[model["x"]]
        self.vars = [value]
        self.var_names = (value.name,)
        self.whitening = whitening_of(model, model["x"])  # the moves act on x; the sampler may see it whitened
        init = model.gimbal_init
        self.parents = np.asarray(model.gimbal_skeleton.parents if parents is None else parents, np.int64)
        K = self.parents.size
        self.below = np.zeros((K, K), np.bool_)  # below[k, j]: j is k or a descendant of k
        for k in range(K):
            self.below[k, _descendants(self.parents, k)] = True
        self.hmm = config.use_directional_hmm and config.n_states > 1
        self.mixture = (not config.use_directional_hmm) and config.n_states > 1
        states = init.pose_states
        S = states.n_states
        initial = np.full(S, 1.0 / S) if states.initial is None else states.initial
        self.log_init = np.log(np.maximum(initial, 1e-300))
        self.init = np.exp(self.log_init)
        self.temporal = bool(config.temporal and init.positions.shape[0] > 1)
        self.step_sigma = np.asarray(init.values["step_sigma"], float)
        self.step_dof = config.step_dof or 0.0  # 0: Gaussian steps
        self.anchor_spread = 10.0 * float(np.max(init.values["bone_length"], initial=1.0))
        self.center = np.asarray(init.center, float)
        self._fn = None
        self.rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng

    def _terms(self):
        """The compiled per-frame terms: emissions (T, S), log_obs_t (T,) and, with the HMM, log transitions."""
        if self._fn is None:
            model = self.model
            outs = [model.gimbal_terms["emission"], model["log_obs_t"]]
            if self.hmm:
                outs.append(pt.log(model["transition"]))
            outs = model.replace_rvs_by_values(outs)
            self._fn = model.compile_fn(outs, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")
        return self._fn

    @staticmethod
    def competence(var, has_grad):
        return Competence.INCOMPATIBLE

    def _deal(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """This iteration's rounds: block indices in frame order and their coins."""
        if not self.blocks:
            return []
        order = self.rng.permutation(len(self.blocks))
        where = _assign_rounds(order, self.first, self.last, self.rounds, int(self.last.max()) + 1)
        coins = self.rng.random(len(self.blocks)) < 0.5
        rounds = []
        for r in range(self.rounds):
            idx = np.flatnonzero(where == r)
            idx = idx[np.argsort(self.first[idx], kind="stable")].astype(np.int64)
            if idx.size:
                rounds.append((idx, coins[idx]))
        return rounds

    def _round(self, point, x, terms, chosen, log_trans, decision=None, packed=None) -> tuple[int, np.ndarray]:
        """One round: the blocks ``chosen = (indices, coins)`` (frame order, disjoint) rated and accepted or rejected
        in turn.

        ``x`` and ``terms`` (emissions, per-frame observation log-likelihood at ``x``) are updated in place;
        ``decision`` (1 accept, 0 reject, -1 Metropolis; default all -1) forces choices. Returns the number accepted
        and every move's log density ratio.
        """
        pk = self.packed if packed is None else packed
        idx, carry = chosen
        emission, log_obs = terms
        prop = x.copy()
        _propose(x, prop, idx, carry, pk.offset, pk.frames, pk.normal, pk.anchor, pk.keypoint, pk.ray, self.parents,
                 self.below)
        outs = self._terms()(self._with_positions(point, prop))
        emission_p, log_obs_p = np.asarray(outs[0], float), np.asarray(outs[1], float)
        if self.hmm:
            A = np.exp(log_trans)
            beta = _backward_messages(emission, A)  # frames after a block are not changed before it is rated
            mode = 2
        else:
            A, beta = np.ones((1, 1)), np.ones((1, 1))
            mode = 1 if self.mixture else 0
        decision = np.full(idx.size, -1, np.int64) if decision is None else np.asarray(decision, np.int64)
        log_u = np.log(self.rng.random(idx.size))
        deltas, accepted = _rate(x, prop, idx, carry, decision, log_u, pk.offset, pk.frames, pk.keypoint, self.below,
                                 log_obs, log_obs_p, emission, emission_p, mode, A, self.init,
                                 self.log_init, beta, self.step_sigma, self.step_dof, self.temporal, self.center,
                                 self.anchor_spread)
        return int(accepted), deltas

    def positions(self, point) -> np.ndarray:
        """The positions ``x`` at a point of the sampler's coordinates."""
        value = np.array(point[self.var_names[0]], float)
        return value if self.whitening is None else to_positions(value, *self.whitening)

    def _with_positions(self, point, x) -> dict:
        """``point`` with its positions replaced by ``x``."""
        value = x if self.whitening is None else to_coordinates(x, *self.whitening)
        return {**point, self.var_names[0]: value}

    def _start(self, point):
        x = self.positions(point)
        outs = self._terms()(point)
        terms = (np.array(outs[0], float), np.array(outs[1], float))
        return x, terms, (np.asarray(outs[2]) if self.hmm else None)

    def log_ratio(self, point, block: ExplanationBlock, carry: bool) -> tuple[float, np.ndarray]:
        """The log density ratio of one move from ``point`` and the moved positions (what a round computes)."""
        x, terms, log_trans = self._start(point)
        chosen = (np.zeros(1, np.int64), np.array([bool(carry)]))
        _, deltas = self._round(point, x, terms, chosen, log_trans, decision=[1], packed=_Packed.of([block]))
        return float(deltas[0]), x

    def step(self, point):
        rounds = self._deal()
        if not rounds:
            return point, [{"moves_tried": 0, "moves_accepted": 0}]
        x, terms, log_trans = self._start(point)
        accepted = sum(self._round(point, x, terms, chosen, log_trans)[0] for chosen in rounds)
        return self._with_positions(point, x), [{"moves_tried": sum(c[0].size for c in rounds), "moves_accepted": accepted}]


def move_counts(trace, n_candidates: int, rounds: int = DEFAULT_ROUNDS) -> dict:
    """How often the moves were tried and accepted over the kept draws of every chain (``summary.json``'s ``moves``).

    ``trace`` is a PyMC trace sampled with :class:`ExplanationMoves`; ``n_candidates`` the number of blocks and
    ``rounds`` the rounds per iteration they were dealt into.
    """
    stats = trace["sample_stats"]
    tried, accepted = int(stats["moves_tried"].sum()), int(stats["moves_accepted"].sum())
    return {"candidate_runs": n_candidates, "rounds": int(rounds), "tried": tried, "accepted": accepted,
            "acceptance": accepted / tried if tried else None}


def sum_counts(counts: list[dict]) -> dict:
    """:func:`move_counts` of several runs (the windows of a windowed fit) added up."""
    tried, accepted = sum(c["tried"] for c in counts), sum(c["accepted"] for c in counts)
    return {"candidate_runs": sum(c["candidate_runs"] for c in counts), "rounds": max(c["rounds"] for c in counts),
            "tried": tried, "accepted": accepted, "acceptance": accepted / tried if tried else None}
