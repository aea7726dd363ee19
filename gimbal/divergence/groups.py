"""The seed's diagnostic groups 1-8 for the GIMBAL model: one table, one orchestrator.

Each notebook calls :func:`run_group`; every step's result is written to the
results JSON as soon as it exists, so a crash still leaves valid JSON (status
``"failed"``, the failing step, its error and traceback) and a report.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..diagnostics import chance, checks, convergence, io, localization, multimodality, plots, rules, sampling
from ..settings import excluded_pairs
from . import report, schema
from .results import SCHEMA_VERSION, GroupError, GroupResult, Header, StepRecord, excluded_of
from . import rules as study_rules
from .paths import DEFAULT_ROOT, DiagPaths, archive_legacy, make_paths

__all__ = ["GroupSpec", "GROUPS", "PROFILES", "PRIOR_GROUPS", "Step", "STEPS", "run_group", "group_desc",
           "resolve_settings", "repeated_temporal_groups", "uses_prior", "check_prior", "GroupFailed"]


@dataclass(frozen=True)
class GroupSpec:
    """One diagnostic group of the seed."""

    id: str
    desc: str
    title: str
    purpose: str
    model: dict = field(default_factory=dict)
    samples: bool = True
    T: int = 80  # full-profile default max_T
    quick_T: int = 20
    extra: tuple[str, ...] = ()
    reference: str | None = None  # group whose sampling summary the decision rule compares against
    contrast_of: str | None = None  # a contrast run: the group whose default parameterization it is set against
    notebook: str | None = None  # the notebook file, when not group_<id>_<desc>.ipynb (8a-8e share one)

    @property
    def notebook_name(self) -> str:
        return self.notebook or f"group_{self.id}_{self.desc}.ipynb"


# every group runs the seed's model, whose observation model (one noise, per-keypoint outlier rates, uniform outliers)
# and Gaussian random-walk steps are not the package's defaults; the speed benchmarks that track the seed's model over
# time use it too
SEED_MODEL = {"observation": "shared", "outlier_model": "uniform", "confidence": False, "steps": "gaussian",
              "step_frame": "world", "offsets": "none"}
SEED = dict(SEED_MODEL)
FULL = dict(SEED, use_mixture=True, use_directional_hmm=True)
# the earlier port's parameterization: per-frame directions as free variables, learned noise scales and pose states
EARLIER_PORT = dict(FULL, directions="explicit", scales="learned", state_params="learned", n_states=2)
TEMPORAL_NOTEBOOK = "group_8_temporal_scaling.ipynb"
GROUPS: dict[str, GroupSpec] = {
    g.id: g
    for g in [
        GroupSpec("1", "build_only_sanity", "Build-only sanity",
                  "Build the model in the failing (full) configuration and evaluate every log-density term at the "
                  "initial point.", FULL, samples=False),
        GroupSpec("2", "gradient_sanity", "Gradient sanity",
                  "Compile logp and its PyTensor autodiff gradient; norms, NaN/inf counts, top components, a "
                  "finite-difference check and three perturbed points.", FULL, samples=False, extra=("finite_difference", "perturbation")),
        GroupSpec("3", "sampling_baseline_minimal", "Baseline sampling, smallest model",
                  "Gaussian likelihood, no HMM: does the core kinematics/likelihood already diverge?",
                  dict(SEED, use_mixture=False, use_directional_hmm=False)),
        GroupSpec("4", "sampling_mixture_only", "Mixture only",
                  "Inlier/outlier mixture, no HMM, plus checks of the mixture's pieces.",
                  dict(SEED, use_mixture=True, use_directional_hmm=False), extra=("mixture_checks",), reference="3"),
        GroupSpec("5", "sampling_hmm_only", "Directional HMM only",
                  "Directional HMM, Gaussian likelihood, plus a T=5, K=2 micro check of the HMM log density and gradient.",
                  dict(SEED, use_mixture=False, use_directional_hmm=True), extra=("hmm_micro_gradient",), reference="3"),
        GroupSpec("6", "sampling_full_truncated", "Full model, truncated", "Mixture and HMM, truncated to T=80.", FULL),
        GroupSpec("6c", "contrast_earlier_port", "Contrast: the earlier port's parameterization",
                  "Group 6's data and model in the earlier port's parameterization (explicit per-frame bone "
                  "directions, learned noise scales, learned pose states): a run that diverges, so that the report "
                  "shows divergences localized next to the default parameterization (group 6) that removes them.",
                  EARLIER_PORT, contrast_of="6"),
        GroupSpec("7", "likelihood_only_freeze_latents", "Likelihood only, latents frozen",
                  "3D positions fixed (ground truth when known, else the initialisation); only observation and "
                  "mixture parameters are sampled.", dict(SEED, use_mixture=True, use_directional_hmm=False, freeze_latents="truth")),
        GroupSpec("8a", "temporal_T80", "Temporal scaling, T=80", "Full model at T=80.", FULL, T=80, quick_T=20, notebook=TEMPORAL_NOTEBOOK),
        GroupSpec("8b", "temporal_T200", "Temporal scaling, T=200", "Full model at T=200.", FULL, T=200, quick_T=30, notebook=TEMPORAL_NOTEBOOK),
        GroupSpec("8c", "temporal_T500", "Temporal scaling, T=500", "Full model at T=500.", FULL, T=500, quick_T=40, notebook=TEMPORAL_NOTEBOOK),
        GroupSpec("8d", "temporal_T1000", "Temporal scaling, T=1000", "Full model at T=1000.", FULL, T=1000, quick_T=50, notebook=TEMPORAL_NOTEBOOK),
        GroupSpec("8e", "temporal_T1800", "Temporal scaling, T=1800", "Full model at T=1800.", FULL, T=1800, quick_T=60, notebook=TEMPORAL_NOTEBOOK),
    ]
}


def uses_prior(spec: GroupSpec) -> bool:
    """Whether a trained pose prior (``--prior``) enters this group's model: those with pose states summed out by the
    HMM. The groups without the HMM stay the seed's ablations, and the earlier port's explicit per-frame directions
    (6c) cannot take body-frame states."""
    return bool(spec.model.get("use_directional_hmm")) and spec.model.get("directions", "marginal") == "marginal"


PRIOR_GROUPS = tuple(g for g, spec in GROUPS.items() if uses_prior(spec))

# sampling settings per profile: "full" is the seed's; "long" matches the sampling benchmarks
PROFILES = {
    "quick": dict(chains=2, tune=150, draws=100),
    "full": dict(chains=2, tune=300, draws=100),
    "long": dict(chains=4, tune=1000, draws=1000),
}
SEED_MAX_K = 8
DATASET_ARTIFACT = "dataset.nc"  # each group's (truncated) input, beside its trace: what the book's data page shows
SELECTED_VARS = ["bone_length", "obs_sigma", "logodds_inlier", "transition", "state_kappa"]


class GroupFailed(RuntimeError):
    """Raised after a group recorded its failure, so papermill marks the notebook as failed."""


def group_desc(group: str) -> str:
    spec = _spec(group)
    return f"group_{spec.id}_{spec.desc}"


def _spec(group) -> GroupSpec:
    key = str(group).strip().lower()
    if key not in GROUPS:
        raise ValueError(f"unknown group {group!r}; choose from {', '.join(GROUPS)}.")
    return GROUPS[key]


def resolve_settings(group, profile="quick", max_T=None, max_K=None, chains=None, tune=None, draws=None) -> dict:
    """Effective T/K/sampling settings: explicit values win, then the profile's defaults."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}.")
    spec = _spec(group)
    base = PROFILES[profile]
    return {
        "max_T": int(max_T) if max_T else (spec.quick_T if profile == "quick" else spec.T),
        "max_K": int(max_K) if max_K else None,
        "chains": int(chains or base["chains"]),
        "tune": int(base["tune"] if tune is None else tune),
        "draws": int(draws or base["draws"]),
    }


