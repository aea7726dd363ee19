"""A trained pose prior: egocentric pose states, bone scales and step sizes learned from 3D data.

The original GIMBAL does not learn its pose states while it infers poses: it fits them beforehand on 3D
training data (motion capture) and keeps them fixed. This module does the same for gimbal:

* :func:`canonical_positions` rotates every frame into the body's frame (the *heading*): the direction from one
  reference keypoint to another, projected on the floor plane, becomes the first axis. A posture is then the same
  pose state whichever way the animal faces (numpy or PyTensor, one function for both, so the model and the fit
  use the same rotation);
* :func:`fit_prior` fits that prior to 3D positions: a von Mises-Fisher mixture over heading-aligned bone
  directions by EM (the pose states), their transition counts, bone lengths, bone spreads and frame-to-frame
  step variances;
* :class:`PosePrior` holds it, :func:`save_prior` / :func:`load_prior` write and read it as ``.npz``, in the
  original GIMBAL's keys (so its users' trained-parameter files load as they are, and ours load in its code);
* :meth:`PosePrior.for_skeleton` matches it to a dataset's skeleton by keypoint name.

``build_model(dataset, prior=...)`` uses it (see :mod:`gimbal.model.build`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.special import logsumexp

from .._atomic import atomic_path
from .initialization import _vmf_kappa  # the same concentration estimate (and range) as the data's pose states
from .skeleton import Skeleton, in_step_frames, validate_parents

__all__ = [
    "PosePrior",
    "PriorFileError",
    "canonical_positions",
    "heading_aligned_directions",
    "heading_baseline",
    "heading_check",
    "posterior_heading_check",
    "heading_text",
    "HEADING_FIX",
    "short_heading",
    "fit_prior",
    "fit_vmf_mixture",
    "vmf_log_normalizer_np",
    "save_prior",
    "load_prior",
    "with_prior",
]

HEADING_EPS = 1e-9  # squared length (units^2) added under the heading's norm: finite gradient when it is vertical


class PriorFileError(ValueError):
    """A prior file is unreadable, incomplete or does not fit the dataset's skeleton."""


def _frame_axes(abscissa, normal) -> np.ndarray:
    """Rows: the reference frame's first axis, its second (normal x first) and the vertical ``normal``."""
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    a = np.asarray(abscissa, float)
    a = a - (a @ n) * n  # keep it in the floor plane
    if np.linalg.norm(a) < 1e-9:
        raise ValueError(f"the heading's reference axis {list(abscissa)} is parallel to the vertical {list(normal)}.")
    a = a / np.linalg.norm(a)
    return np.stack([a, np.cross(n, a), n])


def canonical_positions(x, heading_keypoints, axes, xp=np):
    """Rotate positions ``(T, K, 3)`` into each frame's body frame.

    Coordinates are first expressed in the reference frame ``axes`` (rows: first axis, second axis, vertical),
    then rotated about the vertical so that the heading - from ``heading_keypoints[0]`` to
    ``heading_keypoints[1]``, projected on the floor plane - points along the first axis. Bone vectors of the
    result are the original's heading-aligned bone vectors (a rotation keeps lengths).

    Parameters
    ----------
    x : (T, K, 3) array or tensor
    heading_keypoints : (2,) int array or tensor
        The heading runs from the first keypoint to the second.
    axes : (3, 3) array or tensor
    xp : module
        ``numpy`` or ``pytensor.tensor``: the same arithmetic builds a graph or computes values.
    """
    base, tip = heading_keypoints[0], heading_keypoints[1]
    xc = x @ axes.T
    d = xc[:, tip, :2] - xc[:, base, :2]
    r = xp.sqrt(xp.sum(d**2, axis=-1) + HEADING_EPS)
    c, s = (d[:, 0] / r)[:, None], (d[:, 1] / r)[:, None]
    a, b = xc[..., 0], xc[..., 1]
    return xp.stack([c * a + s * b, c * b - s * a, xc[..., 2]], axis=-1)


