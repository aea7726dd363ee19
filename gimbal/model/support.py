"""Which cameras agree with a 3D estimate, and what that says about positions whose chains did not converge.

A camera *supports* a 3D position when its detection lies within ``n_sd`` pixel-noise standard deviations of the
position's projection. A position supported by two or more cameras is pinned by them; one supported by at most one
camera is placed by the pose prior (bone length, direction states, neighbouring frames) and, with one camera, by
that camera's ray. There the posterior is wide, and it can be two-fold: a ray crosses the sphere of the bone's
length around the parent twice. Chains that end on different sides, or move between them rarely, give an R-hat
that more draws barely lower. On the DANNCE test mouse with detector-like errors (``python -m benchmarks
prior-transfer``, trained prior, 4 states, 3 noise sds = 14.7 px) 75 of the 111 positions with R-hat > 1.01 were
supported by at most one camera: 34% of such positions did not converge, against 2.0% of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .cameras import reprojection_error

__all__ = ["camera_support", "UnconvergedSupport", "unconverged_support"]

WEAK_SUPPORT = 1  # at most this many supporting cameras: the position is the prior's (and one ray's)
GLOBAL_FRACTION = 0.2  # above this fraction of positions unconverged, the run as a whole did not converge
MAX_CLASSIFIED = 5000  # unconverged positions whose chains are classified at most (the highest R-hat first)


def camera_support(points: np.ndarray, dataset: xr.Dataset, threshold_px: float) -> np.ndarray:
    """Number of cameras whose detection lies within ``threshold_px`` of each point's projection, ``(T, K)``.

    Parameters
    ----------
    points : (T, K, 3) ndarray
        3D positions (e.g. the posterior mean), in the dataset's units.
    dataset : xarray.Dataset
        Its ``observations`` (T, C, K, 2) and ``camera_matrix`` (C, 3, 4); missing detections never support.
    threshold_px : float
    """
    per_point = np.moveaxis(dataset["observations"].values, 1, 2)  # (T, K, C, 2)
    residual = reprojection_error(points, per_point, dataset["camera_matrix"].values)  # (T, K, C)
    with np.errstate(invalid="ignore"):
        return (residual <= threshold_px).sum(axis=-1)  # NaN (missing) compares False


@dataclass(frozen=True)
class UnconvergedSupport:
    """Positions with R-hat above a threshold, counted by how many cameras support the posterior mean there."""

    rhat_threshold: float
    threshold_px: float
    by_support: dict  # number of supporting cameras -> (positions, of which unconverged)
    # the unconverged positions (at most MAX_CLASSIFIED, the highest R-hat first) by the pattern of their chains on
    # their least converged coordinate (gimbal.diagnostics.convergence.classify_element): slow_mixing, ...
    patterns: dict = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        return sum(n for n, _ in self.by_support.values())

    @property
    def n_unconverged(self) -> int:
        return sum(u for _, u in self.by_support.values())

    def _weak(self, weak: bool) -> tuple[int, int]:
        rows = [v for s, v in self.by_support.items() if (s <= WEAK_SUPPORT) == weak]
        return sum(n for n, _ in rows), sum(u for _, u in rows)

    @property
    def n_unconverged_weak(self) -> int:
        """Unconverged positions supported by at most :data:`WEAK_SUPPORT` camera."""
        return self._weak(True)[1]

    def to_json(self) -> dict:
        (n_weak, u_weak), (n_firm, u_firm) = self._weak(True), self._weak(False)
        return {"rhat_threshold": self.rhat_threshold, "threshold_px": self.threshold_px,
                "positions": self.n_positions, "unconverged": self.n_unconverged,
                "unconverged_weakly_supported": u_weak,
                "fraction_unconverged_weakly_supported": u_weak / n_weak if n_weak else None,
                "fraction_unconverged_well_supported": u_firm / n_firm if n_firm else None,
                "by_support": {str(s): {"positions": n, "unconverged": u}
                               for s, (n, u) in sorted(self.by_support.items())},
                "patterns": dict(self.patterns)}

    def text(self) -> str:
        """What the counts say, and what to do, in a few sentences."""
        if not self.n_unconverged:
            return f"every position has R-hat <= {self.rhat_threshold}."
        (n_weak, u_weak), (n_firm, u_firm) = self._weak(True), self._weak(False)
        out = (f"{self.n_unconverged} of {self.n_positions} positions have R-hat > {self.rhat_threshold}; "
               f"{u_weak} of them are supported by at most {WEAK_SUPPORT} camera (detection within "
               f"{self.threshold_px:.3g} px of the posterior mean's projection): "
               f"{100 * u_weak / max(n_weak, 1):.1f}% of such positions, against {100 * u_firm / max(n_firm, 1):.1f}% "
               "of the others.")
        if self.n_unconverged > GLOBAL_FRACTION * self.n_positions:
            share = 100 * self.n_unconverged / self.n_positions
            out += (f" With {share:.0f}% of all positions unconverged the problem is not particular keypoints but "
                    "the run as a whole: chains left in different modes (named below when the globals or the log density say so), "
                    "too few warm-up draws, or a step size the sampler could not adapt (see the step size, tree depth "
                    "and E-BFMI above).")
        elif 2 * u_weak >= self.n_unconverged:
            out += (" Those are placed by the pose prior and at most one camera's ray, which can cross the bone's "
                    "sphere around its parent twice: two explanations that more draws rarely reconcile. A trained pose "
                    "prior (gimbal prior fit) narrows them; a camera that sees those keypoints removes them; gimbal fit "
                    "--sampler pymc --moves adds Metropolis moves between the two (gimbal.model.moves).")
        else:
            out += (" Most are supported by two or more cameras: there, typically, two groups of cameras "
                    "disagree (a left/right swap or a confident wrong detection in several cameras) and the chains "
                    "move between the two explanations slowly; gimbal fit --sampler pymc --moves adds Metropolis moves "
                    "between them (gimbal.model.moves), and more draws and a trained pose prior help, as do steps with "
                    "lighter tails (a larger --steps-dof, or --steps gaussian), which hold a keypoint closer to its "
                    "track (README: degrees of freedom of the steps).")
        return out + self._patterns_text()

    def _patterns_text(self) -> str:
        """What the chains do at the unconverged positions: mix slowly (more draws help) or sit apart (they rarely do)."""
        from ..diagnostics.convergence import MODE_SEPARATION

        if not self.patterns:
            return ""
        slow = self.patterns.get("slow_mixing", 0)
        apart = sum(n for p, n in self.patterns.items() if p != "slow_mixing")
        shown = sum(self.patterns.values())
        of = "" if shown == self.n_unconverged else f" (the {shown} with the highest R-hat)"
        return (f" By their chains{of}: {slow} mix slowly (the chains agree within {MODE_SEPARATION:g} within-chain "
                f"sds and differ only in how fast they move: more draws lower R-hat there), {apart} sit apart or "
                "switch between places (more draws rarely help there).")


def unconverged_support(trace, dataset: xr.Dataset, pixel_noise: float, *, rhat_threshold: float = 1.01,
                        n_sd: float = 3.0, rhat_x: np.ndarray | None = None) -> UnconvergedSupport:
    """Count the positions with R-hat above ``rhat_threshold`` by their supporting cameras.

    Parameters
    ----------
    trace : xarray.DataTree
        With ``posterior["x"]`` (chain, draw, frame, keypoint, xyz) and at least two chains.
    dataset : xarray.Dataset
        The fitted dataset.
    pixel_noise : float
        The detections' inlier noise sd in pixels (e.g. the initialization's ``obs_sigma``); a camera supports a
        position within ``n_sd`` of it.
    rhat_x : (T, K, 3) ndarray, optional
        The R-hat of ``x`` when already computed (it is the expensive part on long recordings).
    """
    from arviz_stats import rhat

    x = trace["posterior"]["x"]
    if rhat_x is None:
        rhat_x = rhat(x).values
    unconverged = np.asarray(rhat_x).max(axis=-1) > rhat_threshold  # (T, K)
    threshold = float(n_sd * pixel_noise)
    support = camera_support(x.mean(("chain", "draw")).values, dataset, threshold)
    counts = {int(s): (int((support == s).sum()), int(unconverged[support == s].sum())) for s in np.unique(support)}
    return UnconvergedSupport(rhat_threshold=rhat_threshold, threshold_px=threshold, by_support=counts,
                              patterns=_chain_patterns(x, np.asarray(rhat_x), unconverged))


def _chain_patterns(x: xr.DataArray, rhat_x: np.ndarray, unconverged: np.ndarray) -> dict:
    """How many unconverged positions (at most :data:`MAX_CLASSIFIED`, the highest R-hat first) show each pattern of
    :func:`gimbal.diagnostics.convergence.classify_element` on their least converged coordinate."""
    from ..diagnostics.convergence import classify_element
    from ..diagnostics.sampling import element_draws

    frame, keypoint = np.nonzero(unconverged)
    if not len(frame):
        return {}
    worst = rhat_x[frame, keypoint].max(axis=-1)
    keep = np.argsort(-worst)[:MAX_CLASSIFIED]
    frame, keypoint = frame[keep], keypoint[keep]
    axis = rhat_x[frame, keypoint].argmax(axis=-1)
    # only those coordinates' draws: (chain, draw, n), whatever the size of the posterior
    x = x.transpose("chain", "draw", "frame", "keypoint", "xyz")
    draws = element_draws(x, np.ravel_multi_index((frame, keypoint, axis), rhat_x.shape))
    means, sds = draws.mean(axis=1), draws.std(axis=1)  # (chain, n)
    found = [classify_element(means[:, i], sds[:, i]) for i in range(len(frame))]
    return {p: found.count(p) for p in sorted(set(found))}
