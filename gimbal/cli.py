"""The ``gimbal`` command: ``datasets``, ``import``, ``prior fit``, ``fit``, ``export``, ``evaluate``, ``diag run``,
``diag book``, ``diag model``."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from .settings import add_exclude_argument, add_prior_argument, excluded_pairs, positive_int

__all__ = ["main"]


def _add_dataset_args(p: argparse.ArgumentParser, default: str | None) -> None:
    from .settings import add_data_arguments

    add_data_arguments(p, default, required=default is None)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .settings import CAMERA_NOISE, OFFSETS, STARTS, STEP_DOF, STEP_FRAMES, STEPS, WHITENED_TRACKS, positive_number

    g = p.add_argument_group("model")
    g.add_argument("--no-mixture", action="store_true", help="Gaussian likelihood instead of the inlier/outlier mixture")
    g.add_argument("--no-hmm", action="store_true", help="single-state direction prior instead of the directional HMM")
    g.add_argument("--n-states", type=positive_int, default=None, help="pose states (default: the dataset's)")
    g.add_argument("--directions", choices=("marginal", "explicit"), default="marginal")
    g.add_argument("--state-params", choices=("empirical", "learned"), default="empirical")
    g.add_argument("--steps", choices=STEPS, default=STEPS[0],
                   help="a keypoint's frame-to-frame 3D step: Gaussian or Student-t (heavy tails: bursts of movement "
                        f"pass, still keypoints stay still) (default: {STEPS[0]})")
    g.add_argument("--steps-dof", type=positive_number, default=STEP_DOF,
                   help="degrees of freedom of the Student-t steps: fewer make large steps cheaper (bursts of "
                        "movement, but also wrong detections pulling a keypoint off its track) "
                        f"(default: {STEP_DOF:g})")
    g.add_argument("--step-frame", choices=STEP_FRAMES, default=STEP_FRAMES[0],
                   help="the frame a keypoint's step is taken in: the world, relative to its parent (the root in the "
                        "world), or per keypoint the one in which its steps are smaller (auto) "
                        f"(default: {STEP_FRAMES[0]})")
    g.add_argument("--offsets", choices=OFFSETS, default=OFFSETS[0],
                   help="a detector's systematic offset per (camera, keypoint), a bias in every frame: estimated from "
                        "the start's residuals where at least 5 cameras see the keypoint, and taken off that pair's "
                        f"detections, or none (default: {OFFSETS[0]})")
    g.add_argument("--camera-noise", choices=CAMERA_NOISE, default=CAMERA_NOISE[0],
                   help="each camera's noise factor (--observation camera_keypoint): sampled but kept above its "
                        "estimate from its detections' residuals against the point the other cameras place, or "
                        "sampled freely (a free factor can collapse onto one camera's rays) "
                        f"(default: {CAMERA_NOISE[0]})")
    g.add_argument("--scales", choices=("fixed", "learned"), default="fixed")
    g.add_argument("--root-dynamics", choices=("centered", "noncentered"), default="centered",
                   help="sample root positions directly (default) or as start + standard-normal random-walk steps")
    g.add_argument(
        "--kernels", choices=("fused", "graph"), default="fused",
        help="fused numba kernels for the likelihood and HMM (default) or the plain PyTensor graph (used with --backend jax)",
    )
    g.add_argument(
        "--outlier-model", choices=("uniform", "gaussian", "student_t"), default="gaussian",
        help="outlier detections as a second class, a wide Gaussian around the projection (the original GIMBAL's; "
             "default) or uniform over the image (the seed's), or a heavy-tailed Student-t likelihood (needs "
             "--kernels graph)",
    )
    g.add_argument(
        "--observation", choices=("shared", "camera_keypoint"), default="camera_keypoint",
        help="pixel noise and outlier rates per (camera, keypoint), pooled (default), or one noise and per-keypoint "
             "rates (the seed's)",
    )
    g.add_argument(
        "--confidence", action=argparse.BooleanOptionalAction, default=None,
        help="the detector's scores (imported with the detections) inform each detection's inlier probability "
             "(default: where the dataset has scores; --no-confidence leaves them out)",
    )
    g.add_argument(
        "--whitened-tracks", choices=WHITENED_TRACKS, default=WHITENED_TRACKS[0],
        help="the sampler moves these keypoints' tracks in coordinates that whiten their random walk and the cameras' "
             "information (the same model): none (default), still (those whose step sd is below their triangulation "
             "sd: an animal that mostly sits still; several times fewer gradients per draw) or all",
    )
    add_prior_argument(g)
    g.add_argument(
        "--start", choices=STARTS, default=STARTS[0],
        help="where the chains start: the robust reconstruction's tracks (default), or those tracks smoothed to "
             "agree with the temporal prior and the bone lengths (compare the two when chains disagree)",
    )
    g.add_argument(
        "--hmm-algorithm", choices=("sequential", "parallel"), default=None,
        help="with the plain graph: forward algorithm frame by frame, or a log-depth tree over frames (GPU); "
             "default: parallel with --backend jax, else sequential",
    )


def _add_sampler_args(p: argparse.ArgumentParser, chains=2, tune=300, draws=100) -> None:
    from .settings import add_sampler_arguments

    g = add_sampler_arguments(p, chains=chains, tune=tune, draws=draws)
    g.add_argument(
        "--draws-on-disk", action="store_true",
        help="nutpie writes every draw to OUT/draws.zarr while sampling instead of holding them in memory (long recordings)",
    )


def cmd_datasets(args) -> int:
    from .datasets import cache_dir, list_datasets

    for name, desc in list_datasets().items():
        print(f"{name:28s} {desc}")
    print(f"\ncache: {cache_dir()}  (set GIMBAL_CACHE_DIR to move it)")
    return 0


def cmd_fit(args) -> int:
    import numpy as np

    from .datasets import load_dataset, save_dataset
    from .diagnostics.io import collect_environment, write_json
    from .diagnostics.sampling import convergence_table, depth_cap_text, sampling_summary
    from .model.fitting import backend_model_options, jax_device, position_errors, sample_model, save_trace
    from .model.regions import chain_findings
    from .model.whitening import whitened_keypoints
    from .model.build import build_model
    from .model.offsets import OFFSET_REPORT_PX, largest_offsets

    from .settings import SamplerSettings

    settings = SamplerSettings.from_args(args)  # every sampler option validated before any work
    if args.moves and settings.sampler != "pymc":
        from .errors import UsageError

        raise UsageError("--moves runs inside PyMC's compound sampler: add --sampler pymc (nutpie runs NUTS alone).")
    if args.moves and args.step_frame != "world":
        from .errors import UsageError

        raise UsageError(f"--moves score each position's random walk in the world, and --step-frame {args.step_frame} "
                         "takes steps relative to the parent: add --step-frame world.")
    label = Path(args.dataset).stem if Path(args.dataset).suffix == ".nc" else args.dataset
    out = Path(args.out) if args.out else Path("tests") / "pipeline" / "fits" / label
    summary_path, trace_path = out / "summary.json", out / "trace.nc"
    draws_dir = out / "draws.zarr" if args.draws_on_disk else None
    if not args.overwrite and (summary_path.exists() or trace_path.exists() or (draws_dir and draws_dir.exists())):
        print(f"error: {out} already holds a fit; pass --overwrite to replace it or --out DIR.", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    ds = load_dataset(args.dataset, max_T=args.max_T, max_K=args.max_K, exclude=excluded_pairs(args.exclude))
    T, C, K = ds.sizes["frame"], ds.sizes["camera"], ds.sizes["keypoint"]
    left_out = f"; left out: {ds.attrs['excluded_detections']}" if ds.attrs.get("excluded_detections") else ""
    print(f"[1/4] dataset {label}: T={T} frames, C={C} cameras, K={K} keypoints{left_out}")
    _warn_flagged_calibration(ds)
    model_options = _model_options(args, ds, label)
    model_options.update(backend_model_options(args.backend))  # JAX: plain graph, tree-form HMM
    if args.hmm_algorithm:
        model_options["hmm_algorithm"] = args.hmm_algorithm  # an explicit choice wins
    if args.window:
        return _fit_windowed(args, ds, label, model_options, out, summary_path, trace_path, t0)
    model = build_model(ds, seed=args.seed, **model_options)
    moves = None
    if args.moves:
        from .model.moves import explanation_blocks, move_counts

        moves = explanation_blocks(ds, pixel_noise=float(model.gimbal_init.values["obs_sigma"]))
    t_build = time.perf_counter() - t0
    if draws_dir is not None and draws_dir.exists():
        shutil.rmtree(draws_dir)  # --overwrite was given (checked above)
    n_params = sum(int(v.size) for v in model.initial_point().values())
    scores = "; the detector's scores inform each detection (--no-confidence to leave them out)" if model.gimbal_config.confidence else ""
    whitened = whitened_keypoints(model)
    if whitened:
        scores += f"; {len(whitened)} of {ds.sizes['keypoint']} keypoints' tracks sampled whitened"
    if model.gimbal_config.temporal and model.gimbal_config.step_frame != "world":
        relative = int(sum(model.gimbal_step_relative))
        scores += f"; {relative} of {ds.sizes['keypoint']} keypoints step relative to their parent"
    offsets = largest_offsets(model.gimbal_offsets, ds["camera"].values, ds["keypoint"].values)
    if offsets:
        scores += (f"; detector offsets of {len(offsets)} (camera, keypoint) pairs >= {OFFSET_REPORT_PX:g} px "
                   f"taken off (largest {offsets[0].camera}:{offsets[0].keypoint} {offsets[0].length_px:.1f} px)")
    floor = None if model.gimbal_camera_noise is None else dict(zip(map(str, ds["camera"].values),
                                                                    np.exp(model.gimbal_camera_noise).tolist()))
    if floor:
        scores += ("; each camera's noise at least its held-out residuals' share of the shared noise: "
                   + ", ".join(f"{c} {v:.2f}x" for c, v in floor.items()))
    print(f"[2/4] model built and validated in {t_build:.1f} s ({n_params} unconstrained parameters{scores})")
    with_moves = "" if moves is None else f" + moves between explanations ({len(moves)} candidate runs)"
    pooling = _pooling_text(model, settings)  # "" with PyMC's sampler (moves), one chain or a short warm-up
    print(f"[3/4] sampling: {args.chains} chains x ({args.tune} tune + {args.draws} draws) with {args.sampler}{with_moves}"
          f"{pooling}")
    result = sample_model(model, **settings.sample_kwargs(), progress=not args.quiet, trace_dir=draws_dir,
                          float32_vars=("x",), moves=moves)
    # R-hat and ESS of every latent, once: the summary's extremes and each position's R-hat come from one pass
    table = convergence_table(result.trace, keep=["x"] if "x" in result.trace["posterior"] else [])
    summary = sampling_summary(result.trace, ["bone_length", "obs_sigma", "logodds_inlier", "log_noise_camera",
                                              "log_noise_keypoint", "logodds_inlier_ck", "confidence_slope",
                                              "transition"],
                               max_treedepth=settings.maxdepth, wall_time_s=result.sample_s, table=table)
    errors = position_errors(result.trace, ds)
    support = _unconverged_support(result.trace, ds, float(model.gimbal_init.values["obs_sigma"]),
                                   rhat_x=table["rhat_x"].values if "rhat_x" in table else None)
    exceedances = _rhat_exceedances(result.trace, table)
    chains = chain_findings(result.trace, ds)
    heading = _heading_check(model, result.trace, table)
    save_trace(result.trace, trace_path, overwrite=args.overwrite, float32_vars=("x",))
    save_dataset(ds, out / "dataset.nc", overwrite=True)  # the fit folder is self-contained (gimbal export reads it)
    payload = {
        "dataset": {"name": label, "T": T, "C": C, "K": K},
        "model": model.gimbal_config.as_dict(),
        "sampler": {**settings.as_dict(), "device": jax_device() if settings.backend == "jax" else "cpu"},
        "timing_s": {"build_and_validate": t_build, "compile": result.compile_s, "sample": result.sample_s},
        "draws_zarr": str(draws_dir) if draws_dir else None,
        "sampling": summary,
        "position_error": errors,
        "unconverged_positions": support.to_json() if support else None,
        "rhat_exceedances": exceedances.as_dict() if exceedances else None,
        "moves": None if moves is None else move_counts(result.trace, len(moves)),
        "pooled_warmup": None if result.pooled is None else result.pooled.as_dict(),
        "detector_offsets": [asdict(o) for o in offsets],
        "camera_noise_floor": floor,  # each camera's factor of the shared noise is at least this
        "stranded_chains": chains.stranded,
        "chain_regions": chains.regions,
        "heading": heading,
        "environment": collect_environment(),
    }
    write_json(summary_path, payload)
    print(f"[4/4] wrote {trace_path} and {summary_path}\n")
    _print_fit_summary(summary, errors, result, payload["moves"])
    depth = depth_cap_text(summary, settings.maxdepth)
    if depth:
        print(f"\n  tree depth: {_depth_advice(depth, settings.maxdepth)}")
    if support:
        print(f"\n  positions: {support.text()}")
    if exceedances:
        print(f"\n  R-hat against chance: {exceedances.text()}")
    if chains.text():
        print(f"\n  chains: {chains.text()}")
    if heading and heading["traced"]:
        from .model.prior import HEADING_FIX, heading_text

        print(f"\n  body frame: {heading_text(heading)} {HEADING_FIX}")
    return 0


def _pooling_text(model, settings) -> str:
    """How the warm-up is split where the chains are pooled mid warm-up (:mod:`gimbal.model.pooling`), else ''."""
    from .model import pooling

    plan = pooling.plan(model, sampler=settings.sampler, tune=settings.tune, chains=settings.chains,
                        enabled=settings.pooled_warmup)
    if plan is None:
        return ""
    return (f"; warm-up in two stages ({plan[0] + plan[1]} + {plan[2]}), the second from the chains' best "
            "explanation of each disputed keypoint (--no-pooled-warmup: one stage)")


def _heading_check(model, trace, table):
    """With a trained prior: the heading check at the posterior mean against the frames where some position's R-hat
    is above 1.01 (None without a prior, or with frozen positions)."""
    from .model.prior import posterior_heading_check

    post = trace["posterior"]
    if "x" not in post:
        return None
    unconverged = (table["rhat_x"].max(["keypoint", "xyz"]).values > 1.01) if "rhat_x" in table else None
    return posterior_heading_check(model, post["x"], unconverged)


def _rhat_exceedances(trace, table):
    """Every position coordinate's R-hat against what converged chains mixing as fast show by chance
    (:func:`gimbal.diagnostics.chance.rhat_exceedances`; None with one chain or frozen positions)."""
    from .diagnostics.chance import rhat_exceedances

    post = trace["posterior"]
    if "rhat_x" not in table or post.sizes.get("chain", 1) < 2:
        return None
    return rhat_exceedances(post["x"], table["rhat_x"].values, table["ess_bulk_x"].values)


def _unconverged_support(trace, ds, pixel_noise: float, rhat_x=None):
    """R-hat of every position (``rhat_x`` when already computed), by the cameras that support it (None with one
    chain or frozen positions)."""
    from .model.support import unconverged_support

    post = trace["posterior"]
    if "x" not in post or post.sizes.get("chain", 1) < 2:
        return None
    return unconverged_support(trace, ds, pixel_noise, rhat_x=rhat_x)


def _model_options(args, ds, label: str) -> dict:
    """``build_model`` options from the command line's model arguments, checked against the dataset."""
    from .errors import UsageError
    from .model.build import sparse_frame_options
    from .model.observation import has_scores
    from .settings import STEP_DOF

    if getattr(args, "backend", "numba") == "jax" and args.whitened_tracks != "none":
        raise UsageError(f"--whitened-tracks {args.whitened_tracks} needs the numba backend (the whitened tracks' "
                         "solve is numba code, and JAX samples the positions as they are): drop --whitened-tracks or "
                         "--backend jax.")
    if args.steps == "gaussian" and args.steps_dof != STEP_DOF:
        raise UsageError(f"--steps-dof {args.steps_dof:g} sets the Student-t steps' degrees of freedom, and --steps "
                         "gaussian has none: drop one of the two.")
    if args.confidence and not has_scores(ds):
        raise UsageError(f"--confidence needs the detector's scores, and {label} has none: import the detections "
                         "with `gimbal import` from files that carry scores, or drop --confidence.")
    options = dict(
        use_mixture=not args.no_mixture,
        use_directional_hmm=not args.no_hmm,
        n_states=args.n_states,
        directions=args.directions,
        state_params=args.state_params,
        steps=args.steps,
        steps_dof=args.steps_dof,
        step_frame=args.step_frame,
        offsets=args.offsets,
        camera_noise=args.camera_noise,
        scales=args.scales,
        root_dynamics=args.root_dynamics,
        kernels=args.kernels,
        outlier_model=args.outlier_model,
        observation=args.observation,
        confidence=args.confidence,
        whitened_tracks=args.whitened_tracks,
        prior=_prior_for(args.prior, ds),
        start=args.start,
    )
    sparse = sparse_frame_options(ds)
    if sparse:  # sparse labelled frames: no random walk, no state dynamics
        options.update(sparse)
        print("      frames are not consecutive: no temporal prior; pose states on each frame independently")
    return options