def heading_aligned_directions(x: np.ndarray, parents, heading_keypoints, axes) -> tuple[np.ndarray, np.ndarray]:
    """Unit bone directions ``(T, K-1, 3)`` in the body frame and bone lengths ``(T, K-1)`` (NaN where unknown)."""
    parents = np.asarray(parents)
    xc = canonical_positions(np.asarray(x, float), np.asarray(heading_keypoints), np.asarray(axes, float))
    delta = xc[:, 1:] - xc[:, parents[1:]]
    length = np.linalg.norm(delta, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return delta / length[..., None], length


def vmf_log_normalizer_np(kappa) -> np.ndarray:
    """``log c3(kappa)`` on S^2 (numpy; the same stable form as the model's)."""
    k = np.maximum(np.asarray(kappa, float), 1e-12)
    return np.where(k < 1e-6, -np.log(4 * np.pi) - k**2 / 6.0,
                    np.log(k) - np.log(2 * np.pi) - k - np.log(-np.expm1(-2.0 * k)))


def _vmf_product_loglik(u: np.ndarray, means: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """``sum_b log vMF(u[n, b]; means[s, b], kappa[s, b])`` as ``(N, S)``; bones with NaN directions count 0."""
    seen = np.isfinite(u).all(axis=-1)  # (N, B)
    ll = np.einsum("sbd,nbd->nsb", means * kappa[..., None], np.where(seen[..., None], u, 0.0))
    return np.where(seen[:, None, :], ll + vmf_log_normalizer_np(kappa)[None], 0.0).sum(axis=-1)


def fit_vmf_mixture(u: np.ndarray, n_states: int, *, seed: int = 0, n_iter: int = 200, tol: float = 1e-6):
    """EM for a mixture of products of vMFs: each state has a mean direction and a concentration per bone.

    Parameters
    ----------
    u : (N, B, 3) array
        Unit vectors; NaN rows (a bone not seen in a frame) leave that bone out of that frame's likelihood.
    n_states : int
    seed : int
        Seed of the k-means++ start.

    Returns
    -------
    means (S, B, 3), kappa (S, B), weights (S,), responsibilities (N, S), log-likelihood per iteration
    """
    N, B, _ = u.shape
    if N < n_states:
        raise ValueError(f"{N} frames cannot fit {n_states} pose states; use fewer states or more training frames.")
    seen = np.isfinite(u).all(axis=-1)  # (N, B)
    u0 = np.where(seen[..., None], u, 0.0)
    if n_states == 1:
        resp = np.ones((N, 1))
    else:
        _, labels = kmeans2(u0.reshape(N, -1), n_states, minit="++", seed=seed)
        resp = np.eye(n_states)[labels] * 0.98 + 0.02 / n_states
    history = []
    for _ in range(n_iter):
        # M step
        w = resp.sum(axis=0) + 1e-9
        weights = w / w.sum()
        summed = np.einsum("ns,nbd->sbd", resp, u0)
        counts = np.einsum("ns,nb->sb", resp, seen.astype(float)) + 1e-9
        length = np.linalg.norm(summed, axis=-1)
        means = summed / np.maximum(length, 1e-12)[..., None]
        kappa = _vmf_kappa(length / counts)
        # E step
        loglik = _vmf_product_loglik(u, means, kappa) + np.log(weights)[None]
        total = logsumexp(loglik, axis=1)
        resp = np.exp(loglik - total[:, None])
        history.append(float(total.sum()))
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            break
    return means, kappa, weights, resp, history


@dataclass(frozen=True)
class PosePrior:
    """Pose states in the body frame, bone scales and step variances, per keypoint (the original GIMBAL's layout).

    Per-keypoint arrays describe the bone from the keypoint's parent to it; the root's entries are unused.

    Attributes
    ----------
    parents : (K,) int
        Parent index per keypoint, root ``-1``.
    state_directions : (S, K, 3)
        Mean bone direction per pose state, in the body frame (see :func:`canonical_positions`).
    state_concentrations : (S, K)
    state_probability : (S,)
        Probability of each state at the first frame.
    transition_counts : (S, S)
        Dirichlet pseudo-counts of the transition matrix's rows (the original's ``state_transition_count`` is one
        row for all; trained priors keep their per-row counts).
    bone_length, bone_variance : (K,)
        Mean bone length ``rho`` and per-axis variance ``sigma^2`` of the child around ``parent + rho u``.
    step_variance : (K,) or None
        Per-axis variance of a keypoint's frame-to-frame step; None when the training frames were not consecutive.
    step_variance_parent : (K,) or None
        The same for the step relative to the keypoint's parent (the change of the vector from the parent; the
        root's is its world step), for ``build_model``'s ``step_frame``; None in the original GIMBAL's files
        (key ``pos_dt_variance_parent``, gimbal's own).
    heading_keypoints : (2,) int
        The heading runs from the first to the second keypoint.
    abscissa, normal : (3,)
        The world's reference axis on the floor and its vertical.
    keypoint_names : tuple of str or None
        None for the original GIMBAL's files, which carry no names (matched by tree then).
    """

    parents: np.ndarray
    state_directions: np.ndarray
    state_concentrations: np.ndarray
    state_probability: np.ndarray
    transition_counts: np.ndarray
    bone_length: np.ndarray
    bone_variance: np.ndarray
    step_variance: np.ndarray | None
    heading_keypoints: np.ndarray
    abscissa: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    keypoint_names: tuple[str, ...] | None = None
    source: str = ""
    step_variance_parent: np.ndarray | None = None

    def __post_init__(self):
        parents = validate_parents(self.parents)
        K = parents.size
        S = np.shape(self.state_concentrations)[0]
        expected = {
            "state_directions": (S, K, 3), "state_concentrations": (S, K), "state_probability": (S,),
            "transition_counts": (S, S), "bone_length": (K,), "bone_variance": (K,),
            "heading_keypoints": (2,), "abscissa": (3,), "normal": (3,),
        }
        for name in ("step_variance", "step_variance_parent"):
            if getattr(self, name) is not None:
                expected[name] = (K,)
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name), dtype=np.int64 if name == "heading_keypoints" else float)
            if value.shape != shape:
                raise PriorFileError(f"prior {name} must have shape {shape} for K={K} keypoints and S={S} states, "
                                     f"got {value.shape}.")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "parents", parents.astype(np.int64))
        if self.keypoint_names is not None:
            names = tuple(str(n) for n in self.keypoint_names)
            if len(names) != K:
                raise PriorFileError(f"prior has {len(names)} keypoint names for {K} keypoints.")
            object.__setattr__(self, "keypoint_names", names)
        hk = self.heading_keypoints
        if hk.min() < 0 or hk.max() >= K or hk[0] == hk[1]:
            raise PriorFileError(f"heading keypoints must be two different keypoints in [0, {K - 1}], got {hk.tolist()}.")
        bones = slice(1, None)
        checks = {
            "state_concentrations": self.state_concentrations[:, bones], "bone_length": self.bone_length[bones],
            "bone_variance": self.bone_variance[bones], "state_probability": self.state_probability,
            "transition_counts": self.transition_counts,
        }
        for name, value in checks.items():
            if not np.all(np.isfinite(value)) or np.any(value < 0):
                raise PriorFileError(f"prior {name} must be finite and non-negative.")
        if np.any(self.bone_variance[bones] <= 0) or np.any(self.transition_counts <= 0):
            raise PriorFileError("prior bone variances and transition counts must be positive.")
        for name in ("step_variance", "step_variance_parent"):
            value = getattr(self, name)
            if value is not None and (not np.all(np.isfinite(value)) or np.any(value <= 0)):
                raise PriorFileError(f"prior {name} must be finite and positive.")

    @property
    def n_states(self) -> int:
        return self.state_concentrations.shape[0]

    @property
    def n_keypoints(self) -> int:
        return self.parents.size

    @property
    def axes(self) -> np.ndarray:
        """Rows of the reference frame: first axis, second axis, vertical."""
        return _frame_axes(self.abscissa, self.normal)

    @property
    def transition(self) -> np.ndarray:
        """The transition matrix the counts expect (rows sum to 1)."""
        return self.transition_counts / self.transition_counts.sum(axis=1, keepdims=True)

    def for_skeleton(self, skeleton: Skeleton) -> "PosePrior":
        """This prior with its keypoints in ``skeleton``'s order, checked against its tree.

        Named priors are matched by keypoint name (every skeleton keypoint must be in the prior, and the bones
        must be the same); nameless ones (the original GIMBAL's files) must have the skeleton's parents exactly.
        """
        if self.keypoint_names is None:
            if self.n_keypoints != skeleton.n_keypoints or tuple(self.parents) != tuple(skeleton.parents):
                raise PriorFileError(
                    f"this prior has no keypoint names, so its tree must be the dataset's: prior parents "
                    f"{self.parents.tolist()}, dataset parents {list(skeleton.parents)}. Re-fit the prior on this "
                    "skeleton (gimbal prior fit) or import the data with the prior's keypoint order."
                )
            return replace(self, keypoint_names=tuple(skeleton.names))
        missing = [n for n in skeleton.names if n not in self.keypoint_names]
        if missing:
            raise PriorFileError(f"the prior has no keypoint(s) {missing}; it has {list(self.keypoint_names)}.")
        idx = np.array([self.keypoint_names.index(n) for n in skeleton.names])
        for k, p in enumerate(skeleton.parents):
            if p >= 0 and self.parents[idx[k]] != idx[p]:
                prior_parent = self.parents[idx[k]]
                raise PriorFileError(
                    f"bone {skeleton.names[p]}->{skeleton.names[k]} of the dataset is not a bone of the prior "
                    f"(its parent of {skeleton.names[k]} is "
                    f"{self.keypoint_names[prior_parent] if prior_parent >= 0 else 'none (root)'}); re-fit the prior "
                    "on this skeleton (gimbal prior fit)."
                )
        pos = {int(i): j for j, i in enumerate(idx)}
        if not all(int(h) in pos for h in self.heading_keypoints):
            raise PriorFileError(
                f"the prior's heading keypoints {[self.keypoint_names[h] for h in self.heading_keypoints]} are not "
                f"all in the dataset's skeleton."
            )
        return replace(
            self,
            parents=np.asarray(skeleton.parents),
            state_directions=self.state_directions[:, idx],
            state_concentrations=self.state_concentrations[:, idx],
            bone_length=self.bone_length[idx],
            bone_variance=self.bone_variance[idx],
            step_variance=None if self.step_variance is None else self.step_variance[idx],
            step_variance_parent=None if self.step_variance_parent is None else self.step_variance_parent[idx],
            heading_keypoints=np.array([pos[int(h)] for h in self.heading_keypoints]),
            keypoint_names=tuple(skeleton.names),
        )

    def state_loglik(self, positions: np.ndarray) -> np.ndarray:
        """``log p(heading-aligned directions of each frame | state)`` as ``(T, S)`` (vMF part only)."""
        u, _ = heading_aligned_directions(positions, self.parents, self.heading_keypoints, self.axes)
        return _vmf_product_loglik(u, self.state_directions[:, 1:], self.state_concentrations[:, 1:])


