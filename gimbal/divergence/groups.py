"""The seed's diagnostic groups 1-8 for the GIMBAL model: one table, one orchestrator.

Each notebook calls :func:`run_group`; every step's result is written to the
results JSON as soon as it exists, so a crash still leaves valid JSON (status
``"failed"``, the failing step, its error and traceback) and a report.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..diagnostics import checks, convergence, io, localization, multimodality, plots, rules, sampling
from . import report, schema
from . import rules as study_rules
from .paths import DEFAULT_ROOT, DiagPaths, archive_legacy, make_paths

__all__ = ["GroupSpec", "GROUPS", "PROFILES", "run_group", "group_desc", "resolve_settings", "GroupFailed"]


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


FULL = dict(use_mixture=True, use_directional_hmm=True)
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
                  dict(use_mixture=False, use_directional_hmm=False)),
        GroupSpec("4", "sampling_mixture_only", "Mixture only",
                  "Inlier/outlier mixture, no HMM, plus checks of the mixture's pieces.",
                  dict(use_mixture=True, use_directional_hmm=False), extra=("mixture_checks",), reference="3"),
        GroupSpec("5", "sampling_hmm_only", "Directional HMM only",
                  "Directional HMM, Gaussian likelihood, plus a T=5, K=2 micro check of the HMM log density and gradient.",
                  dict(use_mixture=False, use_directional_hmm=True), extra=("hmm_micro_gradient",), reference="3"),
        GroupSpec("6", "sampling_full_truncated", "Full model, truncated", "Mixture and HMM, truncated to T=80.", FULL),
        GroupSpec("7", "likelihood_only_freeze_latents", "Likelihood only, latents frozen",
                  "3D positions fixed (ground truth when known, else the initialisation); only observation and "
                  "mixture parameters are sampled.", dict(use_mixture=True, use_directional_hmm=False, freeze_latents="truth")),
        GroupSpec("8a", "temporal_T80", "Temporal scaling, T=80", "Full model at T=80.", FULL, T=80, quick_T=20),
        GroupSpec("8b", "temporal_T200", "Temporal scaling, T=200", "Full model at T=200.", FULL, T=200, quick_T=30),
        GroupSpec("8c", "temporal_T500", "Temporal scaling, T=500", "Full model at T=500.", FULL, T=500, quick_T=40),
        GroupSpec("8d", "temporal_T1000", "Temporal scaling, T=1000", "Full model at T=1000.", FULL, T=1000, quick_T=50),
        GroupSpec("8e", "temporal_T1800", "Temporal scaling, T=1800", "Full model at T=1800.", FULL, T=1800, quick_T=60),
    ]
}

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


class _Run:
    """Accumulates the payload and rewrites the results JSON after every step."""

    def __init__(self, paths: DiagPaths, header: dict):
        self.paths = paths
        self.payload = {"schema_version": schema.SCHEMA_VERSION, "header": header, "status": "running", "steps": [],
                        "model_checks": None, "gradient_checks": None, "sampling": None, "multimodality": None,
                        "localization": None, "position_error": None, "plots": {}, "verdict": None, "error": None,
                        # who writes this file: a "running" result whose process is gone reads as interrupted
                        "process": {"pid": os.getpid(), "host": platform.node()}}
        self.plot_paths: dict[str, Path] = {}
        self.captions: dict[str, str] = {}
        self.flush()

    def flush(self):
        io.write_json(self.paths.results_run, self.payload)

    def step(self, name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            self.payload["steps"].append({"name": name, "status": "failed", "seconds": time.perf_counter() - t0})
            self.payload["error"] = {"step": name, "type": type(exc).__name__, "message": str(exc),
                                     "traceback": traceback.format_exc()}
            raise
        self.payload["steps"].append({"name": name, "status": "ok", "seconds": time.perf_counter() - t0})
        self.flush()
        return out


def _load_reference(root, group, run_id: str, header: dict) -> dict | None:
    """Another group's sampling results (group 3 for groups 4 and 5) from the same run, data, T and sampler.

    Only a like-for-like run is a reference: the same run id, dataset, T, K, seed and sampler settings.
    """
    path = make_paths(group_desc(group), run_id, root).results_run
    if not path.exists():
        return None
    data = io.read_json(path)
    h = data.get("header", {})
    same = all(h.get(k) == header.get(k) for k in ("dataset", "T", "K", "seed", "sampling_settings"))
    return data.get("sampling") if same and data.get("status") == "ok" else None


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
    holed_model = build_model(holed, use_mixture=True, use_directional_hmm=False, init=init, validate=False)
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


def _hmm_micro_check(dataset_name, seed) -> dict:
    """Group 5's micro check on a tiny model (T=5, K=2, S=2, learned states).

    The model's HMM term is compared with brute-force enumeration of all 2^5
    state paths over the model's own emission matrix, and the gradient of the
    whole tiny model with central finite differences on every component.
    """
    import itertools

    from scipy.special import logsumexp

    from ..datasets import load_dataset
    from ..model.build import build_model

    tiny = load_dataset(dataset_name, max_T=5, max_K=2)
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


def _sampling_plots(run: _Run, trace, summary, loc, selected, maxdepth: int = 10):
    d = run.paths.plots_run
    jobs = {
        "trace_selected": (plots.plot_trace_selected, (trace, selected, d / "trace_selected.png"),
                           "Trace and marginal density of selected parameters per chain."),
        "energy": (plots.plot_energy, (trace, d / "energy.png", summary.get("ebfmi_per_chain")),
                   "Energy marginal vs transition; E-BFMI < 0.3 flags poor exploration."),
        "step_size_treedepth": (plots.plot_step_size_treedepth, (trace, d / "step_size_treedepth.png", maxdepth),
                                "Step-size adaptation and tree depth; many max-depth draws mean inefficiency."),
        "divergence_pairs": (plots.plot_divergence_pairs, (trace, selected, d / "divergence_pairs.png"),
                             "Pairs of selected parameters with divergent draws highlighted."),
        "divergence_localization": (plots.plot_localization, (loc, d / "divergence_localization.png"),
                                    "Where divergent draws are displaced: per frame, per keypoint, per variable."),
    }
    return jobs


def _localize_nonconvergence(trace, summary: dict, rhat_chance: dict | None):
    """Per-element R-hat/ESS and patterns of every variable whose max R-hat is over the threshold."""
    return convergence.localize_flagged(trace, summary, rhat_chance, rhat_threshold=rules.THRESHOLDS["rhat_max"])


def _convergence_plots(run: _Run, conv: dict) -> dict:
    jobs = {}
    for name, c in conv.items():
        if c.n_flagged and c.rhat.ndim:
            jobs[f"rhat_map_{name}"] = (plots.plot_rhat_map, (c, run.paths.plots_run / f"rhat_map_{name}.png"),
                                        f"Per-element R-hat of '{name}': where in the model the chains disagree.")
    return jobs


def _draw_plots(run: _Run, jobs: dict):
    failed = {}
    for kind, (fn, args, caption) in jobs.items():
        try:
            run.plot_paths[kind] = fn(*args)
            run.captions[kind] = caption
        except Exception as exc:  # a plot that cannot be drawn is recorded, never fatal
            failed[kind] = f"{type(exc).__name__}: {exc}"
    plots.write_manifest(run.paths.plots_run, run.plot_paths, failed, run.captions)
    run.payload["plots"] = {"produced": {k: io.to_jsonable(p) for k, p in run.plot_paths.items()}, "failed": failed}


def _finish(run: _Run):
    """Validate, write the report, and refresh the 'latest' copies."""
    paths = run.paths
    schema.validate_results(io.to_jsonable(run.payload))
    run.flush()
    text = report.render_report(run.payload, paths.report_run, paths.results_run, run.plot_paths, run.captions)
    io.save_text(paths.report_run, text)
    # latest copies: results, report (links rewritten for the latest location are identical: same folder)
    io.copy_latest(paths.results_run, paths.results_latest)
    io.save_text(paths.report_latest, text)
    latest_dir = paths.plots_latest
    for p in list(run.plot_paths.values()) + [paths.plots_run / "artifacts_manifest.json"]:
        if Path(p).exists():
            io.copy_latest(p, latest_dir / Path(p).name)


def run_group(
    group: str,
    run_id: str | None = None,
    *,
    dataset_name: str = "v0.2.1_L00_minimal",
    max_T: int | None = None,
    max_K: int | None = None,
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
) -> dict:
    """Run one diagnostic group end to end and write its artifacts.

    Parameters
    ----------
    group : str
        "1" ... "7", "8a" ... "8e".
    run_id : str, optional
        Defaults to an ISO timestamp.
    dataset_name, max_T, max_K, seed
        The data; ``max_T`` defaults to the profile's T for this group, ``max_K``
        to the seed's 8 (or the dataset's K when smaller).
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
        Inject a failure at the named step (for testing the failure path).

    Returns
    -------
    dict
        The results payload (also written to disk).

    Raises
    ------
    GroupFailed
        After recording the failure, when any step raised.
    """
    from ..datasets import load_dataset, save_dataset, truncate
    from ..model.initialization import init_point_for
    from ..model.fitting import backend_model_options, jax_device, position_errors, sample_model, save_trace
    from ..model.build import build_model

    spec = _spec(group)
    backend_options = backend_model_options(backend)  # checks the name before anything is written
    run_id = io.validate_run_id(run_id or io.default_run_id())
    paths = make_paths(group_desc(spec.id), run_id, root)
    if paths.exists() and not overwrite:
        raise FileExistsError(f"run '{run_id}' of {group_desc(spec.id)} already exists under {paths.root}; pass overwrite=True (--overwrite).")
    paths.create()
    archive_legacy(paths.root)
    settings = resolve_settings(spec.id, profile, max_T, max_K, chains, tune, draws)
    header = {
        "group": spec.id, "description": spec.desc, "title": spec.title, "purpose": spec.purpose, "run_id": run_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": dict(spec.model),
        "dataset": str(dataset_name), "T": None, "K": None, "C": None, "seed": int(seed), "profile": profile,
        "samples": spec.samples,
        "sampling_settings": ({"sampler": sampler, **{k: settings[k] for k in ("chains", "tune", "draws")},
                               "target_accept": float(target_accept), "maxdepth": int(maxdepth), "backend": backend,
                               "device": jax_device() if backend == "jax" else "cpu"} if spec.samples else None),
        "parameters": {"max_T": settings["max_T"], "max_K": settings["max_K"], "overwrite": bool(overwrite),
                       "backend": backend},  # also shapes the model (plain graph for JAX) where nothing is sampled
        "environment": io.collect_environment(),
    }
    run = _Run(paths, header)

    def maybe_fail(step):
        if fail_at == step:
            raise RuntimeError(f"injected failure at step '{step}' (fail_at parameter)")

    try:
        def load():
            maybe_fail("load_data")
            ds = load_dataset(dataset_name)
            want = settings["max_T"]
            if max_T is None and want and want > ds.sizes["frame"]:
                want = ds.sizes["frame"]  # the profile's T is longer than the recording: use all of it (the title says so)
            ds = truncate(ds, max_T=want, max_K=settings["max_K"] or min(SEED_MAX_K, ds.sizes["keypoint"]))
            header.update(T=ds.sizes["frame"], K=ds.sizes["keypoint"], C=ds.sizes["camera"])
            if ds.sizes["frame"] != spec.T:  # pages show the T that really ran, and the seed's beside it
                header["title"] = f"{spec.title.split(', T=')[0]}, T={ds.sizes['frame']} (the seed's T={spec.T}, {profile} profile)"
                header["purpose"] = f"{spec.purpose} Run here at T={ds.sizes['frame']}."
            save_dataset(ds, paths.debug_dir / DATASET_ARTIFACT, overwrite=True)  # the book reads this, never the source
            return ds

        ds = run.step("load_data", load)
        def build():
            maybe_fail("build_model")
            options = dict(spec.model)
            if options.get("freeze_latents") == "truth" and "positions_true" not in ds:
                options["freeze_latents"] = "init"  # real data has no ground truth: freeze at the initialisation
                header["frozen_at"] = "the initialization (the dataset has no ground truth)"
            elif options.get("freeze_latents") == "truth":
                known = np.isfinite(ds["positions_true"].values).all(-1)
                header["frozen_at"] = ("the ground truth" if known.all() else
                                       f"the ground truth where known ({int(known.sum())} of {known.size} keypoint "
                                       "positions), the initialization where motion capture lost a marker")
            if options.get("use_directional_hmm"):
                # a one-state dataset would reduce the HMM to a single vMF: exercise at least two states
                options.setdefault("n_states", max(2, int(ds.attrs.get("n_states", 1))))
            options.update(backend_options)
            return build_model(ds, seed=seed, validate=False, **options)

        model = run.step("build_model", build)
        header["config"] = model.gimbal_config.as_dict()
        point = init_point_for(model, model.gimbal_init)

        def model_checks():
            maybe_fail("model_checks")
            lp = checks.safe_point_logps(model, point)
            return {"total": lp["total"], "finite": lp["finite"], "nonfinite_terms": lp["nonfinite_terms"],
                    "worst_terms": [{"term": k, "logp": v} for k, v in list(lp["terms"].items())[:10]],
                    "n_terms": len(lp["terms"])}

        run.payload["model_checks"] = run.step("model_checks", model_checks)

        def gradient_checks():
            maybe_fail("gradient_checks")
            checker = checks.compile_logp_and_grad(model, point)
            out = {"at_initial_point": checks.gradient_report(checker, point)}
            if "finite_difference" in spec.extra:
                out["finite_difference"] = checks.finite_difference_check(checker, point, max_components=300, seed=seed)
            if "perturbation" in spec.extra:
                out["perturbation"] = checks.perturbation_check(checker, point, n_points=3, seed=seed)
            out["component_checks"] = {}
            if "mixture_checks" in spec.extra:
                out["component_checks"]["mixture"] = _mixture_checks(ds, model, model.gimbal_init)
            if "hmm_micro_gradient" in spec.extra:
                out["component_checks"]["hmm_micro_gradient"] = _hmm_micro_check(dataset_name, seed)
            return out

        gc = run.payload["gradient_checks"] = run.step("gradient_checks", gradient_checks)
        extra_ok = all(c.get("passed", True) for c in gc["component_checks"].values())

        if not spec.samples:
            if spec.id == "1":
                verdict = rules.rule_build(run.payload["model_checks"])
                worst = {t["term"]: t["logp"] for t in run.payload["model_checks"]["worst_terms"]}
                jobs = {"logp_terms": (plots.plot_logp_terms, (worst, paths.plots_run / "logp_terms.png"),
                                       "The ten worst log-density terms at the initial point.")}
            else:
                verdict = rules.rule_gradient(gc["at_initial_point"], gc.get("finite_difference"), gc.get("perturbation"))
                jobs = {"gradient_by_variable": (plots.plot_gradient_by_variable, (gc["at_initial_point"]["per_variable"], paths.plots_run / "gradient_by_variable.png"),
                                                 "Largest gradient component per variable at the initial point.")}
            run.step("plots", _draw_plots, run, jobs)
        else:
            def sample():
                maybe_fail("sampling")
                fit = sample_model(model, sampler=sampler, chains=settings["chains"], tune=settings["tune"],
                                   draws=settings["draws"], seed=seed, progress=progress, target_accept=target_accept,
                                   maxdepth=maxdepth, backend=backend)
                save_trace(fit.trace, paths.debug_dir / "trace.nc", overwrite=True, float32_vars=("x",))
                return fit

            fit = run.step("sampling", sample)
            selected = [v for v in SELECTED_VARS if v in fit.trace["posterior"]]
            summary = sampling.sampling_summary(fit.trace, selected, max_treedepth=maxdepth, wall_time_s=fit.sample_s)
            summary["compile_s"] = fit.compile_s
            run.payload["sampling"] = summary
            run.payload["multimodality"] = multimodality.multimodality_check(fit.trace)
            loc = run.payload["localization"] = localization.divergence_localization(fit.trace)
            run.payload["position_error"] = position_errors(fit.trace, ds)
            run.flush()
            run.step("plots", _draw_plots, run, _sampling_plots(run, fit.trace, summary, loc, selected or list(fit.trace["posterior"].data_vars)[:3],
                                                        maxdepth))
            reference = _load_reference(paths.root, spec.reference, run_id, header) if spec.reference else None
            # a too-high R-hat: within what chance gives over that many elements? where, and in which pattern?
            rhat_chance = conv_json = None
            if "rhat" in rules.sampling_problems(summary, run.payload["multimodality"]):
                rhat_chance = run.payload["rhat_chance"] = run.step("rhat_chance", sampling.rhat_against_chance,
                                                                    summary, seed=seed)
                conv = run.step("convergence_localization", _localize_nonconvergence, fit.trace, summary, rhat_chance)
                conv_json = run.payload["convergence_localization"] = {k: v.to_json() for k, v in conv.items()}
                run.step("convergence_plots", _draw_plots, run, _convergence_plots(run, conv))
            verdict = study_rules.rule_sampling(spec.id, summary, run.payload["multimodality"], reference, extra_ok,
                                                rhat_chance=rhat_chance, localization=conv_json)
        run.payload["verdict"] = verdict.as_dict()
        run.payload["status"] = "ok"
        _finish(run)
        return run.payload
    except Exception as exc:
        err = run.payload.get("error") or {"step": "unknown", "type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
        run.payload["error"] = err
        run.payload["status"] = "failed"
        run.payload["verdict"] = rules.rule_error(err["step"], f"{err['type']}: {err['message']}").as_dict()
        if not (paths.plots_run / "artifacts_manifest.json").exists():
            plots.write_manifest(paths.plots_run, run.plot_paths, {"all": "group failed before plotting"}, run.captions)
        _finish(run)
        raise GroupFailed(f"group {spec.id} failed at step '{err['step']}': {err['type']}: {err['message']}") from exc