def _prior_for(path, ds):
    """The ``--prior`` file matched to the dataset's skeleton; a file that cannot serve is a usage error."""
    if path is None:
        return None
    from .datasets import skeleton_of
    from .errors import UsageError
    from .model.prior import PriorFileError, load_prior

    try:
        return load_prior(path).for_skeleton(skeleton_of(ds))
    except PriorFileError as exc:
        raise UsageError(f"--prior {path}: {exc}") from exc


def _fit_windowed(args, ds, label, model_options, out, summary_path, trace_path, t0) -> int:
    import numpy as np
    import xarray as xr

    from ._atomic import atomic_path
    from .datasets import save_dataset
    from .diagnostics.io import collect_environment, write_json
    from .diagnostics.sampling import convergence_table
    from .model.fitting import position_errors
    from .model.moves import sum_counts
    from .model.regions import ChainFindings
    from .model.windowed import sample_windowed, window_bounds

    from .errors import UsageError

    if args.backend != "numba":
        raise UsageError("--window runs on the numba backend; drop --backend or --window.")
    if args.draws_on_disk:
        raise UsageError("--draws-on-disk is for full-sequence fits; windows are small enough to sample in memory.")
    n = len(window_bounds(ds.sizes["frame"], args.window, args.overlap))
    with_moves = " + moves between explanations" if args.moves else ""
    print(f"[2/4] windowed inference: {n} windows of {args.window} frames (+{args.overlap} on each side), "
          f"{args.sampler}{with_moves}")
    res = sample_windowed(ds, window=args.window, overlap=args.overlap, model_options=model_options, chains=args.chains,
                          tune=args.tune, draws=args.draws, seed=args.seed, target_accept=args.target_accept,
                          adaptation=args.adaptation, maxdepth=args.maxdepth, sampler=args.sampler,
                          moves=args.moves, progress=not args.quiet, pooled_warmup=args.pooled_warmup)
    print("[3/4] windows done")
    tree = xr.DataTree.from_dict({"posterior": res.posterior})
    errors = position_errors(tree, ds)
    # every position's R-hat and ESS are its own window's; the noise is the windows' median estimate
    table = convergence_table(tree, ["x"], keep=["x"])
    support = _unconverged_support(tree, ds, float(np.median([w["pixel_noise"] for w in res.windows])),
                                   rhat_x=table["rhat_x"].values)
    exceedances = _rhat_exceedances(tree, table)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(trace_path, suffix=".nc") as tmp:
        res.posterior.to_netcdf(tmp, engine="h5netcdf")
    save_dataset(ds, out / "dataset.nc", overwrite=True)
    payload = {
        "dataset": {"name": label, "T": ds.sizes["frame"], "C": ds.sizes["camera"], "K": ds.sizes["keypoint"]},
        "model": {**model_options, "prior": getattr(model_options.get("prior"), "source", None)},  # JSON: the prior's source
        "windowed": {"window": args.window, "overlap": args.overlap, "windows": res.windows, "wall_s": res.wall_s},
        "moves": sum_counts([w["moves"] for w in res.windows]) if args.moves else None,
        "sampler": {k: getattr(args, k) for k in ("sampler", "chains", "tune", "draws", "seed", "target_accept",
                                                  "adaptation", "maxdepth", "moves")},
        "position_error": errors,
        "unconverged_positions": support.to_json() if support else None,
        "rhat_exceedances": exceedances.as_dict() if exceedances else None,
        "environment": collect_environment(),
        "timing_s": {"total": time.perf_counter() - t0},
    }
    write_json(summary_path, payload)
    print(f"[4/4] wrote {trace_path} (stitched posterior) and {summary_path}")
    worst = max(res.windows, key=lambda w: w["max_rhat"] or 0)
    print(f"  divergences {sum(w['divergences'] for w in res.windows)}, worst max R-hat {_fmt(worst['max_rhat'], '.3f')} "
          f"(frames {worst['keep_start']}-{worst['keep_stop'] - 1}), min bulk ESS "
          f"{_fmt(min(w['min_ess_bulk'] for w in res.windows), '.0f')}, {res.wall_s:.0f} s")
    if payload["moves"]:
        print(f"  moves between explanations: {_moves_line(payload['moves'])}")
    if errors and "posterior_mean" in errors:
        print(f"  3D error median: posterior mean {errors['posterior_mean']['median']:.3f} vs robust triangulation "
              f"{errors['triangulation']['median']:.3f} {errors['units']}")
    depth = _windows_depth_text(res.windows, args.maxdepth)
    if depth:
        print(f"  tree depth: {depth}")
    if support:
        print(f"  positions: {support.text()}")
    if exceedances:
        print(f"  R-hat against chance: {exceedances.text()}")
    for w in res.windows:  # each window's chains are their own: a split or a stranded chain is said per window
        said = ChainFindings(regions=w["chain_regions"], stranded=w["stranded_chains"]).text()
        if said:
            print(f"  chains, frames {w['keep_start']}-{w['keep_stop'] - 1}: {said}")
    return 0