def _robust_var(values: np.ndarray, floor: float) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return floor
    mad = 1.4826 * np.median(np.abs(values - np.median(values)))
    return float(max(mad**2, floor))


SHORT_HEADING = 0.25  # a heading baseline shorter than this fraction of its median length (on the floor) is ill-posed


def heading_baseline(positions, heading_keypoints, axes) -> np.ndarray:
    """The heading baseline's length seen from above, per frame.

    The body frame turns with the heading, so where this length is short (a rearing animal's spine) a millimetre
    moves the heading by many degrees: the posterior is sharply curved there.

    Parameters
    ----------
    positions : (T, K, 3) array
    heading_keypoints : (2,) int array
        The heading runs from the first keypoint to the second.
    axes : (3, 3) array
        The reference frame (rows: first axis, second axis, vertical).

    Returns
    -------
    (T,) array
        NaN where either keypoint is unknown.
    """
    base, tip = int(heading_keypoints[0]), int(heading_keypoints[1])
    d = (np.asarray(positions)[:, tip] - np.asarray(positions)[:, base]) @ np.asarray(axes)[:2].T
    return np.linalg.norm(d, axis=-1)


def short_heading(lengths: np.ndarray, fraction: float = SHORT_HEADING) -> np.ndarray:
    """Frames whose heading baseline (:func:`heading_baseline`) is shorter than ``fraction`` of its median over the
    frames where it is known (False where it is not)."""
    lengths = np.asarray(lengths, float)
    known = np.isfinite(lengths)
    if not known.any():
        return np.zeros(lengths.shape, bool)
    return known & (lengths < fraction * np.median(lengths[known]))


