"""The GIMBAL model in PyMC, composed from small named pieces.

``build_model`` wires together:

* :func:`latent_positions` - 3D keypoints ``x`` (frame, keypoint, xyz), or constants when frozen;
* :func:`bone_parameters` - bone lengths ``rho`` and positional spread ``sigma``;
* :func:`pose_state_parameters` - per-state mean directions and concentrations
  (fixed from the triangulated data, as the original GIMBAL does, or learned);
* :func:`pose_emissions` - ``log p(x_t | state s)`` for every frame and state, with bone
  directions integrated out analytically (``directions="marginal"``) or as explicit unit vectors;
* :func:`pose_prior` - the directional HMM (states summed out by the forward algorithm) or a
  single-state prior;
* :func:`temporal_prior` - a random walk per keypoint (Student-t or Gaussian steps, each in the world or relative to
  the keypoint's parent: :func:`step_frames`) plus a weak anchor of the first root position;
* :func:`observation_loglik` - projection into every camera and the Gaussian or
  inlier/outlier-mixture likelihood, per frame, with missing detections contributing exactly 0.

Every piece is vectorized over frames, so the graph is the same size for any ``T``.
The three hot spots (pose emissions, HMM forward algorithm, observation likelihood)
run as fused numba kernels from :mod:`gimbal.model.kernels` by default (``kernels="fused"``);
``kernels="graph"`` builds them from plain PyTensor operations instead (the reference
implementation, and what the JAX backend compiles); there the HMM runs frame by frame
(``hmm_algorithm="sequential"``) or as a log-depth tree over frames (``"parallel"``, for GPUs).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from ..datasets import skeleton_of
from .distributions import STEP_DOF, hmm_forward_logp, hmm_parallel_logp, marginal_bone_logp, safe_norm, step_logp, vmf_logp
from ..settings import CAMERA_NOISE, OFFSETS, STARTS, STEP_FRAMES, STEPS, WHITENED_TRACKS
from .initialization import (EXACT_FIX, Initialization, check_initial_point, exact_reprojection_text, init_point_for,
                             initialize_from_observations_dlt, off_exact_zeros, smoothed_start, start_covariance)
from ._inputs import data_input as _data
from .kernels import bone_emission_logp, hmm_logp
from .observation import has_scores, observation_loglik, project_points, student_t_2d_logp
from .camera_noise import cross_validated_camera_noise
from .offsets import estimate_offsets
from .prior import PosePrior, canonical_positions, load_prior, with_prior
from .whitening import track_factor, walk_dominated, whitened_flat

__all__ = [
    "ModelConfig",
    "build_model",
    "sparse_frame_options",
    "latent_positions",
    "bone_parameters",
    "pose_state_parameters",
    "pose_emissions",
    "pose_prior",
    "temporal_prior",
    "observation_loglik",
    "project_points",
    "student_t_2d_logp",
]


@dataclass(frozen=True)
class ModelConfig:
    """Model toggles. See :func:`build_model` for their meaning."""

    use_mixture: bool = True
    use_directional_hmm: bool = True
    n_states: int = 1
    directions: str = "marginal"
    state_params: str = "empirical"
    freeze_latents: str | None = None
    temporal: bool = True
    steps: str = STEPS[0]
    steps_dof: float = STEP_DOF  # the Student-t steps' degrees of freedom (ignored with Gaussian steps)
    step_frame: str = STEP_FRAMES[0]  # per keypoint the frame its steps are smaller in ("auto"), "world" or "parent"
    offsets: str = OFFSETS[0]  # the detector's systematic offset per (camera, keypoint): "estimated" or "none"
    camera_noise: str = CAMERA_NOISE[0]  # a camera's noise factor: "floored" (>= its held-out estimate) or "sampled"
    scales: str = "fixed"
    kernels: str = "fused"
    root_dynamics: str = "centered"
    hmm_algorithm: str = "sequential"
    outlier_model: str = "gaussian"
    observation: str = "camera_keypoint"
    confidence: bool | None = None  # None: the dataset's scores where it has them (build_model records the choice)
    whitened_tracks: str = "none"  # "still": the tracks the random walk dominates; "all": every track
    heading: bool = False
    prior: str | None = None
    start: str = STARTS[0]

    def __post_init__(self):
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}.")
        if self.directions not in ("marginal", "explicit"):
            raise ValueError(f"directions must be 'marginal' or 'explicit', got {self.directions!r}.")
        if self.state_params not in ("empirical", "learned"):
            raise ValueError(f"state_params must be 'empirical' or 'learned', got {self.state_params!r}.")
        if self.freeze_latents not in (None, "init", "truth"):
            raise ValueError(f"freeze_latents must be None, 'init' or 'truth', got {self.freeze_latents!r}.")
        if self.scales not in ("fixed", "learned"):
            raise ValueError(f"scales must be 'fixed' or 'learned', got {self.scales!r}.")
        if self.kernels not in ("fused", "graph"):
            raise ValueError(f"kernels must be 'fused' or 'graph', got {self.kernels!r}.")
        if self.root_dynamics not in ("centered", "noncentered"):
            raise ValueError(f"root_dynamics must be 'centered' or 'noncentered', got {self.root_dynamics!r}.")
        if self.steps not in STEPS:
            raise ValueError(f"steps must be one of {STEPS}, got {self.steps!r}.")
        if self.step_frame not in STEP_FRAMES:
            raise ValueError(f"step_frame must be one of {STEP_FRAMES}, got {self.step_frame!r}.")
        if self.offsets not in OFFSETS:
            raise ValueError(f"offsets must be one of {OFFSETS}, got {self.offsets!r}.")
        if self.camera_noise not in CAMERA_NOISE:
            raise ValueError(f"camera_noise must be one of {CAMERA_NOISE}, got {self.camera_noise!r}.")
        if (isinstance(self.steps_dof, bool) or not isinstance(self.steps_dof, (int, float))
                or not (np.isfinite(self.steps_dof) and self.steps_dof > 0)):
            raise ValueError(f"steps_dof must be a positive number (degrees of freedom), got {self.steps_dof!r}.")
        if self.root_dynamics == "noncentered" and (self.scales != "fixed" or not self.temporal
                                                    or self.steps != "gaussian"):
            raise ValueError("root_dynamics='noncentered' rewrites the temporal prior's root random walk as "
                             "standard-normal steps of its fixed size: it needs scales='fixed', temporal=True and "
                             "steps='gaussian' (CLI: --steps gaussian).")
        if self.hmm_algorithm not in ("sequential", "parallel"):
            raise ValueError(f"hmm_algorithm must be 'sequential' or 'parallel', got {self.hmm_algorithm!r}.")
        if self.hmm_algorithm == "parallel" and self.kernels != "graph":
            raise ValueError("hmm_algorithm='parallel' is a plain PyTensor graph (for the JAX backend); the fused numba "
                             "kernel runs sequentially. Use kernels='graph' (CLI: --kernels graph or --backend jax) with it.")
        if self.outlier_model not in ("uniform", "gaussian", "student_t"):
            raise ValueError(f"outlier_model must be 'uniform', 'gaussian' or 'student_t', got {self.outlier_model!r}.")
        if self.observation not in ("shared", "camera_keypoint"):
            raise ValueError(f"observation must be 'shared' or 'camera_keypoint', got {self.observation!r}.")
        if self.confidence and (not self.use_mixture or self.outlier_model == "student_t"):
            raise ValueError("confidence=True makes the detector's score a covariate of the inlier probability: it needs "
                             "the two-class mixture (use_mixture=True, outlier_model 'uniform' or 'gaussian').")
        if self.outlier_model == "student_t" and (not self.use_mixture or self.kernels != "graph"):
            raise ValueError("outlier_model='student_t' replaces the inlier/outlier mixture (use_mixture=True) by a "
                             "heavy-tailed likelihood built as a plain graph: use it with kernels='graph'.")
        if self.n_states < 1:
            raise ValueError(f"n_states must be >= 1, got {self.n_states}.")
        if self.whitened_tracks not in WHITENED_TRACKS:
            raise ValueError(f"whitened_tracks must be one of {WHITENED_TRACKS}, got {self.whitened_tracks!r}.")
        if self.whitened_tracks != "none" and not self.tracks_are_walks:
            raise ValueError(f"whitened_tracks={self.whitened_tracks!r} samples tracks in the coordinates that whiten their "
                             "random walk: it needs free positions (freeze_latents=None), temporal=True and "
                             "root_dynamics='centered'.")
        if self.heading and self.directions != "marginal":
            raise ValueError("a trained prior's body-frame pose states (heading) need directions='marginal'.")

    @property
    def step_dof(self) -> float | None:
        """The Student-t steps' degrees of freedom, or None for Gaussian steps."""
        return float(self.steps_dof) if self.steps == "student_t" else None

    @property
    def tracks_are_walks(self) -> bool:
        """Whether the positions are free and tied over frames by the random walk alone."""
        return self.freeze_latents is None and self.temporal and self.root_dynamics == "centered"

    def as_dict(self) -> dict:
        return asdict(self)