def repeated_temporal_groups(groups, profile: str, n_frames: int) -> dict[str, str]:
    """Temporal groups (8a-8e) that a recording of ``n_frames`` frames cuts to a T an earlier one already runs.

    Returns ``{group: the earlier group}``: run, they would repeat that group's run under another title.
    """
    first, out = {}, {}
    for g in groups:
        if g.startswith("8"):
            T = min(resolve_settings(g, profile)["max_T"], int(n_frames))
            if T in first:
                out[g] = first[T]
            else:
                first[T] = g
    return out


@dataclass
class _Context:
    """One group's run as it proceeds: its settings, what each step produced, and the typed result it writes."""

    spec: GroupSpec
    options: dict  # run_group's data and sampler arguments, with the profile's settings resolved
    paths: DiagPaths
    result: GroupResult
    ds: object = None
    model: object = None
    point: dict | None = None
    fit: object = None
    selected: list = field(default_factory=list)
    conv: dict = field(default_factory=dict)
    plot_paths: dict = field(default_factory=dict)
    captions: dict = field(default_factory=dict)

    def flush(self):
        io.write_json(self.paths.results_run, self.result.to_json())


@dataclass(frozen=True)
class Step:
    """A named step of a group's run; ``when`` says whether it applies (a build-only group does not sample)."""

    name: str
    run: Callable[[_Context], None]
    when: Callable[[_Context], bool] = lambda ctx: True