def _depth_advice(text: str, maxdepth: int) -> str:
    """``depth_cap_text``'s sentence and the re-run it calls for."""
    return f"{text} Re-run with --maxdepth {maxdepth + 1} (README: Long recordings)."


def _windows_depth_text(windows: list[dict], maxdepth: int) -> str:
    """``depth_cap_text`` over a windowed fit's windows (each its own run): the windows it names, the worst by R-hat
    said in full, with the re-run; '' where it names none."""
    from .diagnostics.sampling import depth_cap_text

    said = [(w, text) for w in windows
            if (text := depth_cap_text({"max_treedepth_fraction": w.get("max_treedepth_fraction"),
                                        "max_rhat_all": w["max_rhat"], "min_ess_bulk_all": w["min_ess_bulk"]},
                                       maxdepth))]
    if not said:
        return ""
    worst, text = max(said, key=lambda s: s[0]["max_rhat"] or 0)
    return (f"{len(said)} of {len(windows)} windows; frames {worst['keep_start']}-{worst['keep_stop'] - 1}: "
            + _depth_advice(text, maxdepth))


def cmd_import(args) -> int:
    from .datasets import save_dataset
    from .io.importer import import_session, parse_pairs

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} already exists; pass --overwrite to replace it.", file=sys.stderr)
        return 2
    if len(args.detections) == 1 and Path(args.detections[0]).suffix.lower() == ".mat":
        return _import_label3d(args, out)
    if len(args.detections) == 1 and "=" not in args.detections[0]:
        detections = args.detections[0]  # a session folder or a multi-camera .slp
    else:
        detections = parse_pairs(args.detections, "--detections")
    result = import_session(
        detections, args.calibration, args.skeleton, min_confidence=args.min_confidence,
        camera_map=parse_pairs(args.camera_map, "--camera-map"), videos=parse_pairs(args.video, "--video"),
        individual=args.individual, person=args.person, root=args.root, cam_regex=args.cam_regex, fps=args.fps,
        name=args.name,
    )
    ds = result.dataset
    print(f"imported {ds.sizes['frame']} frames x {ds.sizes['camera']} cameras {list(map(str, ds['camera'].values))} "
          f"x {ds.sizes['keypoint']} keypoints (root {str(ds['keypoint'].values[0])!r})")
    for note in result.notes:
        print(f"  {note}")
    print(result.calibration_report.text())
    save_dataset(ds, out, overwrite=args.overwrite)
    print(f"wrote {out}  (use it as --dataset {out})")
    if not result.calibration_report.ok:
        from .io.calibration_check import FLAGGED_FIX

        names = ", ".join(c.name for c in result.calibration_report.flagged)
        print(f"warning: the calibration check flagged camera(s) {names}. {FLAGGED_FIX}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _import_label3d(args, out: Path) -> int:
    from .datasets import save_dataset
    from .errors import UsageError
    from .io.label3d import load_label3d

    if args.skeleton is None:
        raise UsageError("Label3D files carry no joint names: pass --skeleton with the DANNCE skeleton .mat "
                         "(its joint_names are the labels' order).")
    if Path(args.calibration).resolve() != Path(args.detections[0]).resolve():
        raise UsageError("a Label3D file holds its own calibration: pass the same file as --calibration.")
    ds = load_label3d(args.detections[0], args.skeleton, root=args.root, name=args.name)
    print(f"imported {ds.sizes['frame']} labelled frames (sparse) x {ds.sizes['camera']} cameras x "
          f"{ds.sizes['keypoint']} keypoints, with their 3D labels as ground truth")
    save_dataset(ds, out, overwrite=args.overwrite)
    print(f"wrote {out}  (use it as --dataset {out}, or to train a prior: gimbal prior fit --dataset {out} ...)")
    return 0


def cmd_prior_fit(args) -> int:
    import numpy as np

    from .datasets import load_dataset
    from .errors import UsageError
    from .model.initialization import triangulate_sequence
    from .model.prior import PriorFileError, fit_prior, save_prior

    out = Path(args.out)
    if out.suffix != ".npz":
        raise UsageError(f"--out must be a .npz file, got {out}.")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it.")
    heading = [h.strip() for h in args.heading.split(",")]
    vertical = [float(v) for v in args.vertical.split(",")]
    if len(heading) != 2 or len(vertical) != 3:
        raise UsageError("--heading takes two keypoint names (BASE,TIP) and --vertical three numbers (x,y,z).")
    sequences, names, parents, consecutive = [], None, None, True
    for path in args.dataset:
        ds = load_dataset(path)
        ds_names = [str(k) for k in ds["keypoint"].values]
        if names is None:
            names, parents = ds_names, ds["parents"].values
        elif ds_names != names or not np.array_equal(ds["parents"].values, parents):
            raise UsageError(f"{path} has another skeleton than {args.dataset[0]}; train a prior on one skeleton.")
        if args.source == "truth":
            if "positions_true" not in ds:
                raise UsageError(f"{path} has no ground-truth positions; use --source triangulation.")
            sequences.append(ds["positions_true"].values)
        else:
            sequences.append(triangulate_sequence(ds))
        consecutive &= bool(ds.attrs.get("frames_consecutive", 1))
    missing = [h for h in heading if h not in names]
    if missing:
        raise UsageError(f"--heading names {missing}, which are not keypoints {names}.")
    try:
        prior = fit_prior(sequences, parents, [names.index(h) for h in heading], n_states=args.states,
                          keypoint_names=names, consecutive=consecutive, normal=vertical, seed=args.seed,
                          source=f"{args.source} of {', '.join(map(str, args.dataset))}")
    except (ValueError, PriorFileError) as exc:
        raise UsageError(str(exc)) from exc
    save_prior(prior, out, overwrite=args.overwrite)
    frames = sum(len(s) for s in sequences)
    print(f"fitted a prior with {prior.n_states} pose states on {frames} frames ({args.source}; heading "
          f"{heading[0]} -> {heading[1]}; step variances {'fitted' if consecutive else 'not fitted: frames not consecutive'})")
    print(f"  bone lengths {np.round(prior.bone_length[1:], 2).tolist()}")
    print(f"  state probabilities {np.round(prior.state_probability, 3).tolist()}; median concentration per state "
          f"{np.round(np.median(prior.state_concentrations[:, 1:], axis=1), 1).tolist()}")
    print(f"wrote {out}  (use it with gimbal fit --prior {out})")
    return 0


def cmd_export(args) -> int:
    from .io.export import export_fit

    paths = export_fit(args.fit_dir, args.format, args.out, overwrite=args.overwrite)
    for p in paths:
        print(f"wrote {p}")
    return 0


def _warn_flagged_calibration(ds) -> None:
    from .io.calibration_check import flagged_at_import

    flagged = flagged_at_import(ds)
    if flagged:
        print(f"warning: {flagged}", file=sys.stderr)


def cmd_evaluate(args) -> int:
    from .evaluate import leave_one_camera_out

    from .settings import SamplerSettings

    from .datasets import load_dataset

    sampler = SamplerSettings.from_args(args)
    label = Path(args.dataset).stem if args.dataset and Path(args.dataset).suffix == ".nc" else args.dataset
    ds = load_dataset(args.dataset, max_T=args.max_T, exclude=excluded_pairs(args.exclude)) if args.dataset else None
    options = _model_options(args, ds, label) if args.dataset else None
    if ds is not None:
        _warn_flagged_calibration(ds)
    report = leave_one_camera_out(
        ds if excluded_pairs(args.exclude) else args.dataset, out=args.out, max_T=args.max_T, cameras=args.cameras.split(",") if args.cameras else None,
        sampler=sampler, min_confidence=args.min_confidence, overwrite=args.overwrite,
        progress=not args.quiet, model_options=options, name=label,
    )
    print(report.text())
    print(f"wrote {report.path}")
    return 0


def _fmt(v, spec=".3g"):
    return "n/a" if v is None else format(v, spec)


def _moves_line(moves: dict) -> str:
    """How often the moves between explanations were tried and taken (``summary.json``'s ``moves``)."""
    share = f" ({100 * moves['acceptance']:.1f}%)" if moves.get("acceptance") is not None else ""
    return (f"{moves['tried']} tried over the kept draws, {moves['accepted']} accepted{share}; "
            f"{moves['candidate_runs']} candidate runs, {moves['rounds']} rounds per iteration")


def _print_fit_summary(s: dict, errors: dict | None, result, moves: dict | None = None) -> None:
    rows = [
        ("divergences", f"{s['divergences']} / {s['total_draws']} ({100 * s['divergence_fraction']:.1f}%)"),
        ("max R-hat (all variables)", f"{_fmt(s.get('max_rhat_all'), '.3f')}  [{s.get('max_rhat_all_var')}]"),
        ("min bulk ESS (all)", f"{_fmt(s.get('min_ess_bulk_all'), '.0f')}  [{s.get('min_ess_bulk_all_var')}]"),
        ("min tail ESS (all)", _fmt(s.get("min_ess_tail_all"), ".0f")),
        ("E-BFMI per chain", ", ".join(f"{b:.2f}" for b in s["ebfmi_per_chain"]) or "n/a"),
        ("at max tree depth", f"{100 * s['max_treedepth_fraction']:.1f}%"),
        ("gradient evals / draw", _fmt(s.get("mean_grad_evals_per_draw"), ".1f")),
        ("mean step size", _fmt(s.get("mean_step_size"), ".3g")),
        ("compile / sample time", f"{result.compile_s:.1f} s / {result.sample_s:.1f} s"),
    ]
    if moves:
        rows.append(("moves between explanations", _moves_line(moves)))
    if result.pooled is not None:
        rows.append(("pooled warm-up", result.pooled.text().removeprefix("pooled warm-up: ")))
    if errors and "posterior_mean" in errors:
        u = errors["units"]
        # a real recording's reference is another program's reconstruction (DeepFly3D's), not ground truth
        what = "3D error" if errors["reference"] == "positions_true" else "distance to the reference 3D"
        for label, key in (("posterior mean", "posterior_mean"), ("robust triangulation", "triangulation")):
            rows.append((f"{what}, {label}", f"median {errors[key]['median']:.3f} {u}, p90 {errors[key]['p90']:.3f}"))
        if errors["reference"] != "positions_true":
            rows.append(("reference 3D", "the dataset's own reconstruction (positions_reference), not ground truth"))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gimbal", description="GIMBAL 3D pose model in PyMC, with a divergence report book.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help="list the registered datasets", description="List the registered datasets.")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "import", help="turn detection files + a calibration + a skeleton into a dataset (.nc)",
        description="Import 2D detections (DeepLabCut .h5/.csv, SLEAP .slp/.analysis.h5, Lightning Pose .csv, OpenPose "
                    "JSON folders), a calibration (aniposelib .toml, DANNCE label3d_dannce.mat, SLEAP .slp session) and "
                    "a skeleton (YAML, DANNCE .mat, anipose config.toml, .slp) into a gimbal dataset. Detections are "
                    "undistorted; the calibration is checked camera by camera.")
    p.add_argument("--detections", nargs="+", required=True, metavar="NAME=FILE",
                   help="one detection file (or OpenPose folder) per camera, NAME being the camera's name; or one "
                        "session folder (a sub-folder or file per camera name), or one multi-camera .slp")
    p.add_argument("--calibration", required=True, help="aniposelib calibration.toml, label3d_dannce.mat or a .slp session")
    p.add_argument("--skeleton", default=None,
                   help="skeleton file: YAML (keypoints + parents, or edges), DANNCE skeleton .mat, anipose config.toml "
                        "(constraints) or .slp (default: the SLEAP file's own skeleton)")
    p.add_argument("--root", default=None, help="root keypoint of the tree (default: the file's, or the graph's centre)")
    p.add_argument("--min-confidence", type=float, default=None, help="detections below this score become missing")
    p.add_argument("--camera-map", nargs="+", default=None, metavar="FILE_NAME=CALIBRATION_NAME",
                   help="map detection camera names to calibration camera names where they differ")
    p.add_argument("--cam-regex", default=None, metavar="REGEX",
                   help="anipose's cam_regex: in a session folder a file belongs to the camera its name's first group "
                        "names ('-cam([A-Z])$': vid-camA.h5 is camera A); default: the cam_regex of an anipose "
                        "config.toml given as --skeleton, else files are matched by camera name. Write "
                        "--cam-regex=REGEX when it starts with '-'")
    p.add_argument("--video", nargs="+", default=None, metavar="NAME=FILE", help="a video per camera (for the book)")
    p.add_argument("--individual", default=None, help="the animal to read from multi-animal files")
    p.add_argument("--person", type=int, default=None,
                   help="OpenPose folders: the person index per frame (default: the most confident person)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (recorded in the dataset)")
    p.add_argument("--name", default=None, help="dataset name (default: the calibration's folder name)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the calibration check flags a camera")
    p.add_argument("--out", required=True, help="dataset file to write (.nc)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("fit", help="fit the model to a dataset", description="Fit the GIMBAL model and write trace + summary.")
    _add_dataset_args(p, default="v0.2.1_L00_minimal")
    add_exclude_argument(p)
    _add_model_args(p)
    _add_sampler_args(p)
    p.add_argument("--out", default=None, help="output folder (default: tests/pipeline/fits/<dataset>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--window", type=positive_int, default=None,
                   help="windowed inference for long recordings: kept frames per window (default: the whole sequence)")
    p.add_argument("--overlap", type=int, default=10, help="with --window: extra frames sampled on each side (default 10)")
    p.add_argument("--moves", action="store_true",
                   help="with --sampler pymc: after every NUTS transition, Metropolis moves between each keypoint's "
                        "explanations where its detections disagree (two camera groups; one camera's detection as inlier "
                        "or outlier; one camera's ray), so chains do not stay in different explanations "
                        "(gimbal.model.moves; about 1.5x PyMC's sampling time; with --window, in each window)")
    p.set_defaults(func=cmd_fit)

    prior = sub.add_parser("prior", help="train a pose prior on 3D data", description="Trained pose priors.")
    psub = prior.add_subparsers(dest="prior_command", required=True)
    p = psub.add_parser(
        "fit", help="fit a pose prior to 3D positions",
        description="Fit a pose prior - body-frame pose states (a von Mises-Fisher mixture by EM on heading-aligned "
                    "bone directions), transition counts, bone lengths and spreads, step variances - to the 3D "
                    "positions of one or more datasets: their ground truth (motion capture, manual labels) or their "
                    "robust triangulation. Write it as .npz for gimbal fit --prior.")
    p.add_argument("--dataset", action="append", required=True, help="a .nc dataset or registered name (repeatable)")
    p.add_argument("--source", choices=("truth", "triangulation"), default="truth",
                   help="train on the datasets' ground-truth positions (default) or on their robust triangulation")
    p.add_argument("--heading", required=True, metavar="BASE,TIP",
                   help="two keypoints whose direction (projected on the floor) is the body's heading, e.g. SpineM,SpineF")
    p.add_argument("--states", type=positive_int, default=1, help="pose states (default 1)")
    p.add_argument("--vertical", default="0,0,1", help="the world's vertical axis (default 0,0,1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the EM start (default 0)")
    p.add_argument("--out", required=True, help="the prior file to write (.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prior file")
    p.set_defaults(func=cmd_prior_fit)

    p = sub.add_parser("export", help="write a fit's posterior 3D poses for other tools",
                       description="Export a gimbal fit folder's posterior: a movement poses dataset (.nc), an "
                                   "anipose-style CSV, or per-camera DeepLabCut files of the reprojected posterior.")
    p.add_argument("fit_dir", help="a folder written by `gimbal fit` (trace.nc + dataset.nc)")
    p.add_argument("--format", required=True, choices=("movement", "anipose", "dlc"))
    p.add_argument("--out", required=True, help="movement: a .nc file; anipose: a .csv file; dlc: a folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="leave-one-camera-out validation (no ground truth needed)",
                       description="For every camera: fit with its detections hidden, then compare the posterior "
                                   "mean's reprojection into it with its confident detections, next to robust "
                                   "triangulation from the remaining cameras; plus bone-length stability.")
    _add_dataset_args(p, default=None)
    add_exclude_argument(p)
    p.add_argument("--cameras", default=None, help="comma-separated cameras to hold out (default: every camera)")
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="held-out detections at least this confident are scored (default 0.5)")
    _add_model_args(p)
    _add_sampler_args(p, chains=2, tune=300, draws=200)
    p.add_argument("--out", default=None, help="JSON to write (default: benchmarks/results/loco_<dataset>.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    diag = sub.add_parser("diag", help="divergence diagnostics: run groups, build the report book",
                          description="Divergence diagnostics of the GIMBAL model (the seed's groups 1-8).")
    dsub = diag.add_subparsers(dest="diag_command", required=True)
    from .divergence import book, runner

    from .diagnostics import command

    runner.register(dsub)
    book.register(dsub)
    command.register(dsub)
    return parser