# --- pieces ---------------------------------------------------------------------------


def _has_unseen_positions(dataset: xr.Dataset) -> bool:
    """Whether some keypoint goes undetected by every camera in some frame: only there can the start's gradient have
    exactly-zero components (:func:`~gimbal.model.initialization.off_exact_zeros`)."""
    obs = dataset["observations"].transpose("frame", "camera", "keypoint", ...).values
    seen = np.isfinite(obs).all(axis=-1).any(axis=1)  # (frame, keypoint)
    return not seen.all()


def detection_offsets(dataset: xr.Dataset, init: Initialization, config: ModelConfig) -> np.ndarray:
    """Each (camera, keypoint) pair's systematic offset ``(C, K, 2)`` pixels, from the start's residuals
    (``config.offsets == "estimated"``, :func:`~gimbal.model.offsets.estimate_offsets`) or zeros."""
    C, K = dataset.sizes["camera"], dataset.sizes["keypoint"]
    if config.offsets == "none":
        return np.zeros((C, K, 2))
    obs = dataset["observations"].transpose("frame", "camera", "keypoint", ...).values
    return estimate_offsets(obs, dataset["camera_matrix"].values, init.positions)


def camera_noise_floor(dataset: xr.Dataset, init: Initialization, config: ModelConfig,
                       offsets: np.ndarray) -> np.ndarray | None:
    """The floor under each camera's log noise factor ``(C,)``: its estimate from held-out residuals on the detections
    less ``offsets`` (:func:`~gimbal.model.camera_noise.cross_validated_camera_noise`); None where the factors are
    sampled freely (or the noise is shared)."""
    if config.observation != "camera_keypoint" or config.camera_noise == "sampled":
        return None
    obs = dataset["observations"].transpose("frame", "camera", "keypoint", ...).values - offsets[None]
    return cross_validated_camera_noise(obs, dataset["camera_matrix"].values, init.positions)