def _load_reference(root, group, run_id: str, header: dict) -> dict | None:
    """Another group's sampling results (group 3 for groups 4 and 5) from the same run, data, T and sampler.

    Only a like-for-like run is a reference: the same run id, dataset (and detections left out), T, K, seed and
    sampler settings.
    """
    path = make_paths(group_desc(group), run_id, root).results_run
    if not path.exists():
        return None
    data = io.read_json(path)
    h = data.get("header", {})
    same = all(h.get(k) == header.get(k) for k in ("dataset", "T", "K", "seed", "sampling_settings"))
    same = same and excluded_of(h) == excluded_of(header)
    return data.get("sampling") if same and data.get("status") == "ok" else None


def _kept_keypoints(ds, max_K=None) -> int:
    """How many keypoints a group keeps: ``max_K``, or the seed's 8 (the dataset's K when smaller)."""
    return max_K or min(SEED_MAX_K, ds.sizes["keypoint"])


def check_prior(path, dataset_name, max_K=None, exclude=()):
    """The prior file matched to the skeleton the groups run on (the first :func:`_kept_keypoints`); raises
    :class:`gimbal.model.prior.PriorFileError`, naming the fix, where it cannot serve."""
    from ..datasets import load_dataset, skeleton_of, truncate
    from ..model.prior import PriorFileError, load_prior

    prior = load_prior(path)
    ds = load_dataset(dataset_name, exclude=exclude)
    kept = _kept_keypoints(ds, max_K)
    try:
        return prior.for_skeleton(skeleton_of(truncate(ds, max_T=1, max_K=kept)))
    except PriorFileError as exc:
        if kept < ds.sizes["keypoint"]:
            raise PriorFileError(f"{exc} The groups keep the first {kept} of the dataset's {ds.sizes['keypoint']} "
                                 "keypoints; --max-K keeps more.") from exc
        raise


def _mixture_checks(dataset, model, init) -> dict:
    """Group 4's extra checks: uniform density, normal-logp spread, inlier probability, masked observations."""
    from ..model.cameras import project
    from ..model.build import build_model

    area = dataset["image_size"].values.prod(axis=-1)
    uniform_logp = (-np.log(area)).tolist()
    x0 = init.positions
    resid2 = np.sum((project(x0, dataset["camera_matrix"].values) - dataset["observations"].values) ** 2, -1)
    omega = float(init.values["obs_sigma"])
    normal = (-0.5 * resid2 / omega**2 - 2 * np.log(omega) - np.log(2 * np.pi))
    normal = normal[np.isfinite(normal)]
    p_in = 1 / (1 + np.exp(-np.asarray(init.values["logodds_inlier"])))
    # a frame whose detections are all missing must contribute exactly 0, not NaN or -inf
    holed = dataset.copy(deep=True)
    holed["observations"].values[0] = np.nan
    holed_model = build_model(holed, **SEED, use_mixture=True, use_directional_hmm=False, init=init, validate=False)
    log_obs_t = checks.evaluate_at(holed_model, holed_model["log_obs_t"])
    masked_zero = bool(log_obs_t[0] == 0.0 and np.isfinite(log_obs_t).all())
    passed = bool(np.all(np.isfinite(uniform_logp)) and masked_zero and normal.size > 0)
    return {
        "passed": passed,
        "summary": f"uniform logp {min(uniform_logp):.2f}..{max(uniform_logp):.2f}; fully-missing frame contributes "
                   f"{float(log_obs_t[0])!r} (must be exactly 0); initial inlier probability {p_in.min():.2f}..{p_in.max():.2f}",
        "uniform_logp_per_camera": uniform_logp,
        "normal_logp_per_observation": {"min": float(normal.min()), "median": float(np.median(normal)), "max": float(normal.max())},
        "inlier_probability_init": {"min": float(p_in.min()), "max": float(p_in.max())},
        "missing_frame_contribution": float(log_obs_t[0]),
        "missing_contributes_exactly_zero": masked_zero,
    }