def heading_check(positions, heading_keypoints, axes, keypoint_names, unconverged=None, frames=None) -> dict:
    """Where a trained prior's body frame is ill-defined, set against the frames whose positions did not converge.

    Parameters
    ----------
    positions : (T, K, 3) array
        The posterior mean (or any reconstruction) of the positions.
    heading_keypoints, axes
        The prior's (:attr:`PosePrior.heading_keypoints`, :attr:`PosePrior.axes`), in the dataset's keypoint order.
    keypoint_names : sequence of str
    unconverged : (T,) bool array, optional
        Frames where some position's R-hat is above its threshold.
    frames : (T,) array, optional
        The frames' labels (default 0 ... T-1).

    Returns
    -------
    dict
        ``keypoints`` (the heading's two), ``median_length`` and ``min_length`` of the baseline seen from above,
        ``short_fraction``, ``short_frames`` (:func:`short_heading`), ``unconverged_frames``,
        ``unconverged_at_short``, ``n_frames``, and ``traced``: at least half of the unconverged frames are short
        ones, and at least twice the short frames' share of the recording.
    """
    lengths = heading_baseline(positions, heading_keypoints, axes)
    short = short_heading(lengths)
    n = lengths.shape[0]
    frames = np.arange(n) if frames is None else np.asarray(frames)
    unconverged = np.zeros(n, bool) if unconverged is None else np.asarray(unconverged, bool)
    at_short, n_unconverged = int((short & unconverged).sum()), int(unconverged.sum())
    known = np.isfinite(lengths)
    return {
        "keypoints": [str(keypoint_names[int(k)]) for k in heading_keypoints],
        "median_length": float(np.median(lengths[known])) if known.any() else None,
        "min_length": float(np.min(lengths[known])) if known.any() else None,
        "short_fraction": SHORT_HEADING,
        "short_frames": [int(f) for f in frames[short]],
        "unconverged_frames": [int(f) for f in frames[unconverged]],
        "unconverged_at_short": at_short,
        "n_frames": int(n),
        "traced": bool(n_unconverged and 2 * at_short >= n_unconverged
                       and at_short / n_unconverged >= 2 * short.mean()),
    }