def latent_positions(dataset: xr.Dataset, init: Initialization, config: ModelConfig, whitening=None):
    """3D keypoint positions: a free variable, or a constant when latents are frozen.

    ``whitening``: ``(mu, diag, sub)`` from :func:`_track_whitening` to sample the positions in whitened coordinates.
    """
    if config.freeze_latents == "truth":
        if "positions_true" not in dataset:
            raise ValueError("freeze_latents='truth' needs ground-truth positions; this dataset has none (use 'init').")
        truth = dataset["positions_true"].values
        # motion capture loses markers: frozen at the truth where it is known, at the initialization elsewhere
        return pt.as_tensor_variable(np.where(np.isfinite(truth), truth, init.positions))
    if config.freeze_latents == "init":
        return pt.as_tensor_variable(init.positions)
    if config.root_dynamics == "noncentered" and init.positions.shape[0] > 1:
        return _noncentered_root_positions(init)
    # Flat: all information about x comes from the pose, temporal and observation potentials.
    if whitening is not None:
        return whitened_flat("x", *whitening, dims=("frame", "keypoint", "xyz"), initval=init.values["x"])
    return pm.Flat("x", dims=("frame", "keypoint", "xyz"), initval=init.values["x"])


def _track_whitening(dataset: xr.Dataset, init: Initialization, every: bool):
    """``(mu, diag, sub)`` of the sampler's coordinates for ``x`` (:mod:`gimbal.model.whitening`), or None.

    The tracks whitened are those the random walk dominates (:func:`~gimbal.model.whitening.walk_dominated`), or
    ``every`` track; the others keep the positions' own coordinates (less the start). None where no track is whitened.
    """
    cov = start_covariance(init, dataset)
    step = np.broadcast_to(np.asarray(init.values["step_sigma"], float), (init.positions.shape[1],))
    chosen = np.ones(step.shape, bool) if every else walk_dominated(cov, step)
    if not chosen.any():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        info = 1.0 / np.diagonal(cov, axis1=-2, axis2=-1)  # (T, K, 3): NaN where fewer than two cameras
    info = np.where(np.isfinite(info), info, 0.0)
    floor = 1.0 / (10.0 * float(np.max(init.values["bone_length"], initial=1.0))) ** 2  # the anchor's spread
    diag, sub = track_factor(info, step, floor)
    diag[:, ~chosen], sub[:, ~chosen] = 1.0, 0.0
    return (_data(init.values["x"], "track_mu", per_frame=True), _data(diag, "track_diag", per_frame=True),
            _data(sub, "track_sub", per_frame=True))


def _noncentered_root_positions(init: Initialization):
    """Positions whose root (keypoint 0) trajectory is its start plus scaled standard-normal steps.

    ``x[t, 0] = root_start + step_0 * cumsum(root_steps)[t - 1]`` with
    ``root_steps ~ N(0, 1)``: the non-centered form of the root's random walk
    (the other keypoints stay free). Its prior density equals the centered
    walk's up to a constant, because the map from steps to positions is
    linear with a fixed step size.
    """
    x0 = init.values["x"]
    step0 = float(init.values["step_sigma"][0])
    step = _data(step0, "root_step")
    start = pm.Flat("root_start", shape=3, initval=x0[0, 0])
    steps = pm.Normal("root_steps", 0.0, 1.0, shape=(x0.shape[0] - 1, 3), initval=np.diff(x0[:, 0], axis=0) / step0)
    others = pm.Flat("x_nonroot", shape=(x0.shape[0], x0.shape[1] - 1, 3), initval=x0[:, 1:])
    root = pt.concatenate([start[None], start[None] + step * pt.cumsum(steps, axis=0)], axis=0)
    return pm.Deterministic("x", pt.concatenate([root[:, None], others], axis=1), dims=("frame", "keypoint", "xyz"))


