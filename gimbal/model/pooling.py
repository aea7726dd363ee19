"""Pooled warm-up: the chains' explanations compared once, mid warm-up, and the start of the rest taken from the best.

Every chain starts at the robust triangulation. Where its detections mislead it (most cameras wrong, one right), that
start sits in a poor explanation of a keypoint, and a chain leaves it only by a rare NUTS trajectory across the
low-density region around it: on the realistic rodent at T = 1800, three of four chains left such a start during
warm-up (after 450-750 draws) and the fourth stayed for all of its draws, 17-19 mm off the truth (R-hat 1.5-1.7 at
those positions). Whichever chain is stuck, the others have usually found the better explanation by mid warm-up.

So warm-up runs in two stages (:func:`stages`). The first ends with a short window of draws at fixed adaptation;
there, a keypoint's run of frames is *disputed* where the chains' mean positions lie further apart than
:data:`DISPUTE_SD` within-chain standard deviations (:func:`disputed_runs`). The chain with the highest mean log
density over the window is the base, its last draw the point; each disputed run, parents before children, takes
another chain's positions of that keypoint and its descendants over those frames where that raises the model's full
log density by more than :data:`MARGIN` (:func:`pooled_start`). The second stage (the rest of warm-up, then the kept
draws) starts every chain at that repaired point, as the plain run starts every chain at the triangulation. Where the
first stage's chains sit in different regions of the global variables (on the real SLEAP mouse: which camera's
detections of a keypoint to believe), the base's region is the one every chain goes on in.

Only warm-up is changed: the kept draws are an ordinary NUTS run from the repaired start, and R-hat compares chains
that each had a whole second warm-up to leave it. Two explanations within the margin of each other (a posterior with
both, or noise) are left as the base chain has them and counted (``PooledStart.left_positions``): there the second
stage's chains start in one of them, so a run without pooling is the one whose R-hat compares them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from ..settings import MIN_STAGE_TUNE

__all__ = ["MIN_STAGE_TUNE", "WINDOW", "DISPUTE_SD", "MARGIN", "MAX_RUNS", "SiteRepair", "PooledStart", "stages",
           "plan", "second_stage_seed", "chain_spread", "disputed_runs", "pooled_start", "applies_to"]

WINDOW = 50  # the first stage's last draws, at fixed adaptation, that the chains' positions are compared over
DISPUTE_SD = 4.0  # chain means further apart than this many within-chain sds: a disputed position
MARGIN = 10.0  # log-density units another chain's explanation must gain to be taken (a density ratio of e^10)
MAX_RUNS = 1000  # disputed runs compared at most (the most disputed first): bounds the comparison's time
RUN_GAP = 2  # disputed frames of one keypoint at most this far apart are one run


@dataclass(frozen=True)
class SiteRepair:
    """One disputed run taken from another chain: frames ``first`` to ``last`` (inclusive) of ``keypoint`` and its
    descendants, from chain ``donor``, raising the log density by ``gain``."""

    keypoint: str
    first: int
    last: int
    donor: int
    gain: float


@dataclass(frozen=True)
class PooledStart:
    """The second stage's start and how it was made.

    ``point`` holds each free variable's constrained value, ``values`` the same point as the model's value variables
    (what its log density takes).
    """

    point: dict
    values: dict
    base: int  # the chain the start was built on
    disputed_positions: int
    runs_compared: int
    repairs: tuple[SiteRepair, ...]
    left_positions: int  # disputed positions where another chain's explanation is within the margin of the base's
    chain_logp: tuple[float, ...]  # what chose the base: each chain's mean log density over the window (or last draw's)
    seconds: float

    def as_dict(self) -> dict:
        """JSON-ready summary (without the point)."""
        return {"base_chain": self.base, "chain_logp": list(self.chain_logp),
                "disputed_positions": self.disputed_positions, "runs_compared": self.runs_compared,
                "repairs": [asdict(r) for r in self.repairs], "left_positions": self.left_positions,
                "seconds": self.seconds}

    def text(self) -> str:
        gains = ", ".join(f"{r.keypoint} {r.first}-{r.last} +{r.gain:.0f}" for r in self.repairs[:5])
        more = f" (+{len(self.repairs) - 5} more)" if len(self.repairs) > 5 else ""
        taken = f"; {len(self.repairs)} taken from another chain: {gains}{more}" if self.repairs else "; none taken"
        left = ("" if not self.left_positions else
                f"; {self.left_positions} disputed positions kept as chain {self.base} has them, where another chain's "
                f"explanation is within {MARGIN:g} of its log density (the posterior may have both; the second stage "
                "starts from one, so --no-pooled-warmup lets R-hat compare them)")
        others = ", ".join(f"{v - self.chain_logp[self.base]:+,.0f}" for c, v in enumerate(self.chain_logp)
                           if c != self.base)
        return (f"pooled warm-up: {self.disputed_positions} disputed positions in {self.runs_compared} runs compared"
                f"{taken}{left}; every chain goes on from chain {self.base}'s (log density of the others {others}) "
                f"({self.seconds:.1f} s)")


def stages(tune: int, chains: int) -> tuple[int, int, int] | None:
    """``(first-stage tune, first-stage window draws, second-stage tune)`` for a run of ``tune`` warm-up draws, or None
    where the run is too short to pool (fewer than ``2 * MIN_STAGE_TUNE`` warm-up draws) or has one chain.

    The stages' draws add up to ``tune``; the second gets half of them, so that its fresh adaptation of the step size
    and mass matrix has as many draws as the first's (at T = 1800 a second stage of 300 of 1000 left twice as many
    positions above R-hat 1.01 as one stage did).
    """
    if chains < 2 or tune < 2 * MIN_STAGE_TUNE:
        return None
    second = tune // 2
    return tune - second - WINDOW, WINDOW, second


def plan(model, *, sampler: str, tune: int, chains: int, enabled: bool = True) -> tuple[int, int, int] | None:
    """:func:`stages` where a run pools: ``enabled``, nutpie (PyMC's compound sampler keeps one stage) and a model
    :func:`applies_to`; else None."""
    if not enabled or sampler != "nutpie" or not applies_to(model):
        return None
    return stages(tune, chains)


def second_stage_seed(seed: int) -> int:
    """The second stage's sampler seed, derived from the run's ``seed``.

    The first stage samples with ``seed`` itself. With the same seed again, each chain's second stage would draw the
    random numbers its first stage drew (momenta, tree directions), from another start; a seed of its own keeps the
    stages' random streams apart and the run reproducible (``numpy.random.SeedSequence`` of ``(seed, 2)``).
    """
    return int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0])


def applies_to(model) -> bool:
    """A GIMBAL model with free, untransformed positions ``x`` (frozen positions or other models: no pooling)."""
    if getattr(model, "gimbal_skeleton", None) is None:
        return False
    x = next((rv for rv in model.free_RVs if rv.name == "x"), None)
    return x is not None and model.rvs_to_transforms.get(x) is None


def chain_spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each chain's mean position ``(chain, T, K, 3)`` and the within-chain sd of the 3D position ``(T, K)`` (pooled
    over chains, at least 1e-12) of the window's positions ``x``, ``(chain, draw, T, K, 3)``."""
    return x.mean(axis=1), np.maximum(np.sqrt(x.var(axis=1).mean(axis=0).sum(axis=-1)), 1e-12)


def disputed_runs(means: np.ndarray, within: np.ndarray,
                  dispute_sd: float = DISPUTE_SD) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Where the chains disagree about a position, and those positions as runs of frames per keypoint.

    Parameters
    ----------
    means, within : ndarray
        The window's :func:`chain_spread`.
    dispute_sd : float
        How many within-chain standard deviations (of the 3D position) the chains' means must lie apart.

    Returns
    -------
    disputed : (T, K) bool ndarray
    runs : list of (keypoint, first, last)
        Disputed frames of a keypoint merged where at most ``RUN_GAP`` apart, widened by one frame each side
        (``last`` inclusive), the most disputed first.
    """
    score = np.linalg.norm(means[:, None] - means[None], axis=-1).max(axis=(0, 1)) / within  # (T, K)
    disputed = score > dispute_sd
    T, K = disputed.shape
    runs, worst = [], []
    for k in range(K):
        frames = np.flatnonzero(disputed[:, k])
        if frames.size == 0:
            continue
        for run in np.split(frames, np.flatnonzero(np.diff(frames) > RUN_GAP) + 1):
            runs.append((k, max(int(run[0]) - 1, 0), min(int(run[-1]) + 1, T - 1)))
            worst.append(float(score[run, k].max()))
    order = np.argsort(worst, kind="stable")[::-1]
    return disputed, [runs[i] for i in order]


def _subtree(parents: np.ndarray, k: int) -> np.ndarray:
    """``k`` and its descendants (``parents`` in topological order, ``-1`` for the root)."""
    inside = np.zeros(len(parents), bool)
    inside[k] = True
    for j in range(k + 1, len(parents)):
        inside[j] = parents[j] >= 0 and inside[parents[j]]
    return np.flatnonzero(inside)


def pooled_start(model, stage: xr.Dataset, chain_logp: np.ndarray | None = None, *, dispute_sd: float = DISPUTE_SD,
                 margin: float = MARGIN, max_runs: int = MAX_RUNS) -> PooledStart:
    """The second stage's start from the first stage's window of draws (see the module's text).

    Parameters
    ----------
    model : pymc.Model
        A GIMBAL model (:func:`applies_to`).
    stage : xarray.Dataset
        The first stage's posterior group: every free variable, dims ``(chain, draw, ...)``.
    chain_logp : (chain,) ndarray, optional
        Each chain's mean log density over the window (nutpie's ``logp`` statistic): the base is the highest.
        Without it, the highest at the last draw (noisier: one draw's log density varies by about
        ``sqrt(n_parameters / 2)``).
    dispute_sd, margin, max_runs : float, float, int
        :data:`DISPUTE_SD`, :data:`MARGIN`, :data:`MAX_RUNS`.

    Returns
    -------
    PooledStart
    """
    from .initialization import value_point

    t0 = time.perf_counter()
    names = [rv.name for rv in model.free_RVs]
    means, within = chain_spread(stage["x"].values)
    disputed, runs = disputed_runs(means, within, dispute_sd)
    runs = runs[:max_runs]
    last = [{n: np.asarray(stage[n].isel(chain=c, draw=-1).values) for n in names} for c in range(means.shape[0])]
    logp = model.compile_logp()
    # only the base needs its value variables: a donor lends its positions, which are untransformed (applies_to)
    rank = (np.array([float(logp(value_point(model, p))) for p in last]) if chain_logp is None
            else np.asarray(chain_logp, dtype=float))
    base = int(np.argmax(np.where(np.isfinite(rank), rank, -np.inf)))
    current = value_point(model, last[base])
    current_lp = float(logp(current))
    x = np.array(current["x"], dtype=float)
    parents = np.asarray(model.gimbal_skeleton.parents)
    keypoints = [str(k) for k in stage["x"]["keypoint"].values] if "keypoint" in stage["x"].coords else \
        [str(k) for k in range(len(parents))]
    repairs, left = [], 0
    for k, first, last_frame in sorted(runs, key=lambda r: (r[0], r[1])):  # parents before children (topological)
        rows, cols = slice(first, last_frame + 1), _subtree(parents, k)
        apart = np.linalg.norm(means[:, rows, k] - x[rows, k], axis=-1) / within[rows, k]  # (chain, L)
        gains = {}
        for donor in np.flatnonzero((apart > dispute_sd).any(axis=1)):  # the chains that explain it otherwise now
            trial = x.copy()
            trial[rows, cols] = np.asarray(last[donor]["x"], dtype=float)[rows][:, cols]
            gains[int(donor)] = (float(logp({**current, "x": trial})) - current_lp, trial)
        finite = {d: g for d, g in gains.items() if np.isfinite(g[0])}
        donor = max(finite, key=lambda d: finite[d][0], default=None)
        if donor is not None and finite[donor][0] > margin:
            gain, x = finite[donor]
            current_lp += gain
            current["x"] = x
            repairs.append(SiteRepair(keypoints[k], first, last_frame, donor, gain))
        elif donor is not None and finite[donor][0] > -margin:  # another explanation about as good: undecided
            left += int(disputed[rows, k].sum())
    point = {**last[base], "x": x}
    return PooledStart(point=point, values=current, base=base, disputed_positions=int(disputed.sum()),
                       runs_compared=len(runs), repairs=tuple(repairs), left_positions=left,
                       chain_logp=tuple(float(v) for v in rank), seconds=time.perf_counter() - t0)