def _hmm_micro_check(dataset_name, seed, n_frames: int = 5) -> dict:
    """Group 5's micro check on a tiny model (T=5, or ``n_frames`` where the recording is shorter; K=2, S=2, learned
    states).

    The model's HMM term is compared with brute-force enumeration of all 2^T
    state paths over the model's own emission matrix, and the gradient of the
    whole tiny model with central finite differences on every component.
    """
    import itertools

    from scipy.special import logsumexp

    from ..datasets import load_dataset
    from ..model.build import build_model

    tiny = load_dataset(dataset_name, max_T=min(5, n_frames), max_K=2)
    model = build_model(tiny, use_mixture=False, use_directional_hmm=True, n_states=2, state_params="learned",
                        seed=seed, validate=False)
    E = checks.evaluate_at(model, model.gimbal_terms["emission"])
    log_A = np.log(checks.evaluate_at(model, model["transition"]))
    S = E.shape[1]
    paths = itertools.product(range(S), repeat=E.shape[0])
    brute = logsumexp([-np.log(S) + E[0, p[0]] + sum(log_A[p[t - 1], p[t]] + E[t, p[t]] for t in range(1, len(p))) for p in paths])
    ours = float(checks.evaluate_at(model, model["pose_prior"]))
    fd = checks.finite_difference_check(checks.compile_logp_and_grad(model), max_components=None)
    passed = bool(abs(ours - brute) < 1e-8 * max(1.0, abs(brute)) and fd["passed"])
    return {
        "passed": passed,
        "summary": f"HMM logp {ours:.6f} vs brute force {brute:.6f}; finite differences agree on "
                   f"{fd['n_checked'] - fd['n_failed']}/{fd['n_checked']} components",
        "hmm_logp": ours,
        "brute_force_logp": float(brute),
        "finite_difference": fd,
    }


def _sampling_plots(ctx: _Context) -> dict:
    d, trace, summary = ctx.paths.plots_run, ctx.fit.trace, ctx.result.sampling
    selected = ctx.selected or list(trace["posterior"].data_vars)[:3]
    maxdepth = ctx.options["maxdepth"]
    return {
        "trace_selected": (plots.plot_trace_selected, (trace, selected, d / "trace_selected.png"),
                           "Trace and marginal density of selected parameters per chain."),
        "energy": (plots.plot_energy, (trace, d / "energy.png", summary.get("ebfmi_per_chain")),
                   "Energy marginal vs transition; E-BFMI < 0.3 flags poor exploration."),
        "step_size_treedepth": (plots.plot_step_size_treedepth, (trace, d / "step_size_treedepth.png", maxdepth),
                                "Step-size adaptation and tree depth; many max-depth draws mean inefficiency."),
        "divergence_pairs": (plots.plot_divergence_pairs, (trace, selected, d / "divergence_pairs.png"),
                             "Pairs of selected parameters with divergent draws highlighted."),
        "divergence_localization": (plots.plot_localization, (ctx.result.localization, d / "divergence_localization.png"),
                                    "Where divergent draws are displaced: per frame, per keypoint, per variable."),
    }


def _draw_plots(ctx: _Context, jobs: dict):
    failed = {}
    for kind, (fn, args, caption) in jobs.items():
        try:
            ctx.plot_paths[kind] = fn(*args)
            ctx.captions[kind] = caption
        except Exception as exc:  # a plot that cannot be drawn is recorded, never fatal
            failed[kind] = f"{type(exc).__name__}: {exc}"
    plots.write_manifest(ctx.paths.plots_run, ctx.plot_paths, failed, ctx.captions)
    ctx.result.plots = {"produced": {k: io.to_jsonable(p) for k, p in ctx.plot_paths.items()}, "failed": failed}


# ---- the steps, in order ---------------------------------------------------------------------------------------