def bone_parameters(init: Initialization, config: ModelConfig):
    """Bone lengths (learned) and per-bone positional spread (fixed from the data, or learned).

    Learning the spread ``sigma`` jointly with every position makes a funnel (small
    ``sigma`` pins all offsets at once), so by default it is fixed at its
    triangulation estimate, as the original GIMBAL fixes its scales from training data.
    """
    rho0, sigma0 = init.values["bone_length"], init.values["bone_sigma"]
    rho = pm.LogNormal("bone_length", mu=pt.log(_data(rho0, "bone_length_prior")), sigma=0.5, dims="bone", initval=rho0)
    if config.scales == "fixed":
        return rho, _data(sigma0, "bone_sigma_fixed")
    sigma = pm.LogNormal("bone_sigma", mu=pt.log(_data(sigma0, "bone_sigma_prior")), sigma=1.0, dims="bone",
                         initval=sigma0)
    return rho, sigma


def pose_state_parameters(init: Initialization, config: ModelConfig):
    """Mean directions ``(S, B, 3)`` and concentrations ``(S, B)`` of the pose states."""
    states = init.pose_states
    if config.state_params == "empirical":
        return _data(states.mean_directions, "state_mean_fixed"), _data(states.kappa, "state_kappa_fixed")
    raw = pm.Normal("state_mean_raw", 0.0, 1.0, dims=("state", "bone", "xyz"), initval=states.mean_directions)
    mean = pm.Deterministic("state_mean", raw / safe_norm(raw)[..., None], dims=("state", "bone", "xyz"))
    kappa = pm.LogNormal("state_kappa", mu=np.log(20.0), sigma=1.0, dims=("state", "bone"), initval=states.kappa)
    return mean, kappa


def _bone_vectors(x, children, parents):
    return x[:, children, :] - x[:, parents, :]


def pose_emissions(x, skeleton, rho, sigma, mean, kappa, init: Initialization, config: ModelConfig):
    """``log p(pose_t | state = s)`` summed over bones: a ``(T, S)`` tensor.

    With ``directions="marginal"`` the bone directions are integrated out, so
    the emission is the exact marginal density of the child position given its
    parent; the sampler only moves 3D positions. With ``"explicit"`` every frame
    and bone gets a unit vector ``u = z / |z|`` and the emission is its vMF
    density; the Gaussian bone term is then added separately by :func:`pose_prior`.
    """
    children, parents = _data(skeleton.bones, "bone_child", "int64"), _data(skeleton.bone_parents, "bone_parent", "int64")
    if config.heading:  # the states' directions are in the body frame: rotate each frame's pose into it
        states = init.pose_states
        x = canonical_positions(x, _data(states.heading_keypoints, "heading_keypoints", "int64"),
                                _data(states.frame_axes, "frame_axes"), xp=pt)
    if config.directions == "marginal" and config.kernels == "fused":
        return bone_emission_logp(x, children, parents, rho, sigma, mean, kappa)
    delta = _bone_vectors(x, children, parents)[:, None]  # (T, 1, B, 3)
    if config.directions == "marginal":
        return marginal_bone_logp(delta, rho, sigma, mean[None], kappa[None]).sum(axis=-1)
    raw = pm.Normal("direction_raw", 0.0, 1.0, dims=("frame", "bone", "xyz"), initval=init.values["direction_raw"])
    u = raw / safe_norm(raw)[..., None]
    bone_term = -0.5 * pt.sum((delta[:, 0] - rho[:, None] * u) ** 2, axis=-1) / sigma**2 - 1.5 * pt.log(
        2 * np.pi * sigma**2
    )
    pm.Potential("bone_offsets", bone_term.sum())
    return vmf_logp(u[:, None], mean[None], kappa[None]).sum(axis=-1)


def pose_prior(emission, init: Initialization, config: ModelConfig):
    """The directional HMM (states summed out) or the single-state prior, as ``pose_prior``."""
    states = init.pose_states
    S = states.n_states
    initial = np.full(S, 1.0 / S) if states.initial is None else states.initial
    log_init = _data(np.log(np.maximum(initial, 1e-300)), "state_log_initial")
    if S > 1 and not config.use_directional_hmm:  # a trained prior's states on independent (sparse) frames
        return pm.Potential("pose_prior", pt.logsumexp(emission + log_init[None], axis=1).sum())
    if config.use_directional_hmm and S > 1:
        # sticky by default: pose states last many frames; a trained prior brings its own counts
        alpha = 1.0 + 9.0 * np.eye(S) if states.transition_counts is None else states.transition_counts
        trans = pm.Dirichlet("transition", a=_data(alpha, "transition_counts"), dims=("state", "state_to"),
                             initval=init.values["transition"])
        log_trans = pt.log(trans)
        if config.kernels == "fused":
            logp = hmm_logp(emission, log_init, log_trans)
        elif config.hmm_algorithm == "parallel":
            logp = hmm_parallel_logp(emission, log_init, log_trans, n_frames=init.positions.shape[0])
        else:
            logp = hmm_forward_logp(emission, log_init, log_trans)
    else:
        logp = emission[:, 0].sum()
    return pm.Potential("pose_prior", logp)