def posterior_heading_check(model, x, unconverged=None) -> dict | None:
    """:func:`heading_check` at the posterior mean of a model built with a trained prior (None without one).

    ``x``: the positions' draws (chain, draw, frame, keypoint, xyz); ``unconverged``: (frame,) bool.
    """
    if not model.gimbal_config.heading:
        return None
    states = model.gimbal_init.pose_states
    return heading_check(x.mean(("chain", "draw")).values, states.heading_keypoints, states.frame_axes,
                         list(x["keypoint"].values), unconverged, frames=x["frame"].values)


HEADING_FIX = ("Fit the prior with heading keypoints further apart along the body, so that they never stand on top "
               "of each other seen from above (gimbal prior fit --heading BASE,TIP, e.g. the mid spine and the snout).")


def heading_text(check: dict) -> str:
    """Why a :func:`heading_check` that traces the unconverged frames to the body frame does so ("" if it does not);
    :data:`HEADING_FIX` says what to do."""
    if not check["traced"]:
        return ""
    short = check["short_frames"]
    shown = _frame_list(short)
    base, tip = check["keypoints"]
    return (f"{check['unconverged_at_short']} of the {len(check['unconverged_frames'])} frames where the chains "
            f"disagree are where the heading baseline ({base} -> {tip}) is shorter than "
            f"{check['short_fraction']:.0%} of its median ({check['median_length']:.3g}) seen from above (frame"
            f"{'s' if len(short) > 1 else ''} {shown}; shortest {check['min_length']:.3g}): the trained prior's body "
            "frame turns by many degrees there for a small move, so the posterior is sharply curved.")


def _warn_short_heading(lengths: np.ndarray, label: str, where: str, frames: str = "") -> None:
    """The warning of :func:`fit_prior` and :func:`with_prior` where more than 1% of the frames are short."""
    import warnings

    short = short_heading(lengths)
    if short.mean() > 0.01:
        warnings.warn(
            f"the heading baseline ({label}) is shorter than {SHORT_HEADING:.0%} of its median length, seen from "
            f"above, in {short.mean():.1%} of {where} ({frames}shortest {np.nanmin(lengths):.3g}): there the heading "
            f"is ill-defined and sampling may diverge. {HEADING_FIX}", stacklevel=4)


def _check_heading_baseline(seqs, heading_keypoints, axes, names=None) -> None:
    """Warn when the heading's two keypoints often stand nearly on top of each other (seen from above).

    Measured on the DANNCE mice: SpineM -> SpineF, shortest 3.7 mm against a median of 27: 210 of 4000 draws
    divergent; SpineM -> Snout, shortest 17 mm: none.
    """
    base, tip = int(heading_keypoints[0]), int(heading_keypoints[1])
    length = np.concatenate([heading_baseline(s, heading_keypoints, axes) for s in seqs])
    length = length[np.isfinite(length)]
    if length.size == 0:
        raise ValueError("the heading keypoints are never both known in the training positions.")
    label = f"{names[base]} -> {names[tip]}" if names is not None else f"keypoints {base} -> {tip}"
    _warn_short_heading(length, label, "the training frames")