def _error_log(exc: BaseException) -> Path | None:
    """Write the traceback of a failed run to the cache's ``logs/`` folder; its path, or None if unwritable."""
    import traceback

    from .datasets import cache_dir

    try:
        path = cache_dir() / "logs" / f"gimbal-error-{time.strftime('%Y%m%dT%H%M%S')}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"gimbal {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(exc)), encoding="utf-8")
        return path
    except OSError:
        return None


PACKAGE_DIR = Path(__file__).resolve().parent
_plain_formatwarning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """gimbal's own warnings as ``warning: MESSAGE`` lines (they name the problem and the fix); others as Python's."""
    if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(PACKAGE_DIR):
        return f"warning: {message}\n"
    return _plain_formatwarning(message, category, filename, lineno, line)


def main(argv=None) -> int:
    """Run the ``gimbal`` command. Exit status: 0 done, 1 the run failed, 2 a usage error (nothing was run)."""
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv) -> int:
    from ._generated_source import generated_source_folder
    from .errors import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with generated_source_folder():  # not one file per compiled function left in the temporary folder
            return int(args.func(args) or 0)
    except (UsageError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed run: one line here, the traceback in the log
        log = _error_log(exc)
        print(f"error: {exc}" + (f"\n(traceback: {log})" if log else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