def step_frames(init: Initialization, config: ModelConfig, parents) -> tuple[np.ndarray, np.ndarray]:
    """Which keypoints take their steps relative to their parent ``(K,)`` bool, and every keypoint's step size
    ``(K,)`` in its frame.

    ``config.step_frame``: ``"world"``, every keypoint in the world (the original GIMBAL's); ``"parent"``, every
    keypoint but the root relative to its parent; ``"auto"``, those whose steps are smaller relative to their parent
    than in the world (the frame in which the next position is better predicted). The sizes are ``init``'s (the
    data's, or a trained prior's: :func:`~gimbal.model.prior.with_prior`); a prior with world steps only (the
    original GIMBAL's files) keeps "auto" in the world and refuses "parent".
    """
    world = np.asarray(init.values["step_sigma"], float)
    parent = init.values.get("step_sigma_parent")
    if parent is None:  # a prior with world steps only (the original GIMBAL's files): "auto" stays in the world
        if config.step_frame == "parent":
            raise ValueError("step_frame='parent' needs step sizes relative to each keypoint's parent, and the pose "
                             "prior has none (the original GIMBAL's files carry world steps only): re-fit it with "
                             "`gimbal prior fit`, or use step_frame='world' or 'auto' (--step-frame).")
        return np.zeros(world.shape, bool), world
    parent = np.asarray(parent, float)
    relative = (np.asarray(parents) >= 0) & (config.step_frame != "world")
    if config.step_frame == "auto":
        relative &= parent < world
    return relative, np.where(relative, parent, world)


def temporal_prior(x, init: Initialization, config: ModelConfig, parents):
    """Per-keypoint random walk over frames plus a weak anchor for the first root position.

    A step is Gaussian or Student-t (``config.steps``, :func:`~gimbal.model.distributions.step_logp`), taken in the
    world or relative to the keypoint's parent (:func:`step_frames`); its size is fixed at its triangulation estimate
    (or a trained prior's) unless ``scales="learned"``. Returns the keypoints whose steps are relative ``(K,)``.
    """
    relative, step0 = step_frames(init, config, parents)
    if config.scales == "fixed":
        step = _data(step0, "step_sigma_fixed")
    else:
        step = pm.LogNormal("step_sigma", mu=pt.log(_data(step0, "step_sigma_prior")), sigma=1.0, dims="keypoint",
                            initval=step0)
    spread = _data(10.0 * float(np.max(init.values["bone_length"], initial=1.0)), "anchor_spread")
    anchor = -0.5 * pt.sum((x[0, 0] - _data(init.center, "anchor_center")) ** 2) / spread**2
    if init.positions.shape[0] > 1:
        # which keypoints step relative to their parent is data, not graph: one compiled model serves every recording
        parent = _data(np.maximum(np.asarray(parents), 0), "step_parent", "int64")
        r = x - x[:, parent] * _data(relative.astype(float)[:, None], "step_relative")  # in_step_frames, as a graph
        d = r[1:] - r[:-1]
        walk = step_logp(pt.sum(d**2, axis=-1), step, config.step_dof)
        if config.root_dynamics == "noncentered":
            walk = walk[:, 1:]  # the root's walk is the N(0, 1) prior of its steps (see latent_positions)
        anchor = anchor + walk.sum()
    pm.Potential("temporal_prior", anchor)
    return relative


# --- composition ----------------------------------------------------------------------


def _coords(dataset: xr.Dataset, n_states: int) -> dict:
    skel = skeleton_of(dataset)
    return {
        "frame": dataset["frame"].values,
        "keypoint": list(skel.names),
        "bone": skel.bone_names,
        "xyz": ["x", "y", "z"],
        "camera": [str(c) for c in dataset["camera"].values],
        "state": list(range(n_states)),
        "state_to": list(range(n_states)),
    }


def _use_scores(confidence: bool | None, dataset: xr.Dataset, use_mixture: bool, outlier_model: str) -> bool:
    """``confidence`` as given, or (None) whether the dataset has scores the model can use."""
    if confidence is not None:
        return bool(confidence)
    return bool(use_mixture) and outlier_model != "student_t" and has_scores(dataset)


def sparse_frame_options(dataset: xr.Dataset) -> dict:
    """The :func:`build_model` options sparse labelled frames need (``attrs['frames_consecutive'] = 0``, e.g. a
    Label3D file): no random walk between frames and the pose states on each frame independently. Empty for a
    recording of consecutive frames."""
    return {} if dataset.attrs.get("frames_consecutive", 1) else {"temporal": False, "use_directional_hmm": False}


