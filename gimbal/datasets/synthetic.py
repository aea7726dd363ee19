"""Named synthetic datasets, generated deterministically from a seed.

``v0.2.1_L00_minimal`` follows the earlier port's default data: K=4
(root, proximal, distal_left, distal_right), bone lengths 10/8/8, one pose
state, three 1280x720 cameras (front, left side, overhead-back) about 100
units from a root near (0, 0, 100), 2 px noise, T=1800 at 60 Hz. Its siblings
raise one difficulty each. ``rodent18_multistate`` is a realistic rat-like
skeleton with several pose states, six cameras, outliers and missing data;
``rodent18_realistic`` (and ``rodent18_realistic_train``, another seed) turns
about the vertical and is seen by a simulated real detector
(:mod:`gimbal.datasets.detector_errors`).

Directions follow damped second-order dynamics toward the current state's
mean direction (natural frequency ``omega``, damping ``zeta``); the root
follows a mean-reverting random walk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..model.cameras import camera_matrix, intrinsics, look_at, project
from . import detector_errors
from .container import from_arrays
from .detector_errors import DetectorErrors, add_detector_errors

GENERATOR_VERSION = 1

__all__ = ["SyntheticSpec", "SYNTHETIC", "generate", "GENERATOR_VERSION", "cache_key"]


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic dataset."""

    name: str
    description: str
    names: tuple[str, ...]
    parents: tuple[int, ...]
    bone_lengths: tuple[float, ...]  # per keypoint; root entry 0
    state_directions: np.ndarray  # (S, K-1, 3) mean bone directions per state
    cameras: tuple[np.ndarray, ...]  # 3x4 matrices
    image_size: tuple[float, float]
    root_center: tuple[float, float, float]
    root_sd: tuple[float, float, float]
    T: int = 1800
    fps: float = 60.0
    noise_px: float = 2.0
    outlier_rate: float = 0.0
    missing_rate: float = 0.0
    bone_sd: float = 0.1  # positional jitter around the rigid bone
    direction_sd: float = 0.2  # stationary angular spread (rad) of the direction dynamics
    omega: float = 3.0
    zeta: float = 0.7
    mean_dwell_s: float = 1.0
    root_tau_s: float = 1.0
    units: str = "mm"
    seed: int = 0
    extra: dict = field(default_factory=dict)
    heading_turns: float = 0.0  # mean full turns of the body about the vertical over the recording (0: no turning)
    turn_rate_sd: float = 1.5  # rad/s, spread of the turning speed around its mean
    detector: DetectorErrors | None = None  # a real detector's errors instead of noise_px/outlier_rate/missing_rate


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _simulate_states(rng, T, S, mean_dwell_frames):
    if S == 1:
        return np.zeros(T, dtype=np.int64)
    stay = 1.0 - 1.0 / mean_dwell_frames
    trans = np.full((S, S), (1 - stay) / (S - 1))
    np.fill_diagonal(trans, stay)
    states = np.empty(T, dtype=np.int64)
    states[0] = rng.integers(S)
    for t in range(1, T):
        states[t] = rng.choice(S, p=trans[states[t - 1]])
    return states


def _simulate_directions(rng, spec, states):
    """Damped second-order dynamics on the sphere toward the state's mean direction."""
    dt = 1.0 / spec.fps
    mu = _unit(spec.state_directions)  # (S, B, 3)
    B = mu.shape[1]
    # noise intensity giving the requested stationary spread for a damped oscillator
    q = spec.direction_sd**2 * 4 * spec.zeta * spec.omega**3
    u = mu[states[0]].copy()
    w = np.zeros((B, 3))
    out = np.empty((len(states), B, 3))
    for t, s in enumerate(states):
        acc = spec.omega**2 * (mu[s] - u) - 2 * spec.zeta * spec.omega * w
        w = w + acc * dt + np.sqrt(q * dt) * rng.standard_normal((B, 3))
        u = _unit(u + w * dt)
        w = w - np.sum(w * u, axis=-1, keepdims=True) * u  # keep velocity tangent
        out[t] = u
    return out