def _load_data(ctx: _Context):
    from ..datasets import load_dataset, save_dataset, truncate
    from ..io.calibration_check import flagged_at_import

    o, h, spec = ctx.options, ctx.result.header, ctx.spec
    ds = load_dataset(o["dataset_name"], exclude=o["exclude"])
    want = o["max_T"]
    if not o["explicit_T"] and want and want > ds.sizes["frame"]:
        want = ds.sizes["frame"]  # the profile's T is longer than the recording: use all of it (the title says so)
    ds = truncate(ds, max_T=want, max_K=_kept_keypoints(ds, o["max_K"]))
    h.T, h.K, h.C = ds.sizes["frame"], ds.sizes["keypoint"], ds.sizes["camera"]
    h.parameters["calibration_flagged"] = flagged_at_import(ds)
    if ds.sizes["frame"] != spec.T:  # pages show the T that really ran, and the seed's beside it
        h.title = f"{spec.title.split(', T=')[0]}, T={ds.sizes['frame']} (the seed's T={spec.T}, {h.profile} profile)"
        h.purpose = f"{spec.purpose} Run here at T={ds.sizes['frame']}."
    save_dataset(ds, ctx.paths.debug_dir / DATASET_ARTIFACT, overwrite=True)  # the book reads this, never the source
    ctx.ds = ds


def _build_model(ctx: _Context):
    from ..model.build import build_model, sparse_frame_options
    from ..model.initialization import init_point_for

    ds, h = ctx.ds, ctx.result.header
    options = dict(ctx.spec.model)
    if options.get("freeze_latents") == "truth" and "positions_true" not in ds:
        options["freeze_latents"] = "init"  # real data has no ground truth: freeze at the initialisation
        h.frozen_at = "the initialization (the dataset has no ground truth)"
    elif options.get("freeze_latents") == "truth":
        known = np.isfinite(ds["positions_true"].values).all(-1)
        h.frozen_at = ("the ground truth" if known.all() else
                       f"the ground truth where known ({int(known.sum())} of {known.size} keypoint "
                       "positions), the initialization where motion capture lost a marker")
    sparse = sparse_frame_options(ds)
    if sparse:  # as gimbal fit runs them: no random walk between labelled frames, no state dynamics
        options.update(sparse)
        h.purpose += (" The dataset's frames are sparse labelled frames, not a recording, so this group runs as "
                      "`gimbal fit` does on them: no random walk between frames and no HMM (pose states, where "
                      "the model has them, on each frame independently).")
    if options.get("use_directional_hmm"):
        # a one-state dataset would reduce the HMM to a single vMF: exercise at least two states
        options.setdefault("n_states", max(2, int(ds.attrs.get("n_states", 1))))
    if h.parameters["prior_used"]:
        options["prior"] = ctx.options["prior"]  # build_model matches it to the skeleton; the config names its source
        options.pop("n_states", None)  # the prior's states
    options.update(ctx.options["backend_options"])
    ctx.model = build_model(ds, seed=ctx.options["seed"], validate=False, **options)
    h.config = ctx.model.gimbal_config.as_dict()
    h.parameters["triangulation_residual_px"] = float(ctx.model.gimbal_init.triangulation_residual_px)
    ctx.point = init_point_for(ctx.model, ctx.model.gimbal_init)


def _model_checks(ctx: _Context):
    lp = checks.safe_point_logps(ctx.model, ctx.point)
    ctx.result.model_checks = {"total": lp["total"], "finite": lp["finite"], "nonfinite_terms": lp["nonfinite_terms"],
                               "worst_terms": [{"term": k, "logp": v} for k, v in list(lp["terms"].items())[:10]],
                               "n_terms": len(lp["terms"])}


def _gradient_checks(ctx: _Context):
    spec, point, seed = ctx.spec, ctx.point, ctx.options["seed"]
    checker = checks.compile_logp_and_grad(ctx.model, point)
    out = {"at_initial_point": checks.gradient_report(checker, point)}
    if "finite_difference" in spec.extra:
        out["finite_difference"] = checks.finite_difference_check(checker, point, max_components=300, seed=seed)
    if "perturbation" in spec.extra:
        out["perturbation"] = checks.perturbation_check(checker, point, n_points=3, seed=seed)
    out["component_checks"] = {}
    if "mixture_checks" in spec.extra:
        out["component_checks"]["mixture"] = _mixture_checks(ctx.ds, ctx.model, ctx.model.gimbal_init)
    if "hmm_micro_gradient" in spec.extra:
        out["component_checks"]["hmm_micro_gradient"] = _hmm_micro_check(ctx.options["dataset_name"], seed,
                                                                          ctx.ds.sizes["frame"])
    ctx.result.gradient_checks = out


def _sample(ctx: _Context):
    from ..model.fitting import sample_model, save_trace

    o = ctx.options
    ctx.fit = sample_model(ctx.model, sampler=o["sampler"], chains=o["chains"], tune=o["tune"], draws=o["draws"],
                           seed=o["seed"], progress=o["progress"], target_accept=o["target_accept"],
                           maxdepth=o["maxdepth"], backend=o["backend"],
                           pooled_warmup=False)  # the groups diagnose NUTS on the model as it is: one-stage warm-up
    save_trace(ctx.fit.trace, ctx.paths.debug_dir / "trace.nc", overwrite=True, float32_vars=("x",))