def build_model(
    dataset: xr.Dataset,
    use_mixture: bool = True,
    use_directional_hmm: bool = True,
    *,
    n_states: int | None = None,
    directions: str = "marginal",
    state_params: str = "empirical",
    freeze_latents: str | None = None,
    temporal: bool = True,
    steps: str = ModelConfig.steps,
    steps_dof: float = ModelConfig.steps_dof,
    step_frame: str = ModelConfig.step_frame,
    offsets: str = ModelConfig.offsets,
    camera_noise: str = ModelConfig.camera_noise,
    scales: str = "fixed",
    kernels: str = "fused",
    root_dynamics: str = "centered",
    hmm_algorithm: str = "sequential",
    outlier_model: str = ModelConfig.outlier_model,
    observation: str = ModelConfig.observation,
    confidence: bool | None = None,
    whitened_tracks: str = ModelConfig.whitened_tracks,
    prior: PosePrior | str | None = None,
    start: str = ModelConfig.start,
    init: Initialization | None = None,
    validate: bool = True,
    seed: int = 0,
) -> pm.Model:
    """Build the GIMBAL model for a dataset.

    Parameters
    ----------
    dataset : xarray.Dataset
        From :func:`gimbal.datasets.load_dataset` or :func:`gimbal.datasets.from_arrays`.
    use_mixture : bool
        Inlier/outlier mixture likelihood (outliers uniform over the image); else Gaussian.
    use_directional_hmm : bool
        Bone directions follow an HMM over ``n_states`` pose states (summed out by
        the forward algorithm); else a single-state direction prior.
    n_states : int, optional
        Number of pose states; defaults to the dataset's known number (``attrs['n_states']``) or 1.
        Ignored (1) without the HMM.
    directions : {"marginal", "explicit"}
        Integrate bone directions out analytically (default; the sampler moves only
        positions) or sample explicit per-frame unit vectors (the earlier port's form).
    state_params : {"empirical", "learned"}
        Fix state directions and concentrations from the triangulated data (default,
        no label switching) or learn them (label-symmetric posterior when S > 1).
    freeze_latents : {None, "init", "truth"}
        Replace the 3D positions by constants (the initialisation or ground truth)
        and keep only the observation model: the likelihood-only check of group 7.
    temporal : bool
        Include the per-keypoint random-walk prior over frames.
    steps : {"student_t", "gaussian"}
        The distribution of a keypoint's 3D step from one frame to the next: multivariate Student-t with
        ``steps_dof`` degrees of freedom (default), or isotropic Gaussian (the seed's
        model), both with the step size as scale, fitted to the robust reconstruction's steps less its noise: the
        Student-t's maximum-likelihood scale, the Gaussian's from the median step. With Gaussian steps a keypoint
        that moves in bursts (a fly's leg in swing, a mouse that sits and then runs) pays a square for every burst
        and the model widens that keypoint's pixel noise instead, letting the track drift off its detections; the
        Student-t's tails let the burst through, and its fitted scale counts the bursts (the median step, which
        sees the still frames only, is up to 3.8x smaller there; README, *Step sizes and fast movements*).
    steps_dof : float
        The Student-t steps' degrees of freedom (ignored with ``steps="gaussian"``). Fewer make every large step
        cheaper: a burst of movement, but also an explanation of a frame's detections that pulls the keypoint off its
        track. With 3 instead of the default's 10, 100-frame fits with a trained prior left positions where camera
        groups disagree unconverged in two of four seeds (README, *Degrees of freedom of the steps*).
    step_frame : {"auto", "world", "parent"}
        The frame a keypoint's step is taken in (:func:`step_frames`): per keypoint the one of the two below in which
        its steps are smaller (default), the world (the original GIMBAL's random walk of each position; the seed's
        model), or relative to its parent (the change of the vector from its parent; the root in the world). On an
        animal that moves as a whole (a rodent walking and turning) a keypoint's step relative to its parent is a
        fraction of its step in the world, and the prior predicts the next pose that much better.
    offsets : {"estimated", "none"}
        A detector's systematic offset per (camera, keypoint), estimated from the start's residuals
        (:func:`gimbal.model.offsets.estimate_offsets`) and taken off that pair's detections (default), or none (the
        detections as they are; the seed's model). A pair whose detector marks a point beside the joint in every
        frame is a bias the inlier/outlier mixture does not remove; on ``rodent18_realistic`` (10% of pairs 4-8 px
        off) it is the largest error left. Only frames where at least 5 cameras see a keypoint as an inlier count
        (with fewer the estimate picked the wrong camera on a real recording): a rig of four cameras gets none.
        ``model.gimbal_offsets`` holds the estimate, ``(C, K, 2)`` pixels.
    camera_noise : {"floored", "sampled"}
        With ``observation="camera_keypoint"``: each camera's noise factor sampled but kept above its estimate from
        the residuals of its detections against the point the other cameras place (default;
        :func:`gimbal.model.camera_noise.cross_validated_camera_noise`), or sampled freely. Freely, a camera's factor
        can shrink towards the noise floor while every point moves onto its rays, and the posterior then follows
        that one camera (on the real multi-view session ``top`` fell to 0.18x the shared noise). Above its floor a
        factor moves freely (a camera worse than its residuals show, a broken calibration, is still found); below it,
        it pays a steep half-Gaussian wall.
        ``model.gimbal_camera_noise`` holds the floor, ``(C,)``, or None.
    scales : {"fixed", "learned"}
        Fix the per-bone positional spread and the per-keypoint step size at their
        triangulation estimates (default) or learn them (funnel-prone).
    kernels : {"fused", "graph"}
        Compute the observation likelihood and the HMM forward algorithm with the
        fused numba kernels of :mod:`gimbal.model.kernels` (default; value and gradient in
        one pass, about 2x faster per gradient) or as plain PyTensor graphs (the
        reference implementation; needed by the JAX backend).
    root_dynamics : {"centered", "noncentered"}
        Sample the root keypoint's positions directly (default) or as a start
        point plus standard-normal steps of its random walk (non-centered; the
        positions stay available as the deterministic ``x``). Non-centering helps
        where the prior dominates a frame; here the cameras do, so it is an
        ablation row rather than the default.
    hmm_algorithm : {"sequential", "parallel"}
        With ``kernels="graph"``: the forward algorithm one frame after another
        (default), or the same sum as a tree of log-space matrix products of depth
        ``ceil(log2 T)`` (:func:`gimbal.model.distributions.hmm_parallel_logp`), which
        suits a GPU. Equal to rounding error.
    outlier_model : {"uniform", "gaussian", "student_t"}
        With ``use_mixture``: outlier detections as a second class, uniform over the
        image (the seed's model) or a wide Gaussian around the projection (default, the
        original GIMBAL's; sd 1/8 of the image diagonal), or no classes and a heavy-tailed
        bivariate Student-t likelihood (``kernels="graph"`` only; no ``logodds_inlier``).
        The mixture's posterior over a keypoint has a shoulder where a detection lies in
        the inlier/outlier transition zone (about 3 to 10 noise sd away); the Student-t
        turns that into one smooth tail (an ablation row).
    observation : {"shared", "camera_keypoint"}
        One pixel noise for all detections and an inlier log-odds per keypoint (the seed's
        model), or both per (camera, keypoint) (default): the log-odds pooled towards the
        keypoint's, the noise a camera factor times a keypoint factor
        (:mod:`gimbal.model.observation`). The defaults won on a simulated real detector
        (``python -m benchmarks observation``); ``observation="shared", outlier_model="uniform"``
        is the seed's model.
    confidence : bool, optional
        Use the detector's score (the dataset's ``confidence``) as a covariate of the inlier
        log-odds, with a learned slope ``confidence_slope``. The default (None) uses the scores
        wherever the dataset has them and the model has the two-class mixture: on the real SLEAP +
        Anipose mouse they decide, detection by detection, what the per-pair outlier rates
        otherwise decide for all frames at once (chains split between "inliers with a large noise"
        and "outliers" without them; see the README). ``False`` leaves them out (the seed's model).
    whitened_tracks : {"none", "still", "all"}
        The coordinates the sampler moves the positions in; the model's density is the same (a linear map with a
        constant Jacobian; the trace holds ``x``). ``"still"``: the tracks of keypoints whose step sd is below their
        triangulation sd (:func:`gimbal.model.whitening.walk_dominated`) are sampled whitened under the random walk
        and the cameras' information (:mod:`gimbal.model.whitening`); ``"all"``: every track. On the real SLEAP +
        Anipose mouse (every keypoint still) ``"still"`` takes 63 instead of about 500 gradients per draw, but its
        chains ended in several regions of the observation parameters in 4 of 5 seeds (2 of 3 unwhitened runs had one
        region): an option, not the default. With a trained prior on 100 frames of the simulated moving rodent and
        the Student-t steps' earlier 3 degrees of freedom, ``"all"`` converged where the unwhitened chains sometimes
        did not; with the default ``steps_dof`` (10) the unwhitened fits converged in those seeds (README: whitened
        tracks with a trained prior). Needs free positions tied by the random walk.
    prior : PosePrior or path, optional
        A trained pose prior (:func:`gimbal.model.prior.fit_prior`, ``gimbal prior fit``, or the original
        GIMBAL's trained-parameter ``.npz``), matched to the dataset's skeleton by keypoint name. Its pose
        states (in the body frame: each frame's pose is rotated about the vertical so that its heading points
        along the prior's reference axis), their transition counts and first-frame probabilities, bone lengths,
        bone spreads and step sizes replace the ones estimated from the data; ``n_states`` is the prior's.
        With ``use_directional_hmm=False`` its states are a mixture on every frame independently (for sparse
        labelled frames, with ``temporal=False``).
    start : {"tracks", "smoothed"}
        Where the chains start: the robust reconstruction's tracks (default), or those tracks made consistent with
        the temporal prior and the bone lengths (:func:`gimbal.model.initialization.smoothed_start`; with the
        temporal prior and free positions only). On the real SLEAP + Anipose mouse the tracks' frame-to-frame jitter
        puts the start 2.9 million log-density units below the typical set, the smoothed start about 3,600; in one run
        each (4 x (1000 + 1000), seed 1) neither converged: the chains split between global modes either way.
    init : Initialization, optional
        Precomputed :func:`gimbal.model.initialization.initialize_from_observations_dlt` result.
    validate : bool
        Raise :class:`gimbal.model.initialization.InitializationError` if logp or its
        gradient is not finite at the initial point. Either way, where some keypoint goes undetected by every camera
        in some frame, start coordinates with an exactly-zero gradient are moved off it
        (:func:`gimbal.model.initialization.off_exact_zeros`), so that nutpie can start.
    seed : int
        Seed for the pose-state clustering.

    Returns
    -------
    pymc.Model
        With ``model.gimbal_config`` (a :class:`ModelConfig`), ``model.gimbal_init``
        (the :class:`~gimbal.model.initialization.Initialization`), ``model.gimbal_terms``
        (intermediate tensors such as the HMM ``emission``), ``model.gimbal_step_relative`` (the keypoints whose steps
        are relative to their parent) and ``model.gimbal_skeleton`` attached.
    """
    skeleton = skeleton_of(dataset)
    if prior is not None:
        prior = (load_prior(prior) if not isinstance(prior, PosePrior) else prior).for_skeleton(skeleton)
        if n_states is not None and n_states != prior.n_states:
            raise ValueError(f"n_states={n_states} but the prior has {prior.n_states} pose states; leave n_states unset.")
        n_states = prior.n_states
    elif n_states is None:
        n_states = int(dataset.attrs.get("n_states", 1))
    config = ModelConfig(
        use_mixture=bool(use_mixture),
        use_directional_hmm=bool(use_directional_hmm),
        n_states=int(n_states) if use_directional_hmm or prior is not None else 1,
        directions=directions,
        state_params=state_params,
        freeze_latents=freeze_latents,
        temporal=bool(temporal),
        steps=steps,
        steps_dof=steps_dof,
        step_frame=step_frame,
        offsets=offsets,
        camera_noise=camera_noise,
        scales=scales,
        kernels=kernels,
        root_dynamics=root_dynamics,
        hmm_algorithm=hmm_algorithm,
        outlier_model=outlier_model,
        observation=observation,
        confidence=_use_scores(confidence, dataset, use_mixture, outlier_model),
        whitened_tracks=whitened_tracks,
        heading=prior is not None,
        prior=None if prior is None else (prior.source or "given"),
        start=start,
    )
    if prior is not None:
        if init is None or init.pose_states.heading_keypoints is None:
            init = with_prior(init or initialize_from_observations_dlt(dataset, n_states=1, seed=seed,
                                                                        step_dof=config.step_dof), prior, skeleton)
    elif init is None or init.pose_states.n_states != config.n_states:
        init = initialize_from_observations_dlt(dataset, n_states=config.n_states, seed=seed, step_dof=config.step_dof)
    if config.start == "smoothed" and config.temporal and config.freeze_latents is None and init.start != "smoothed":
        init = smoothed_start(init, dataset)
    exact = exact_reprojection_text(init.triangulation_residual_px)
    if exact and config.freeze_latents is None:
        warnings.warn(f"{exact} {EXACT_FIX}", UserWarning, stacklevel=2)
    offset = detection_offsets(dataset, init, config)
    noise_floor = camera_noise_floor(dataset, init, config, offset)
    whitening = None
    if config.whitened_tracks != "none" and init.positions.shape[0] > 1:
        whitening = _track_whitening(dataset, init, every=config.whitened_tracks == "all")
    terms = {}
    relative = np.zeros(len(skeleton.parents), bool)
    with pm.Model(coords=_coords(dataset, config.n_states)) as model:
        x = latent_positions(dataset, init, config, whitening)
        if config.freeze_latents is None:
            rho, sigma = bone_parameters(init, config)
            mean, kappa = pose_state_parameters(init, config)
            emission = terms["emission"] = pose_emissions(x, skeleton, rho, sigma, mean, kappa, init, config)
            pose_prior(emission, init, config)
            if config.temporal:
                relative = temporal_prior(x, init, config, skeleton.parents)
        log_obs = observation_loglik(x, dataset, init, config, offset, noise_floor)
        log_obs_t = pm.Deterministic("log_obs_t", log_obs, dims="frame")
        pm.Potential("y_obs", log_obs_t.sum())
    if validate or _has_unseen_positions(dataset):  # the start is moved even unvalidated (diagnostic groups, windows)
        from ..diagnostics.checks import compile_logp_and_grad

        checker = compile_logp_and_grad(model, init_point_for(model, init))
        init = off_exact_zeros(model, init, checker)  # e.g. the middle frame of a gap no camera saw
        if validate:
            check_initial_point(model, init_point_for(model, init), checker)
    model.gimbal_config = config
    model.gimbal_init = init
    model.gimbal_terms = terms  # named intermediate tensors (e.g. the (T, S) HMM emissions) for checks
    model.gimbal_step_relative = relative  # (K,) the keypoints whose steps are taken relative to their parent
    model.gimbal_offsets = offset  # (C, K, 2) pixels taken off each pair's detections
    model.gimbal_camera_noise = noise_floor  # (C,) the floor under the cameras' log noise factors, or None
    model.gimbal_skeleton = skeleton
    return model