def _simulate_root(rng, spec):
    dt = 1.0 / spec.fps
    c, sd = np.asarray(spec.root_center), np.asarray(spec.root_sd)
    a = dt / spec.root_tau_s
    x = np.empty((spec.T, 3))
    x[0] = c + sd * rng.standard_normal(3)
    for t in range(1, spec.T):
        x[t] = x[t - 1] - a * (x[t - 1] - c) + np.sqrt(2 * a) * sd * rng.standard_normal(3)
    return x


def generate(spec: SyntheticSpec):
    """Simulate ``spec`` and return a validated dataset (deterministic in ``spec.seed``)."""
    rng = np.random.default_rng(spec.seed)
    K = len(spec.parents)
    S = spec.state_directions.shape[0]
    states = _simulate_states(rng, spec.T, S, spec.mean_dwell_s * spec.fps)
    directions = _simulate_directions(rng, spec, states)  # (T, K-1, 3)
    root = _simulate_root(rng, spec)
    rho = np.asarray(spec.bone_lengths, float)
    x = np.empty((spec.T, K, 3))
    x[:, 0] = root
    for k in range(1, K):
        jitter = spec.bone_sd * rng.standard_normal((spec.T, 3))
        x[:, k] = x[:, spec.parents[k]] + rho[k] * directions[:, k - 1] + jitter
    heading = None
    if spec.heading_turns:
        heading = _simulate_heading(rng, spec)
        x = _turn(x, heading)
    P = np.stack(spec.cameras)
    clean = project(x, P)  # (T, C, K, 2)
    if not np.all(np.isfinite(clean)):
        raise RuntimeError(f"synthetic dataset {spec.name}: a keypoint fell behind a camera; fix the camera layout.")
    wh = np.asarray(spec.image_size, float)
    confidence = None
    if spec.detector is not None:
        sim = add_detector_errors(clean, np.broadcast_to(wh, (P.shape[0], 2)), spec.names, spec.detector,
                                  seed=spec.seed + 1)
        obs, is_outlier, confidence = sim.observations, sim.is_outlier, sim.confidence
    else:
        obs = clean + spec.noise_px * rng.standard_normal(clean.shape)
        shape = obs.shape[:3]
        is_outlier = rng.random(shape) < spec.outlier_rate
        obs[is_outlier] = rng.random((int(is_outlier.sum()), 2)) * wh
        missing = rng.random(shape) < spec.missing_rate
        obs[missing] = np.nan
        is_outlier &= ~missing
    ds = from_arrays(
        obs,
        P,
        spec.parents,
        keypoint_names=spec.names,
        image_size=wh,
        positions_true=x,
        states_true=states,
        is_outlier=is_outlier,
        fps=spec.fps,
        units=spec.units,
        name=spec.name,
        description=spec.description,
    )
    ds["bone_lengths_true"] = (("keypoint",), rho)
    if confidence is not None:
        ds["confidence"] = (("frame", "camera", "keypoint"), confidence)
        ds["outlier_rate_true"] = (("camera", "keypoint"), sim.outlier_rate)
        ds["offset_true"] = (("camera", "keypoint", "uv"), sim.offset)
    if heading is not None:
        ds["heading_true"] = (("frame",), heading)
    ds["state_directions_true"] = (("state", "bone", "xyz"), _unit(spec.state_directions))
    ds.attrs.update(
        n_states=S,
        generator_version=GENERATOR_VERSION,
        seed=spec.seed,
        noise_px=spec.noise_px,
        outlier_rate=spec.outlier_rate,
        missing_rate=spec.missing_rate,
    )
    return ds


