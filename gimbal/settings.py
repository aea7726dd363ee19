"""Sampler and data settings: declared and validated once, for ``gimbal fit``, ``diag run``, ``evaluate`` and the benchmarks.

:class:`SamplerSettings` validates itself (Python callers get the same messages as
the command line); :func:`add_sampler_arguments` and :func:`add_data_arguments` add
the matching command-line options, whose argparse types reject bad values before
anything runs (exit status 2). Every message has one form: ``--option must be ...,
got VALUE.``
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass

from .errors import UsageError

__all__ = ["SamplerSettings", "add_sampler_arguments", "add_data_arguments", "positive_int", "nonnegative_int",
           "probability", "positive_number", "tree_depth", "SAMPLERS", "BACKENDS", "ADAPTATIONS", "MAX_TREE_DEPTH",
           "STARTS", "WHITENED_TRACKS", "STEPS", "STEP_DOF", "STEP_FRAMES", "OFFSETS", "add_exclude_argument",
           "add_prior_argument", "excluded_pairs", "MIN_STAGE_TUNE"]

SAMPLERS = ("nutpie", "pymc")
BACKENDS = ("numba", "jax")
ADAPTATIONS = ("diag", "low_rank")
# the pooled warm-up's stages (gimbal.model.pooling) each get at least this many warm-up draws: a run pools with tune
# >= 2x this
MIN_STAGE_TUNE = 300
# where the chains start (gimbal.model.build.build_model's ``start``); the first is the default
STARTS = ("tracks", "smoothed")
# which tracks the sampler moves in whitened coordinates (build_model's ``whitened_tracks``); the first is the default
WHITENED_TRACKS = ("none", "still", "all")
# the distribution of a keypoint's frame-to-frame 3D step (build_model's ``steps``); the first is the default
STEPS = ("student_t", "gaussian")
# the Student-t steps' degrees of freedom (build_model's ``steps_dof``, ``--steps-dof``): the default
STEP_DOF = 10.0
# the frame a keypoint's step is taken in (build_model's ``step_frame``): per keypoint the one in which its steps are
# smaller, the world, or its parent's; the first is the default
STEP_FRAMES = ("auto", "world", "parent")
# a detector's systematic offset per (camera, keypoint) (build_model's ``offsets``): estimated from the start's residuals
# and taken off the detections, or none; the first is the default
OFFSETS = ("estimated", "none")
# each camera's noise factor in the per-(camera, keypoint) observation model (build_model's ``camera_noise``): sampled
# but kept above its estimate from its residuals against the other cameras' point, or sampled freely; the first is
# the default
CAMERA_NOISE = ("floored", "sampled")
MAX_TREE_DEPTH = 20


def _message(option: str, rule: str, value) -> str:
    return f"{option} must be {rule}, got {value!r}."


def _as_int(text, option, rule):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(_message(option, rule, text)) from None
    return value


def positive_int(text) -> int:
    """argparse type: an integer >= 1."""
    value = _as_int(text, "the value", "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(_message("the value", "an integer >= 1", text))
    return value


def nonnegative_int(text) -> int:
    """argparse type: an integer >= 0."""
    value = _as_int(text, "the value", "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(_message("the value", "an integer >= 0", text))
    return value


def probability(text) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(_message("the value", "a number between 0 and 1 (exclusive)", text)) from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(_message("the value", "a number between 0 and 1 (exclusive)", text))
    return value


def positive_number(text) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(_message("the value", "a number > 0", text)) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(_message("the value", "a number > 0", text))
    return value


def tree_depth(text) -> int:
    """argparse type: a NUTS tree depth from 1 to :data:`MAX_TREE_DEPTH`."""
    value = _as_int(text, "the value", f"an integer from 1 to {MAX_TREE_DEPTH}")
    if not 1 <= value <= MAX_TREE_DEPTH:
        raise argparse.ArgumentTypeError(_message("the value", f"an integer from 1 to {MAX_TREE_DEPTH}", text))
    return value


@dataclass(frozen=True)
class SamplerSettings:
    """How NUTS runs. Invalid values raise :class:`gimbal.errors.UsageError` naming the option."""

    chains: int = 2
    tune: int = 300
    draws: int = 100
    sampler: str = "nutpie"
    target_accept: float = 0.8
    maxdepth: int = 10
    adaptation: str = "diag"
    backend: str = "numba"
    seed: int = 123
    pooled_warmup: bool = True

    def __post_init__(self):
        checks = (
            ("--chains", self.chains, "an integer >= 1", isinstance(self.chains, int) and self.chains >= 1),
            ("--tune", self.tune, "an integer >= 0", isinstance(self.tune, int) and self.tune >= 0),
            ("--draws", self.draws, "an integer >= 1", isinstance(self.draws, int) and self.draws >= 1),
            ("--target-accept", self.target_accept, "a number between 0 and 1 (exclusive)",
             isinstance(self.target_accept, (int, float)) and 0 < self.target_accept < 1),
            ("--maxdepth", self.maxdepth, f"an integer from 1 to {MAX_TREE_DEPTH}",
             isinstance(self.maxdepth, int) and 1 <= self.maxdepth <= MAX_TREE_DEPTH),
            ("--sampler", self.sampler, f"one of {SAMPLERS}", self.sampler in SAMPLERS),
            ("--adaptation", self.adaptation, f"one of {ADAPTATIONS}", self.adaptation in ADAPTATIONS),
            ("--backend", self.backend, f"one of {BACKENDS}", self.backend in BACKENDS),
            ("--seed", self.seed, "an integer", isinstance(self.seed, int)),
            ("pooled_warmup", self.pooled_warmup, "True or False", isinstance(self.pooled_warmup, bool)),
        )
        for option, value, rule, ok in checks:
            if not ok:
                raise UsageError(_message(option, rule, value))
        if self.backend == "jax" and self.sampler != "nutpie":
            raise UsageError("--backend jax compiles the model for nutpie: use it with --sampler nutpie.")

    def as_dict(self) -> dict:
        return asdict(self)

    def sample_kwargs(self) -> dict:
        """The keyword arguments of :func:`gimbal.model.fitting.sample_model`."""
        return self.as_dict()

    @classmethod
    def from_args(cls, args, **defaults) -> "SamplerSettings":
        """From parsed arguments; ``defaults`` fill options that were left out (None)."""
        values = {}
        for name in cls.__dataclass_fields__:
            v = getattr(args, name, None)
            if v is None:
                v = defaults.get(name, cls.__dataclass_fields__[name].default)
            values[name] = v
        return cls(**values)


def add_sampler_arguments(parser: argparse.ArgumentParser, *, chains=2, tune=300, draws=100, seed=123,
                          profile_decides: bool | str = False, adaptation: bool = True,
                          pooling: bool = True) -> argparse._ArgumentGroup:
    """NUTS options. With ``profile_decides`` (True, or who decides, e.g. "the benchmark's") the chains/tune/draws
    defaults are None and filled later (by the profile);
    ``adaptation=False`` leaves out ``--adaptation`` for commands that always use nutpie's default, ``pooling=False``
    ``--no-pooled-warmup`` for commands that always warm up in one stage."""
    g = parser.add_argument_group("sampler")
    who = profile_decides if isinstance(profile_decides, str) else "the profile's"
    show = (lambda d: who) if profile_decides else (lambda d: d)
    g.add_argument("--chains", type=positive_int, default=None if profile_decides else chains,
                   help=f"chains (default: {show(chains)})")
    g.add_argument("--tune", type=nonnegative_int, default=None if profile_decides else tune,
                   help=f"warm-up draws per chain (default: {show(tune)})")
    g.add_argument("--draws", type=positive_int, default=None if profile_decides else draws,
                   help=f"kept draws per chain (default: {show(draws)})")
    g.add_argument("--sampler", choices=SAMPLERS, default="nutpie")
    g.add_argument("--target-accept", type=probability, default=0.8, help="NUTS step-size target (default: 0.8)")
    g.add_argument("--maxdepth", type=tree_depth, default=10,
                   help="largest NUTS tree depth (at most 2^maxdepth - 1 gradients per draw; default 10; 5 caps long "
                        "recordings at 31 per draw)")
    if adaptation:
        g.add_argument("--adaptation", choices=ADAPTATIONS, default="diag", help="nutpie mass matrix (default: diag)")
    g.add_argument("--backend", choices=BACKENDS, default="numba",
                   help="nutpie compilation backend: numba with the fused kernels (default), or jax (plain graph, "
                        "tree-form HMM; `pip install gimbal[jax]`, or a CUDA build such as jax[cuda12] for a GPU)")
    g.add_argument("--seed", type=int, default=seed, help=f"random seed (default: {seed})")
    if pooling:
        g.add_argument("--no-pooled-warmup", dest="pooled_warmup", action="store_false", default=True,
                       help=f"warm up in one stage (default: with nutpie, 2+ chains and tune >= {2 * MIN_STAGE_TUNE}, "
                            "warm-up runs in two stages and the second starts from the chains' best explanation of each "
                            "disputed keypoint)")
    return g


def add_exclude_argument(parser: argparse.ArgumentParser) -> None:
    """``--exclude CAMERA:KEYPOINT[,...]``: detections left out of the dataset (:func:`excluded_pairs` reads it)."""
    parser.add_argument("--exclude", default=None, metavar="CAMERA:KEYPOINT[,...]",
                        help="leave these detections out, e.g. back:Tail_0,back:Tail_2 (pairs that are systematically "
                             "off; gimbal fit names pairs its chains disagree about)")


def add_prior_argument(parser, where: str = "") -> None:
    """``--prior FILE.npz``: a trained pose prior (``gimbal fit`` and ``gimbal diag run`` take the same file);
    ``where`` ends the help with the models it applies to."""
    parser.add_argument(
        "--prior", default=None, metavar="FILE.npz",
        help="a trained pose prior (gimbal prior fit, or the original GIMBAL's trained-parameter .npz): its "
             "body-frame pose states, bone scales and step sizes replace the ones estimated from the data" + where,
    )


def excluded_pairs(text: str | None) -> list[str]:
    """The ``CAMERA:KEYPOINT`` pairs of a comma list (the value of ``--exclude``), blanks dropped."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def add_data_arguments(parser: argparse.ArgumentParser, default: str | None, *, required: bool = False) -> None:
    """``--dataset``, ``--max-T``, ``--max-K`` and ``--overwrite``, with the seed's spellings as aliases.

    The seed's plan names them ``--dataset_name``, ``--max_T``, ``--max_K``, ``--run_id``; both spellings work.
    """
    parser.add_argument("--dataset", "--dataset_name", dest="dataset", default=default, required=required,
                        help="registered name or .nc file" + (f" (default: {default})" if default else ""))
    parser.add_argument("--max-T", "--max_T", dest="max_T", type=positive_int, default=None, help="keep the first T frames")
    parser.add_argument("--max-K", "--max_K", dest="max_K", type=positive_int, default=None,
                        help="keep the first K keypoints")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