def _step_variances(steps, scale: float) -> np.ndarray:
    """Per keypoint, the per-axis variance of its steps ``[(N, K, 3), ...]`` (at least ``(1e-3 scale)^2``)."""
    d = np.concatenate(steps)
    var = np.array([float(max(np.nanmean(d[:, k] ** 2) if np.isfinite(d[:, k]).any() else np.nan, (1e-3 * scale) ** 2))
                    for k in range(d.shape[1])])
    if not np.all(np.isfinite(var)):
        raise ValueError("some keypoints have no two consecutive known positions; fit with consecutive=False.")
    return var


def fit_prior(
    sequences,
    parents,
    heading_keypoints,
    *,
    n_states: int = 1,
    keypoint_names=None,
    consecutive: bool = True,
    normal=(0.0, 0.0, 1.0),
    abscissa=(1.0, 0.0, 0.0),
    stickiness: float = 10.0,
    seed: int = 0,
    source: str = "",
) -> PosePrior:
    """Fit a :class:`PosePrior` to 3D training positions.

    Parameters
    ----------
    sequences : (T, K, 3) array or list of them
        3D positions (motion capture, manual labels, or confident triangulation); NaN where unknown.
    parents : (K,) ints
    heading_keypoints : (base, tip) ints
        The heading runs from ``base`` to ``tip``: two keypoints far apart seen from above (e.g. the mid spine
        and the snout; a pair that stands on top of itself when the animal rears is warned about).
    n_states : int
        Number of pose states (vMF mixture components).
    keypoint_names : sequence of str, optional
        Stored with the prior so that datasets are matched by name.
    consecutive : bool
        The frames of each sequence are consecutive: fit the step variances and the transition counts from
        consecutive pairs. With sparse frames (labelled frames of a long video) leave it False: the prior then
        has no step variance, and its transition counts are the pseudo-counts alone (1 + ``stickiness`` on the
        diagonal).
    normal, abscissa : (3,)
        The world's vertical and a reference axis on the floor.
    stickiness : float
        Pseudo-count added to each state's self-transition.
    seed : int
        Seed of the EM's k-means++ start.
    """
    seqs = [np.asarray(s, float) for s in (sequences if isinstance(sequences, (list, tuple)) else [sequences])]
    parents = validate_parents(parents)
    K = parents.size
    for s in seqs:
        if s.ndim != 3 or s.shape[1:] != (K, 3):
            raise ValueError(f"training positions must be (T, {K}, 3) for {K} keypoints, got {s.shape}.")
    axes = _frame_axes(abscissa, normal)
    _check_heading_baseline(seqs, heading_keypoints, axes, keypoint_names)
    dirs, lengths = zip(*(heading_aligned_directions(s, parents, heading_keypoints, axes) for s in seqs))
    u, length = np.concatenate(dirs), np.concatenate(lengths)
    usable = np.isfinite(u).all(axis=-1).any(axis=-1)
    if usable.sum() < max(n_states, 2):
        raise ValueError(f"only {int(usable.sum())} training frames have a known bone; need at least {max(n_states, 2)}.")
    means, kappa, weights, resp, _ = fit_vmf_mixture(u[usable], n_states, seed=seed)
    S = means.shape[0]
    rho = np.nanmedian(length, axis=0)
    scale = float(np.nanmedian(rho))
    # radial spread: the child's offset along the bone around rho (the direction's spread is the vMF's)
    var = np.array([_robust_var(length[:, b] - rho[b], (0.01 * rho[b]) ** 2) for b in range(K - 1)])
    labels = np.full(len(u), -1)
    labels[usable] = resp.argmax(axis=1)
    counts = np.full((S, S), 1.0) + stickiness * np.eye(S)
    step_var = step_var_parent = None
    if consecutive:
        steps, start = [], 0
        for s in seqs:
            T = s.shape[0]
            lab = labels[start:start + T]
            ok = (lab[:-1] >= 0) & (lab[1:] >= 0)
            np.add.at(counts, (lab[:-1][ok], lab[1:][ok]), 1.0)
            steps.append(np.diff(s, axis=0))
            start += T
        step_var = _step_variances(steps, scale)
        step_var_parent = _step_variances(
            [np.diff(in_step_frames(s, parents, parents >= 0), axis=0) for s in seqs], scale)
    pad = lambda a, fill: np.concatenate([np.full((1, *a.shape[1:]), fill), a])  # noqa: E731 (root row)
    return PosePrior(
        parents=parents,
        state_directions=np.concatenate([np.tile([[[0.0, 0.0, 1.0]]], (S, 1, 1)), means], axis=1),
        state_concentrations=np.concatenate([np.zeros((S, 1)), kappa], axis=1),
        state_probability=weights,
        transition_counts=counts,
        bone_length=pad(rho, 0.0),
        bone_variance=pad(var, 1.0),
        step_variance=step_var,
        step_variance_parent=step_var_parent,
        heading_keypoints=np.asarray(heading_keypoints, dtype=np.int64),
        abscissa=axes[0],
        normal=axes[2],
        keypoint_names=None if keypoint_names is None else tuple(keypoint_names),
        source=source,
    )