def _simulate_heading(rng, spec):
    """Heading angle (rad) about the vertical: its rate is an Ornstein-Uhlenbeck process around a mean turn rate."""
    dt = 1.0 / spec.fps
    mean_rate = 2 * np.pi * spec.heading_turns / (spec.T * dt)
    a = dt / 1.0  # the turning speed's correlation time: 1 s
    rate = np.empty(spec.T)
    rate[0] = mean_rate
    for t in range(1, spec.T):
        rate[t] = rate[t - 1] - a * (rate[t - 1] - mean_rate) + np.sqrt(2 * a) * spec.turn_rate_sd * rng.standard_normal()
    return np.cumsum(rate) * dt


def _turn(x, heading):
    """Rotate every frame's pose about the vertical through its root by that frame's heading."""
    c, s = np.cos(heading), np.sin(heading)
    rel = x - x[:, :1]
    out = x.copy()
    out[..., 0] = x[:, :1, 0] + c[:, None] * rel[..., 0] - s[:, None] * rel[..., 1]
    out[..., 1] = x[:, :1, 1] + s[:, None] * rel[..., 0] + c[:, None] * rel[..., 1]
    return out


# --- the named datasets ---------------------------------------------------------------


def _minimal_cameras():
    K = intrinsics(1108.5, 640.0, 360.0)
    target = np.array([0.0, 0.0, 105.0])
    centers = {
        "front": target + [0.0, -100.0, 0.0],
        "left": target + [-100.0, 0.0, 0.0],
        "overhead_back": target + [0.0, 60.0, 80.0],
    }
    return tuple(camera_matrix(K, *look_at(c, target)) for c in centers.values())


def _minimal(name, description, **overrides):
    base = SyntheticSpec(
        name=name,
        description=description,
        names=("root", "proximal", "distal_left", "distal_right"),
        parents=(-1, 0, 1, 1),
        bone_lengths=(0.0, 10.0, 8.0, 8.0),
        state_directions=np.array([[[0.0, 0.0, 1.0], [0.7, 0.0, 0.7], [-0.7, 0.0, 0.7]]]),
        cameras=_minimal_cameras(),
        image_size=(1280.0, 720.0),
        root_center=(0.0, 0.0, 100.0),
        root_sd=(3.0, 3.0, 1.5),
        units="cm",
        seed=20251220,
    )
    return replace(base, **overrides)


RAT_NAMES = (
    "SpineF", "HeadB", "HeadF", "HeadL", "ShoulderL", "ElbowL", "ArmL", "ShoulderR", "ElbowR",
    "ArmR", "SpineM", "SpineL", "HipL", "KneeL", "ShinL", "HipR", "KneeR", "ShinR",
)  # fmt: skip
RAT_PARENTS = (-1, 0, 0, 0, 0, 4, 5, 0, 7, 8, 0, 10, 11, 12, 13, 11, 15, 16)
RAT_BONES_MM = (0, 40, 62, 45, 30, 25, 20, 30, 25, 20, 60, 60, 30, 35, 30, 30, 35, 30)
# canonical quadruped pose: x forward, y left, z up (one row per bone = keypoints 1..17)
RAT_DIRECTIONS = (
    (0.8, 0, 0.6), (1, 0, 0.3), (0.7, 0.5, 0.5), (0, 1, -0.6), (0.2, 0.2, -1), (0.5, 0, -1),
    (0, -1, -0.6), (0.2, -0.2, -1), (0.5, 0, -1), (-1, 0, 0), (-1, 0, 0.1), (0, 1, -0.5),
    (0.4, 0.2, -1), (-0.5, 0, -1), (0, -1, -0.5), (0.4, -0.2, -1), (-0.5, 0, -1),
)  # fmt: skip


def _rotation(axis, angle):
    axis = _unit(axis)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def _rat_states(n_states=4, seed=7):
    """State 0 is the canonical pose; others rotate each bone by a random ~35 degree turn."""
    rng = np.random.default_rng(seed)
    base = _unit(np.array(RAT_DIRECTIONS, float))
    states = [base]
    for _ in range(1, n_states):
        rot = [_rotation(rng.standard_normal(3), np.deg2rad(rng.uniform(25, 45))) for _ in base]
        states.append(np.stack([r @ d for r, d in zip(rot, base)]))
    return np.stack(states)


