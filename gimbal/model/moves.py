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

from .cameras import reprojection_error, triangulate_dlt, triangulation_candidates

__all__ = ["ExplanationBlock", "explanation_blocks", "ExplanationMoves", "move_counts", "GROUP_SEPARATION_SD",
           "CAMERA_BAND_SD"]

# in pixel-noise standard deviations: two camera groups count as two explanations when each group's cameras put the
# other's point this far off; a detection this far from the other cameras' point may be an inlier or an outlier
# (the mixture's transition zone)
GROUP_SEPARATION_SD = 5.0
CAMERA_BAND_SD = (2.5, 15.0)


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


def _camera_rays(observations: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """Unit direction of each detection's back-projected ray, ``(T, C, K, 3)`` (NaN where missing)."""
    M = cameras[:, :, :3]  # (C, 3, 3)
    uv1 = np.concatenate([observations, np.ones(observations.shape[:-1] + (1,))], axis=-1)  # (T, C, K, 3)
    d = np.einsum("cij,tckj->tcki", np.linalg.inv(M), uv1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


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
    cand = triangulation_candidates(obs, P, threshold_px)
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
        ray = np.moveaxis(_camera_rays(np.moveaxis(obs, 1, 2), P), 1, 2)  # (T, K, C, 3)
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
        a = triangulate_dlt(np.where(others[..., None], obs, np.nan), P)  # (T, K, 3) without c
        with_c = others.copy()
        with_c[..., c] = seen[..., c]
        b = triangulate_dlt(np.where(with_c[..., None], obs, np.nan), P)
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
            blocks.append(ExplanationBlock(k, run, kind, diff[run, k] / dist[run, k, None], 0.5 * (a[run, k] + b[run, k])))
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


class ExplanationMoves(BlockedStep):
    """A PyMC step method that tries :class:`ExplanationBlock` moves, in rounds, once per iteration.

    Use it with NUTS over all variables in :func:`pymc.sample`'s ``step`` (:func:`gimbal.model.fitting.sample_model`
    with ``sampler="pymc"`` and ``moves``). Each iteration shuffles the blocks and deals them into ``rounds``: a
    block goes to the first round where its frames and the frame either side are free, and is left out this time
    where there is none; each gets a fair coin for whether the keypoint's descendants move along. In each round all
    its moves are applied at once to evaluate the model's per-frame terms (observation log-likelihood and pose
    emissions depend on their own frame only), then each move, in frame order, is accepted or rejected with its
    exact log density ratio: the changed frames' terms, the temporal prior's steps into and out of the block, and
    the HMM's marginal likelihood from the forward message before the block and the backward message after it.

    Parameters
    ----------
    vars : list, optional
        The positions' value variable (the default; the moves change nothing else).
    blocks : list of ExplanationBlock
    parents : (K,) array of int, optional
        The skeleton's parent of each keypoint (``-1`` for the root); default: the model's skeleton.
    rounds : int
        Rounds per iteration (each costs one evaluation of the per-frame terms).
    model : pymc.Model
        A GIMBAL model from :func:`gimbal.model.build.build_model` with free positions ``x`` (centred root dynamics),
        directions integrated out, fixed scales.
    """

    name = "explanation_moves"
    stats_dtypes_shapes = {"moves_tried": (np.int64, []), "moves_accepted": (np.int64, [])}

    def __init__(self, vars=None, *, blocks: list[ExplanationBlock], parents=None, rounds: int = 4, model=None,
                 rng=None, blocked=True):
        model = pm.modelcontext(model)
        config = model.gimbal_config
        if (config.freeze_latents is not None or config.root_dynamics != "centered" or config.directions != "marginal"
                or config.scales != "fixed"):
            raise ValueError("explanation moves need free positions x (freeze_latents=None, root_dynamics='centered'), "
                             "directions='marginal' and scales='fixed'.")
        if int(rounds) < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}.")
        self.blocks = list(blocks)
        self.first = np.array([b.first for b in self.blocks], np.int64)
        self.last = np.array([b.last for b in self.blocks], np.int64)
        self.rounds = int(rounds)
        self.model = model
        self.vars = [model.rvs_to_values[model["x"]]]
        self.var_names = ("x",)
        init = model.gimbal_init
        self.parents = np.asarray(model.gimbal_skeleton.parents if parents is None else parents, int)
        self.moved = {}
        for k in range(self.parents.size):
            self.moved[(k, False)], self.moved[(k, True)] = np.array([k]), _descendants(self.parents, k)
        self.hmm = config.use_directional_hmm and config.n_states > 1
        self.mixture = (not config.use_directional_hmm) and config.n_states > 1
        states = init.pose_states
        S = states.n_states
        initial = np.full(S, 1.0 / S) if states.initial is None else states.initial
        self.log_init = np.log(np.maximum(initial, 1e-300))
        self.temporal = config.temporal and init.positions.shape[0] > 1
        self.step_sigma = np.asarray(init.values["step_sigma"], float)
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

    def _deal(self) -> list[list[tuple[ExplanationBlock, bool]]]:
        """This iteration's rounds: blocks (in frame order) with their coins."""
        if not self.blocks:
            return []
        order = self.rng.permutation(len(self.blocks))
        where = _assign_rounds(order, self.first, self.last, self.rounds, int(self.last.max()) + 1)
        coins = self.rng.random(len(self.blocks)) < 0.5
        rounds = []
        for r in range(self.rounds):
            idx = np.flatnonzero(where == r)
            idx = idx[np.argsort(self.first[idx], kind="stable")]
            if idx.size:
                rounds.append([(self.blocks[i], bool(coins[i])) for i in idx])
        return rounds

    def _apply(self, x: np.ndarray, block: ExplanationBlock, carry: bool) -> tuple[np.ndarray, np.ndarray]:
        """The block's reflection of ``x``: the moved keypoints and their new positions ``(L, moved, 3)``."""
        f, k = block.frames, block.keypoint
        p = x[f, k]  # (L, 3)
        base = block.anchor if block.kind != "ray" else x[f, self.parents[k]]
        shift = -2.0 * np.einsum("li,li->l", p - base, block.normal)[:, None] * block.normal  # (L, 3)
        moved = self.moved[(k, carry)]
        return moved, x[f][:, moved] + shift[:, None, :]

    def _temporal_delta(self, x: np.ndarray, block: ExplanationBlock, moved: np.ndarray, new: np.ndarray) -> float:
        if not self.temporal:
            return 0.0
        T = x.shape[0]
        lo, hi = max(block.first - 1, 0), min(block.last + 1, T - 1)
        seg_old = x[lo:hi + 1][:, moved]
        seg_new = seg_old.copy()
        seg_new[block.first - lo:block.last - lo + 1] = new
        step = self.step_sigma[moved]
        d_old = np.sum(np.diff(seg_old, axis=0) ** 2, axis=-1)
        d_new = np.sum(np.diff(seg_new, axis=0) ** 2, axis=-1)
        out = -0.5 * float(np.sum((d_new - d_old) / step ** 2))
        if block.first == 0 and 0 in moved:
            r = int(np.flatnonzero(moved == 0)[0])
            out += -0.5 * (np.sum((new[0, r] - self.center) ** 2) - np.sum((x[0, 0] - self.center) ** 2)) / self.anchor_spread ** 2
        return out

    def _metropolis(self, delta: float) -> bool:
        return bool(np.isfinite(delta) and np.log(self.rng.random()) < delta)

    def _round(self, point, x, terms, chosen, log_trans, decide=None) -> int:
        """One round: every move of ``chosen`` (frame order, disjoint) rated and accepted or rejected in turn.

        ``x`` and ``terms`` (emissions, per-frame observation log-likelihood at ``x``) are updated in place;
        ``decide(log_ratio) -> bool`` accepts (default: Metropolis). Returns the number accepted.
        """
        decide = decide or self._metropolis
        emission, log_obs = terms
        prop = x.copy()
        moves = []
        for block, carry in chosen:
            moved, new = self._apply(x, block, carry)
            prop[np.ix_(block.frames, moved)] = new
            moves.append((block, moved, new))
        outs = self._terms()({**point, "x": prop})
        emission_p, log_obs_p = np.asarray(outs[0]), np.asarray(outs[1])
        if self.hmm:
            A = np.exp(log_trans)
            init = np.exp(self.log_init)
            beta = _backward_messages(emission, A)  # frames after a block are not changed before it is rated
            alpha, done = np.zeros(0), 0  # the forward message after frames [0, done)
        accepted = 0
        for block, moved, new in moves:
            f = block.frames
            delta = float(np.sum(log_obs_p[f] - log_obs[f])) + self._temporal_delta(x, block, moved, new)
            if self.hmm:
                alpha, _ = _advance(alpha, emission[done:block.first], A, init)
                done = block.first
                delta += _block_log_ratio(alpha, emission[f], emission_p[f], beta[block.last], A, init)
            elif self.mixture:
                lse = lambda e: np.logaddexp.reduce(e + self.log_init[None], axis=1)  # noqa: E731
                delta += float(np.sum(lse(emission_p[f]) - lse(emission[f])))
            else:
                delta += float(np.sum(emission_p[f, 0] - emission[f, 0]))
            if decide(delta):
                x[np.ix_(f, moved)] = new
                emission[f] = emission_p[f]
                log_obs[f] = log_obs_p[f]
                accepted += 1
        return accepted

    def log_ratio(self, point, block: ExplanationBlock, carry: bool) -> tuple[float, np.ndarray]:
        """The log density ratio of one move from ``point`` and the moved positions (what a round computes)."""
        x = np.array(point["x"], float)
        outs = self._terms()(point)
        terms = (np.array(outs[0]), np.array(outs[1]))
        log_trans = np.asarray(outs[2]) if self.hmm else None
        rated = []
        self._round(point, x, terms, [(block, carry)], log_trans, decide=lambda d: rated.append(d) or True)
        return rated[0], x

    def step(self, point):
        rounds = self._deal()
        if not rounds:
            return point, [{"moves_tried": 0, "moves_accepted": 0}]
        x = np.array(point["x"], float)
        outs = self._terms()(point)
        terms = (np.array(outs[0]), np.array(outs[1]))
        log_trans = np.asarray(outs[2]) if self.hmm else None
        accepted = sum(self._round(point, x, terms, chosen, log_trans) for chosen in rounds)
        return {**point, "x": x}, [{"moves_tried": sum(len(c) for c in rounds), "moves_accepted": accepted}]


def move_counts(trace, n_candidates: int) -> dict:
    """How often the moves were tried and accepted over the kept draws of every chain (``summary.json``'s ``moves``).

    ``trace`` is a PyMC trace sampled with :class:`ExplanationMoves`; ``n_candidates`` the number of blocks.
    """
    stats = trace["sample_stats"]
    tried, accepted = int(stats["moves_tried"].sum()), int(stats["moves_accepted"].sum())
    return {"candidate_runs": n_candidates, "tried": tried, "accepted": accepted,
            "acceptance": accepted / tried if tried else None}