def _summarize(ctx: _Context):
    from ..model.fitting import position_errors

    trace, r = ctx.fit.trace, ctx.result
    ctx.selected = [v for v in SELECTED_VARS if v in trace["posterior"]]
    r.sampling = sampling.sampling_summary(trace, ctx.selected, max_treedepth=ctx.options["maxdepth"],
                                           wall_time_s=ctx.fit.sample_s)
    r.sampling["compile_s"] = ctx.fit.compile_s
    r.multimodality = multimodality.multimodality_check(trace)
    r.localization = localization.divergence_localization(trace)
    r.position_error = position_errors(trace, ctx.ds)


def _plots(ctx: _Context):
    d = ctx.paths.plots_run
    if ctx.spec.samples:
        jobs = _sampling_plots(ctx)
    elif ctx.spec.id == "1":
        worst = {t["term"]: t["logp"] for t in ctx.result.model_checks["worst_terms"]}
        jobs = {"logp_terms": (plots.plot_logp_terms, (worst, d / "logp_terms.png"),
                               "The ten worst log-density terms at the initial point.")}
    else:
        per_var = ctx.result.gradient_checks["at_initial_point"]["per_variable"]
        jobs = {"gradient_by_variable": (plots.plot_gradient_by_variable, (per_var, d / "gradient_by_variable.png"),
                                         "Largest gradient component per variable at the initial point.")}
    _draw_plots(ctx, jobs)


def _rhat_chance(ctx: _Context):
    ctx.result.rhat_chance = chance.rhat_against_chance(ctx.result.sampling, seed=ctx.options["seed"])


def _convergence_localization(ctx: _Context):
    """Per-element R-hat/ESS and patterns of every variable whose max R-hat is over the threshold."""
    ctx.conv = convergence.localize_flagged(ctx.fit.trace, ctx.result.sampling,
                                            rhat_threshold=rules.THRESHOLDS["rhat_max"])
    ctx.result.convergence_localization = {k: v.to_json() for k, v in ctx.conv.items()}


def _chain_regions(ctx: _Context):
    """Chains in separate regions of the global variables, and the detections they disagree about."""
    from ..model.regions import explain_regions

    found = explain_regions(ctx.fit.trace, ctx.ds)
    ctx.result.chain_regions = found.to_json() if found else None


def _heading_check(ctx: _Context):
    """Where the model's body frame is ill-defined (:func:`gimbal.model.prior.posterior_heading_check`), set against
    the frames the chains disagree at and the frame the divergent draws peak at."""
    from ..model.prior import posterior_heading_check

    unconverged = None
    conv = ctx.conv.get("x")
    if conv is not None and conv.n_flagged:
        unconverged = conv.beyond_chance().any([d for d in conv.rhat.dims if d != "frame"]).values
    check = posterior_heading_check(ctx.model, ctx.fit.trace.posterior["x"], unconverged)
    loc = ctx.result.localization or {}
    peak = ((loc.get("profiles") or {}).get("frame") or {}).get("peak") if loc.get("n_divergent") else None
    ctx.result.heading = {**check, "divergence_peak_frame": None if peak is None else int(peak)}


def _has_heading(ctx: _Context) -> bool:
    return ctx.spec.samples and bool(ctx.model.gimbal_config.heading)


def _convergence_plots(ctx: _Context):
    jobs = {f"rhat_map_{name}": (plots.plot_rhat_map, (c, ctx.paths.plots_run / f"rhat_map_{name}.png"),
                                 f"Per-element R-hat of '{name}': where in the model the chains disagree.")
            for name, c in ctx.conv.items() if c.n_flagged and c.rhat.ndim}
    _draw_plots(ctx, jobs)