def _rat_cameras():
    target = np.array([0.0, 0.0, 60.0])
    cams = []
    for i, focal in enumerate((2400.0, 2600.0, 2800.0, 3000.0, 2500.0, 2700.0)):
        angle = 2 * np.pi * i / 6
        center = target + [1400.0 * np.cos(angle), 1400.0 * np.sin(angle), 500.0]
        cams.append(camera_matrix(intrinsics(focal, 640.0, 512.0), *look_at(center, target)))
    return tuple(cams)


SYNTHETIC = {
    "v0.2.1_L00_minimal": _minimal(
        "v0.2.1_L00_minimal", "Minimal 4-keypoint skeleton, 3 cameras, one pose state, 2 px noise, clean data."
    ),
    "v0.2.1_L01_noise": _minimal(
        "v0.2.1_L01_noise", "L00 with 6 px detection noise.", noise_px=6.0, seed=20251221
    ),
    "v0.2.1_L02_outliers": _minimal(
        "v0.2.1_L02_outliers", "L00 with 10% outlier detections uniform over the image.", outlier_rate=0.10,
        seed=20251222,
    ),
    "v0.2.1_L03_missingness": _minimal(
        "v0.2.1_L03_missingness", "L00 with 15% missing detections.", missing_rate=0.15, seed=20251223
    ),
    "rodent18_multistate": SyntheticSpec(
        name="rodent18_multistate",
        description="Rat-like 18-keypoint skeleton, 6 cameras, 4 pose states, 3 px noise, 10% outliers, 5% missing.",
        names=RAT_NAMES,
        parents=RAT_PARENTS,
        bone_lengths=RAT_BONES_MM,
        state_directions=_rat_states(),
        cameras=_rat_cameras(),
        image_size=(1280.0, 1024.0),
        root_center=(0.0, 0.0, 60.0),
        root_sd=(40.0, 40.0, 8.0),
        noise_px=3.0,
        outlier_rate=0.10,
        missing_rate=0.05,
        bone_sd=1.0,
        units="mm",
        seed=20251224,
    ),
}


def _rodent_realistic(name: str, description: str, seed: int) -> SyntheticSpec:
    return replace(
        SYNTHETIC["rodent18_multistate"],
        name=name,
        description=description,
        heading_turns=3.0,
        detector=DetectorErrors(hard_keypoints=("ElbowL", "ElbowR", "KneeL", "KneeR", "ArmL", "ArmR", "ShinL", "ShinR"),
                                hard_cameras=3),
        seed=seed,
    )


REALISTIC_DESCRIPTION = (
    "rodent18_multistate turning about the vertical (3 turns on average over the recording) and seen by a "
    "simulated real detector: outlier rates per (camera, keypoint) 5-95% in runs of ~15 frames (paws and "
    "elbows worst), confident left/right swaps, 10% of pairs offset 4-8 px, confidence scores, 3% missing."
)
SYNTHETIC["rodent18_realistic"] = _rodent_realistic("rodent18_realistic", REALISTIC_DESCRIPTION, 20261201)
SYNTHETIC["rodent18_realistic_train"] = _rodent_realistic(
    "rodent18_realistic_train", "Another recording of rodent18_realistic (another seed): training data for a prior.",
    20261202,
)


def cache_key(spec: SyntheticSpec) -> str:
    """A short hash of everything that determines ``generate(spec)``: the spec's fields and the generator's source.

    The cache of generated datasets is keyed by it, so a changed spec or generator (a fix, a new failure mode) is
    generated again instead of served stale from an earlier version's file.
    """
    digest = hashlib.sha256()
    for f in fields(spec):
        value = getattr(spec, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            digest.update(np.ascontiguousarray(item).tobytes() if isinstance(item, np.ndarray) else repr(item).encode())
    for source in (__file__, detector_errors.__file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:12]
