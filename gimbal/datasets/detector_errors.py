"""The failure modes of real 2D keypoint detectors, simulated on exact projections.

Real detectors (DeepLabCut, SLEAP, Lightning Pose) do not fail like independent uniform noise. Their
errors differ by camera and keypoint (an elbow seen from below is wrong most of the time, a snout seen from
above almost never), come in runs of frames (an occlusion lasts), are often confident and close (the other
side's paw, a neighbouring body part), and their scores say only roughly how good a detection is.
:func:`add_detector_errors` produces these on a ``(T, C, K, 2)`` array of true projections:

* **inlier noise** per camera (``noise_px`` scaled by a per-camera factor);
* **per-(camera, keypoint) outlier rates** from ``min_rate`` to ``max_rate``: most pairs near the low end, the
  keypoints named ``hard_keypoints`` badly seen by ``hard_cameras`` of the cameras each;
* **occlusion runs**: a pair's outliers follow a two-state Markov chain with that stationary rate and mean run
  length ``run_frames``; in a run the detection is missing (``missing_in_run``) or wrong: at another keypoint's
  projection (a confusion), near the true one (``near_px``), or anywhere in the image;
* **left/right swaps** in short runs (``swap_rate``, ``swap_run_frames``), scored as confidently as inliers;
* **systematic offsets**: a fraction ``offset_pairs`` of (camera, keypoint) pairs whose detector marks a
  point ``offset_px`` off the joint, every frame (not flagged as outliers: a bias, not a failure);
* **confidence** scores drawn from Beta distributions that overlap: inliers around 0.8, outliers around 0.35,
  swaps around 0.7;
* random **missing** detections (``missing_rate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DetectorErrors", "DetectorTruth", "add_detector_errors"]


@dataclass(frozen=True)
class DetectorErrors:
    """How a simulated detector fails (see the module's description)."""

    noise_px: float = 3.0
    camera_noise_spread: float = 0.3  # per-camera noise factor exp(N(0, spread))
    min_rate: float = 0.05
    max_rate: float = 0.95
    low_rate_max: float = 0.15  # ordinary pairs' outlier rates are uniform in [min_rate, low_rate_max]
    hard_keypoints: tuple[str, ...] = ()
    hard_cameras: int = 2  # cameras per hard keypoint whose rate is uniform in [0.5, max_rate]
    run_frames: float = 15.0
    missing_in_run: float = 0.3
    confusion: float = 0.4  # share of wrong detections placed at another keypoint's projection
    near: float = 0.3  # share placed near the true projection
    near_px: float = 40.0
    swap_rate: float = 0.03
    swap_run_frames: float = 8.0
    offset_pairs: float = 0.1
    offset_px: tuple[float, float] = (4.0, 8.0)
    missing_rate: float = 0.03


@dataclass(frozen=True)
class DetectorTruth:
    """What the simulation did, for scoring: the detections and scores, and which were wrong."""

    observations: np.ndarray  # (T, C, K, 2), NaN where missing
    confidence: np.ndarray  # (T, C, K), NaN where missing
    is_outlier: np.ndarray  # (T, C, K) wrong detections (outliers and swaps; missing ones are False)
    outlier_rate: np.ndarray  # (C, K) the stationary outlier rate of each pair
    offset: np.ndarray  # (C, K, 2) the systematic offset of each pair (0 for most)


def _runs(rng, shape, rate, mean_run):
    """Boolean (T, ...) series, each a two-state Markov chain with stationary P(on) = rate and mean on-run length."""
    T = shape[0]
    rate = np.broadcast_to(np.asarray(rate, float), shape[1:])
    leave = 1.0 / max(mean_run, 1.0)  # P(on -> off)
    enter = np.clip(rate * leave / np.maximum(1.0 - rate, 1e-9), 0.0, 1.0)  # P(off -> on)
    state = rng.random(shape[1:]) < rate
    out = np.empty(shape, bool)
    for t in range(T):
        out[t] = state
        u = rng.random(shape[1:])
        state = np.where(state, u >= leave, u < enter)
    return out


def _swap_pairs(names):
    out = []
    for i, n in enumerate(names):
        for suffix_l, suffix_r in (("L", "R"), ("_left", "_right"), ("Left", "Right")):
            if n.endswith(suffix_l):
                partner = n[: -len(suffix_l)] + suffix_r
                if partner in names:
                    out.append((i, names.index(partner)))
    return out


def add_detector_errors(projections, image_size, keypoint_names, errors: DetectorErrors, seed: int = 0) -> DetectorTruth:
    """Detections with a real detector's failure modes, from exact projections.

    Parameters
    ----------
    projections : (T, C, K, 2) array
        True keypoints projected into each camera (pixels).
    image_size : (C, 2) array
        Width and height of each camera's image.
    keypoint_names : sequence of str
        Used for left/right pairs (``...L``/``...R``, ``..._left``/``..._right``) and ``errors.hard_keypoints``.
    errors : DetectorErrors
    seed : int

    Returns
    -------
    DetectorTruth
    """
    rng = np.random.default_rng(seed)
    clean = np.asarray(projections, float)
    T, C, K, _ = clean.shape
    names = list(map(str, keypoint_names))
    size = np.asarray(image_size, float).reshape(C, 2)
    unknown = sorted(set(errors.hard_keypoints) - set(names))
    if unknown:
        raise ValueError(f"hard_keypoints {unknown} are not keypoints ({names}).")

    noise = errors.noise_px * np.exp(errors.camera_noise_spread * rng.standard_normal(C))
    obs = clean + noise[None, :, None, None] * rng.standard_normal(clean.shape)
    conf = rng.beta(8.0, 2.0, (T, C, K))

    offset = np.zeros((C, K, 2))
    biased = rng.random((C, K)) < errors.offset_pairs
    angle = rng.uniform(0, 2 * np.pi, (C, K))
    length = rng.uniform(*errors.offset_px, (C, K))
    offset[biased] = np.stack([np.cos(angle), np.sin(angle)], -1)[biased] * length[biased][:, None]
    obs += offset[None]

    wrong = np.zeros((T, C, K), bool)
    for a, b in _swap_pairs(names):
        if a > b:
            continue
        swapped = _runs(rng, (T, C), errors.swap_rate, errors.swap_run_frames)
        ta, ca = np.nonzero(swapped)
        obs[ta, ca, a], obs[ta, ca, b] = obs[ta, ca, b].copy(), obs[ta, ca, a].copy()
        wrong[ta, ca, a] = wrong[ta, ca, b] = True
        conf[ta, ca, a] = rng.beta(7.0, 3.0, ta.size)
        conf[ta, ca, b] = rng.beta(7.0, 3.0, ta.size)

    rate = rng.uniform(errors.min_rate, errors.low_rate_max, (C, K))
    for name in errors.hard_keypoints:
        cams = rng.choice(C, size=min(errors.hard_cameras, C), replace=False)
        rate[cams, names.index(name)] = rng.uniform(0.5, errors.max_rate, cams.size)
    run = _runs(rng, (T, C, K), rate, errors.run_frames)
    t_, c_, k_ = np.nonzero(run)
    kind = rng.random(t_.size)
    confused = kind < errors.confusion
    near = (kind >= errors.confusion) & (kind < errors.confusion + errors.near)
    anywhere = ~(confused | near)
    other = (k_ + rng.integers(1, K, t_.size)) % K  # another keypoint
    obs[t_[confused], c_[confused], k_[confused]] = (
        clean[t_[confused], c_[confused], other[confused]] + noise[c_[confused], None] * rng.standard_normal((int(confused.sum()), 2))
    )
    obs[t_[near], c_[near], k_[near]] = clean[t_[near], c_[near], k_[near]] + rng.normal(0, errors.near_px, (int(near.sum()), 2))
    obs[t_[anywhere], c_[anywhere], k_[anywhere]] = rng.random((int(anywhere.sum()), 2)) * size[c_[anywhere]]
    wrong[t_, c_, k_] = True
    conf[t_, c_, k_] = rng.beta(2.0, 4.0, t_.size)
    hidden = rng.random(t_.size) < errors.missing_in_run
    obs[t_[hidden], c_[hidden], k_[hidden]] = np.nan

    obs[rng.random((T, C, K)) < errors.missing_rate] = np.nan
    missing = ~np.isfinite(obs).all(-1)
    obs[missing] = np.nan
    conf[missing] = np.nan
    # a near detection within 3 noise sd of the joint is not wrong
    err = np.linalg.norm(obs - clean - offset[None], axis=-1)
    wrong &= ~missing & ~(np.nan_to_num(err, nan=np.inf) < 3 * noise[None, :, None])
    return DetectorTruth(observations=obs, confidence=conf, is_outlier=wrong, outlier_rate=rate, offset=offset)