def _verdict(ctx: _Context):
    r, spec = ctx.result, ctx.spec
    if spec.id == "1":
        r.verdict = rules.rule_build(r.model_checks)
    elif not spec.samples:
        gc = r.gradient_checks
        r.verdict = rules.rule_gradient(gc["at_initial_point"], gc.get("finite_difference"), gc.get("perturbation"))
    else:
        extra_ok = all(c.get("passed", True) for c in r.gradient_checks["component_checks"].values())
        reference = (_load_reference(ctx.paths.root, spec.reference, r.header.run_id, dataclasses.asdict(r.header))
                     if spec.reference else None)
        r.verdict = study_rules.rule_heading(
            study_rules.rule_sampling(spec.id, r.sampling, r.multimodality, reference, extra_ok,
                                      rhat_chance=r.rhat_chance, localization=r.convergence_localization,
                                      divergences=r.localization),
            r.heading)
        if not spec.model.get("freeze_latents"):  # group 7 samples no positions
            r.verdict = study_rules.rule_exact_labels(r.verdict, r.header.parameters.get("triangulation_residual_px"))


def _samples(ctx: _Context) -> bool:
    return ctx.spec.samples


def _rhat_flagged(ctx: _Context) -> bool:
    """A too-high R-hat: is it within what chance gives over that many elements? where, and in which pattern?"""
    return ctx.spec.samples and "rhat" in rules.sampling_problems(ctx.result.sampling, ctx.result.multimodality)


STEPS: tuple[Step, ...] = (
    Step("load_data", _load_data),
    Step("build_model", _build_model),
    Step("model_checks", _model_checks),
    Step("gradient_checks", _gradient_checks),
    Step("sampling", _sample, _samples),
    Step("sampling_summary", _summarize, _samples),
    Step("plots", _plots),
    Step("rhat_chance", _rhat_chance, _rhat_flagged),
    Step("convergence_localization", _convergence_localization, _rhat_flagged),
    Step("chain_regions", _chain_regions, _rhat_flagged),
    Step("convergence_plots", _convergence_plots, _rhat_flagged),
    Step("heading_check", _heading_check, _has_heading),
    Step("verdict", _verdict),
)
"""Every group's run, in order: a step whose ``when`` is false for the group is skipped (and not recorded)."""


def _run_steps(ctx: _Context, steps=STEPS, fail_at: str | None = None):
    """Run the steps in order, recording each (name, status, seconds) and rewriting the results after each one."""
    for step in steps:
        if not step.when(ctx):
            continue
        t0 = time.perf_counter()
        try:
            if fail_at == step.name:
                raise RuntimeError(f"injected failure at step '{step.name}' (fail_at parameter)")
            step.run(ctx)
        except Exception as exc:
            ctx.result.steps.append(StepRecord(step.name, "failed", time.perf_counter() - t0))
            ctx.result.error = GroupError(step.name, type(exc).__name__, str(exc), traceback.format_exc())
            raise
        ctx.result.steps.append(StepRecord(step.name, "ok", time.perf_counter() - t0))
        ctx.flush()


def _finish(ctx: _Context):
    """Validate, write the report, and refresh the 'latest' copies."""
    paths = ctx.paths
    payload = ctx.result.to_json()
    schema.validate_results(payload)
    ctx.flush()
    text = report.render_report(payload, paths.report_run, paths.results_run, ctx.plot_paths, ctx.captions)
    io.save_text(paths.report_run, text)
    # latest copies: results, report (links rewritten for the latest location are identical: same folder)
    io.copy_latest(paths.results_run, paths.results_latest)
    io.save_text(paths.report_latest, text)
    latest_dir = paths.plots_latest
    for p in list(ctx.plot_paths.values()) + [paths.plots_run / "artifacts_manifest.json"]:
        if Path(p).exists():
            io.copy_latest(p, latest_dir / Path(p).name)