# --- files -------------------------------------------------------------------------------------

# the original GIMBAL's keys; parents there have the root as its own parent
_REQUIRED = ("parents", "state_directions", "state_concentrations", "state_probability", "pos_radius",
             "pos_radial_variance", "crf_keypoints", "crf_abscissa", "crf_normal")


def save_prior(prior: PosePrior, path, overwrite: bool = False) -> Path:
    """Write ``prior`` as ``.npz`` in the original GIMBAL's keys (plus names and per-row transition counts).

    Refuses to replace an existing file unless ``overwrite``; the file appears only once complete.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise PriorFileError(f"a prior file ends in .npz, got {path.name!r}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it.")
    parents = prior.parents.copy()
    parents[parents < 0] = np.flatnonzero(parents < 0)
    arrays = {
        "parents": parents.astype(np.int64),
        "state_directions": prior.state_directions.astype(np.float32),
        "state_concentrations": prior.state_concentrations.astype(np.float32),
        "state_probability": prior.state_probability.astype(np.float32),
        "state_transition_count": prior.transition_counts.mean(axis=0).astype(np.float32),
        "transition_counts": prior.transition_counts,
        "pos_radius": prior.bone_length.astype(np.float32),
        "pos_radial_variance": prior.bone_variance.astype(np.float32),
        "crf_keypoints": prior.heading_keypoints.astype(np.int64),
        "crf_abscissa": prior.abscissa.astype(np.float32),
        "crf_normal": prior.normal.astype(np.float32),
        "source": np.array(prior.source),
    }
    if prior.step_variance is not None:
        arrays["pos_dt_variance"] = prior.step_variance.astype(np.float32)
    if prior.step_variance_parent is not None:
        arrays["pos_dt_variance_parent"] = prior.step_variance_parent.astype(np.float32)
    if prior.keypoint_names is not None:
        arrays["keypoint_names"] = np.array(prior.keypoint_names)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_prior(path) -> PosePrior:
    """Read a prior ``.npz``: one written by :func:`save_prior`, or the original GIMBAL's trained parameters as is.

    The original's observation parameters (``obs_*``), camera matrices and covariance matrices are not used
    (the cameras come from the dataset). Its ``state_transition_count`` (one row of Dirichlet counts for every
    state) becomes every row of the transition counts.
    """
    path = Path(path)
    if not path.is_file():
        raise PriorFileError(f"prior file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise PriorFileError(f"{path} could not be read as a .npz prior ({type(exc).__name__}: {exc}).") from exc
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise PriorFileError(f"{path} is not a GIMBAL prior: it lacks {missing} (it has {sorted(data)}).")
    parents = np.asarray(data["parents"], dtype=np.int64).copy()
    parents[parents == np.arange(parents.size)] = -1  # the original marks the root as its own parent
    S = np.asarray(data["state_probability"]).size
    if "transition_counts" in data:
        counts = np.asarray(data["transition_counts"], float)
    else:
        row = np.broadcast_to(np.asarray(data.get("state_transition_count", 10.0), float), (S,))
        counts = np.tile(row, (S, 1))
    try:
        return PosePrior(
            parents=parents,
            state_directions=data["state_directions"],
            state_concentrations=data["state_concentrations"],
            state_probability=data["state_probability"],
            transition_counts=counts,
            bone_length=data["pos_radius"],
            bone_variance=data["pos_radial_variance"],
            step_variance=data.get("pos_dt_variance"),
            step_variance_parent=data.get("pos_dt_variance_parent"),
            heading_keypoints=data["crf_keypoints"],
            abscissa=data["crf_abscissa"],
            normal=data["crf_normal"],
            keypoint_names=tuple(str(n) for n in data["keypoint_names"]) if "keypoint_names" in data else None,
            source=str(data["source"]) if "source" in data else str(path),
        )
    except ValueError as exc:  # validate_parents and the shape checks
        raise PriorFileError(f"{path}: {exc}") from exc


# --- the model's starting values under a prior -------------------------------------------------


def _frame_list(frames, most: int = 8) -> str:
    """``0, 1, 2, ... (12 in all)``: the first few of a list of frames."""
    shown = ", ".join(str(int(f)) for f in frames[:most])
    return shown + (f", ... ({len(frames)} in all)" if len(frames) > most else "")


def with_prior(init, prior: PosePrior, skeleton: Skeleton, *, max_length_ratio: float = 2.0):
    """An :class:`~gimbal.model.initialization.Initialization` whose pose states and scales come from ``prior``.

    The positions (and the observation model's starting values) stay the data's; the bone lengths' centre, the
    bone spreads, the step sizes (when the prior has them), the pose states (in the body frame), their transition
    counts and first-frame probabilities become the prior's. Each frame's starting state is the prior's most
    probable one for the starting positions.

    Raises
    ------
    PriorFileError
        When the prior's bone lengths and the data's triangulated ones differ by more than ``max_length_ratio``
        (other units, or another animal), naming the worst bones.
    """
    from .initialization import Initialization, PoseStates

    prior = prior.for_skeleton(skeleton)
    rho = prior.bone_length[1:]
    data_rho = np.asarray(init.values["bone_length"], float)
    ratio = np.median(data_rho / np.maximum(rho, 1e-12))
    if not (1 / max_length_ratio <= ratio <= max_length_ratio):
        worst = np.argsort(-np.abs(np.log(data_rho / np.maximum(rho, 1e-12))))[:3]
        raise PriorFileError(
            f"the prior's bone lengths are {1 / ratio:.3g}x the data's (median ratio; e.g. "
            + ", ".join(f"{skeleton.bone_names[b]}: prior {rho[b]:.3g}, data {data_rho[b]:.3g}" for b in worst)
            + "): the prior and the dataset use other units or another animal. Fit the prior in the data's units."
        )
    lengths = heading_baseline(init.positions, prior.heading_keypoints, prior.axes)
    short = np.flatnonzero(short_heading(lengths))
    names = skeleton.names
    _warn_short_heading(lengths, f"{names[prior.heading_keypoints[0]]} -> {names[prior.heading_keypoints[1]]}",
                        "this recording's frames at the chains' start",
                        f"frame{'s' if len(short) != 1 else ''} {_frame_list(short)}; ")
    ll = prior.state_loglik(init.positions) + np.log(np.maximum(prior.state_probability, 1e-300))[None]
    states = PoseStates(
        mean_directions=prior.state_directions[:, 1:],
        kappa=prior.state_concentrations[:, 1:],
        labels=ll.argmax(axis=1).astype(np.int64),
        transition=prior.transition,
        transition_counts=prior.transition_counts,
        initial=prior.state_probability / prior.state_probability.sum(),
        heading_keypoints=prior.heading_keypoints,
        frame_axes=prior.axes,
    )
    values = dict(init.values)
    values.update(
        bone_length=rho.copy(),
        bone_sigma=np.sqrt(prior.bone_variance[1:]),
        transition=prior.transition,
        state_mean_raw=states.mean_directions,
        state_kappa=states.kappa,
    )
    if prior.step_variance is not None:
        values["step_sigma"] = np.sqrt(prior.step_variance)
        # the data's steps relative to the parent do not go with the prior's world steps: the prior's, or none
        values["step_sigma_parent"] = (None if prior.step_variance_parent is None
                                       else np.sqrt(prior.step_variance_parent))
    return Initialization(positions=init.positions, values=values, pose_states=states, center=init.center,
                          triangulation_residual_px=init.triangulation_residual_px, start=init.start)