def run_group(
    group: str,
    run_id: str | None = None,
    *,
    dataset_name: str = "v0.2.1_L00_minimal",
    max_T: int | None = None,
    max_K: int | None = None,
    exclude=None,
    prior=None,
    seed: int = 123,
    overwrite: bool = False,
    chains: int | None = None,
    tune: int | None = None,
    draws: int | None = None,
    sampler: str = "nutpie",
    target_accept: float = 0.8,
    maxdepth: int = 10,
    backend: str = "numba",
    profile: str = "quick",
    root=DEFAULT_ROOT,
    fail_at: str | None = None,
    progress: bool = False,
) -> GroupResult:
    """Run one diagnostic group end to end and write its artifacts.

    Parameters
    ----------
    group : str
        "1" ... "7", "6c" (the contrast run), "8a" ... "8e".
    run_id : str, optional
        Defaults to an ISO timestamp.
    dataset_name, max_T, max_K, seed
        The data; ``max_T`` defaults to the profile's T for this group, ``max_K``
        to the seed's 8 (or the dataset's K when smaller).
    exclude : str or list of str, optional
        Detections left out, ``"CAMERA:KEYPOINT"`` pairs or one comma list of them
        (:func:`gimbal.datasets.exclude_detections`); the pages name them after the dataset.
    prior : path, optional
        A trained pose prior (``.npz``, :func:`gimbal.model.prior.load_prior`) for the groups whose model has
        pose states (:data:`PRIOR_GROUPS`); the others run as without it. The header records the file.
    overwrite : bool
        Allow replacing an existing run with the same ``run_id``.
    chains, tune, draws, sampler, profile
        Sampling settings (defaults: the profile's).
    target_accept, maxdepth
        NUTS step-size target and largest tree depth (see :func:`gimbal.model.fitting.sample_model`).
    backend : {"numba", "jax"}
        ``"jax"`` builds the plain-graph model with the tree-form HMM and compiles it
        with JAX (on a GPU where a CUDA build of JAX is installed); ``"numba"`` uses the
        fused kernels.
    root : path
        Diagnostics root (default ``tests/diagnostics/v0_2_1_divergence``).
    fail_at : str, optional
        Inject a failure at the named step (one of :data:`STEPS`; for testing the failure path).

    Returns
    -------
    GroupResult
        The typed results (also written to disk, as :meth:`GroupResult.to_json`).

    Raises
    ------
    GroupFailed
        After recording the failure, when any step raised.
    """
    from ..model.fitting import backend_model_options, jax_device

    spec = _spec(group)
    backend_options = backend_model_options(backend)  # checks the name before anything is written
    run_id = io.validate_run_id(run_id or io.default_run_id())
    paths = make_paths(group_desc(spec.id), run_id, root)
    if paths.exists() and not overwrite:
        raise FileExistsError(f"run '{run_id}' of {group_desc(spec.id)} already exists under {paths.root}; pass overwrite=True (--overwrite).")
    paths.create()
    archive_legacy(paths.root)
    settings = resolve_settings(spec.id, profile, max_T, max_K, chains, tune, draws)
    exclude = excluded_pairs(exclude) if isinstance(exclude, str) else [str(p) for p in exclude or ()]
    prior_path = str(Path(prior).resolve()) if prior else None
    header = Header(
        group=spec.id, description=spec.desc, title=spec.title, purpose=spec.purpose, run_id=run_id,
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"), config=dict(spec.model),
        dataset=str(dataset_name), T=None, K=None, C=None, seed=int(seed), profile=profile, samples=spec.samples,
        sampling_settings=({"sampler": sampler, **{k: settings[k] for k in ("chains", "tune", "draws")},
                            "target_accept": float(target_accept), "maxdepth": int(maxdepth), "backend": backend,
                            "device": jax_device() if backend == "jax" else "cpu"} if spec.samples else None),
        # backend also shapes the model (plain graph for JAX) where nothing is sampled
        parameters={"max_T": settings["max_T"], "max_K": settings["max_K"], "exclude": exclude,
                    "prior": prior_path, "prior_used": bool(prior_path) and uses_prior(spec),
                    "overwrite": bool(overwrite), "backend": backend},
        environment=io.collect_environment())
    result = GroupResult(schema_version=SCHEMA_VERSION, header=header, status="running", steps=[], verdict=None,
                         process={"pid": os.getpid(), "host": platform.node()})
    options = dict(settings, dataset_name=dataset_name, exclude=exclude, prior=prior_path, explicit_T=max_T is not None,
                   seed=int(seed), sampler=sampler, target_accept=float(target_accept), maxdepth=int(maxdepth), backend=backend,
                   backend_options=backend_options, progress=progress)
    ctx = _Context(spec, options, paths, result)
    ctx.flush()
    try:
        _run_steps(ctx, STEPS, fail_at)
        result.status = "ok"
        _finish(ctx)
        return result
    except Exception as exc:
        result.error = result.error or GroupError("unknown", type(exc).__name__, str(exc), traceback.format_exc())
        err = result.error
        result.status = "failed"
        result.verdict = rules.rule_error(err.step, f"{err.type}: {err.message}")
        if not (paths.plots_run / "artifacts_manifest.json").exists():
            plots.write_manifest(paths.plots_run, ctx.plot_paths, {"all": "group failed before plotting"}, ctx.captions)
        _finish(ctx)
        raise GroupFailed(f"group {spec.id} failed at step '{err.step}': {err.type}: {err.message}") from exc
