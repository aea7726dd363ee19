"""``gimbal diag run``: execute the group notebooks with papermill and tabulate the outcome.

Each group runs in its own kernel (papermill), writes its own artifacts, and a
crash in one group never stops the others. The exit status is non-zero only
when a group crashed: divergences are findings, not failures of the tool.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ..diagnostics import io
from ..errors import UsageError
from ..settings import (SamplerSettings, add_data_arguments, add_exclude_argument, add_prior_argument,
                        add_sampler_arguments, excluded_pairs, positive_int)
from .groups import (GROUPS, PRIOR_GROUPS, PROFILES, check_prior, group_desc, repeated_temporal_groups,
                     resolve_settings)
from .paths import DEFAULT_ROOT, archive_legacy, make_paths
from .runs import groups_to_resume, missing_result, read_manifest, resolve_result, write_manifest
from .summary import collect_run, not_run_lines, write_summary

__all__ = ["register", "run_groups", "parse_groups", "notebook_for", "NOTEBOOK_DIR"]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"  # package data: installed with gimbal


def parse_groups(text: str) -> list[str]:
    """``"all"``, ``"1,2,3"``, ``"8"`` (all of 8a-8e) -> ordered group ids."""
    if text.strip().lower() == "all":
        return list(GROUPS)
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "8":
            out += [g for g in GROUPS if g.startswith("8")]
        elif part in GROUPS:
            out.append(part)
        else:
            raise UsageError(f"unknown group {part!r}; choose from all, {', '.join(GROUPS)} (or 8 for 8a-8e).")
    return [g for g in GROUPS if g in out]  # the seed's order, no duplicates


def notebook_for(group: str, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    path = Path(notebook_dir) / GROUPS[group].notebook_name
    if not path.exists():
        raise FileNotFoundError(f"notebook {path} not found: the gimbal installation is incomplete (gimbal/notebooks/ "
                                "ships with the package); reinstall gimbal.")
    return path


def _execute(group, args, root: Path, lock) -> dict:
    import papermill as pm

    paths = make_paths(group_desc(group), args.run_id, root)
    params = dict(group=group, run_id=args.run_id, dataset_name=args.dataset, max_T=args.max_T, max_K=args.max_K,
                  exclude=getattr(args, "exclude", None), prior=getattr(args, "prior", None), seed=args.seed,
                  overwrite=args.overwrite, profile=args.profile,
                  chains=args.chains, tune=args.tune, draws=args.draws, sampler=args.sampler,
                  target_accept=args.target_accept, maxdepth=args.maxdepth, backend=args.backend, root=str(root),
                  fail_at=(args.fail_at or {}).get(group))
    t0 = time.perf_counter()
    crashed, message, trace = False, "", ""
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(notebook_for(group)), str(paths.notebook_run), parameters=params, cwd=str(Path.cwd()),
                            progress_bar=False, kernel_name="python3",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # hush the kernel's transport warning
    except Exception as exc:  # PapermillExecutionError and kernel deaths alike
        crashed, message = True, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        trace = traceback.format_exc()  # inside the handler: outside it there is no exception to format
    seconds = time.perf_counter() - t0
    result = resolve_result(io.read_json(paths.results_run)) if paths.results_run.exists() else None
    if result is None:  # the kernel died before the first write: record the crash where readers look
        result = missing_result(group, GROUPS[group].desc, args.run_id, message or "no results written")
        result["verdict"]["next_action"] = f"Open {paths.notebook_run} (if it exists) to see where it stopped."
        io.write_json(paths.debug_dir / "runner_error.json", {"error": message, "traceback": trace})
        with lock:
            errors = {**((read_manifest(root, args.run_id) or {}).get("errors") or {}), group: message}
            write_manifest(root, args.run_id, _requested(root, args), "running", errors=errors)
    status = "crashed" if crashed or result.get("status") == "failed" else "ok"
    with lock:
        print(f"  group {group:<3} {GROUPS[group].desc:<32} {status:<8} {seconds:6.1f} s  {(result.get('verdict') or {}).get('code', '')}", flush=True)
    return {"group": group, "status": status, "seconds": seconds, "result": result, "notebook": paths.notebook_run}


RUN_SETTINGS = ("profile", "dataset", "max_T", "max_K", "exclude", "prior", "seed", "chains", "tune", "draws",
                "sampler", "target_accept", "maxdepth", "backend")


def _requested(root: Path, args) -> list[str]:
    """Every group the run was asked for (a resumed run keeps its original list)."""
    manifest = read_manifest(root, args.run_id)
    return manifest["groups"] if manifest and getattr(args, "resume", None) else parse_groups(args.groups)


def _on_terminate(root: Path, run_id: str, groups: list[str]):
    """SIGTERM: mark the run and its unfinished groups interrupted, stop the group kernels, exit 143."""
    def handler(signum, frame):
        import psutil

        for g in groups:
            path = make_paths(group_desc(g), run_id, root).results_run
            if path.exists():
                data = io.read_json(path)
                if data.get("status") == "running":
                    data["process"] = {"pid": None, "host": None}  # resolve_result then reads it as interrupted
                    io.write_json(path, resolve_result(data))
        write_manifest(root, run_id, groups, "interrupted", signal=int(signum))
        for child in psutil.Process().children(recursive=True):
            try:
                child.terminate()
            except psutil.Error:
                pass
        print(f"\ninterrupted (signal {signum}): finish with `gimbal diag run --resume {run_id}`", file=sys.stderr,
              flush=True)
        os._exit(128 + int(signum))

    return handler


def _without_repeats(groups: list[str], profile: str, n_frames: int) -> tuple[list[str], dict[str, str]]:
    """``groups`` less the temporal groups a recording of ``n_frames`` frames is too short for
    (:func:`repeated_temporal_groups`), and why each of those is not run."""
    repeated = repeated_temporal_groups(groups, profile, n_frames)
    reasons = {g: f"the recording has {n_frames} frames, which group {first} already runs whole" for g, first in
               repeated.items()}
    for line in not_run_lines(reasons):
        print(f"not run: {line}", flush=True)
    return [g for g in groups if g not in repeated], reasons


def run_groups(args) -> list[dict]:
    """Run the selected groups (``args`` as parsed by ``gimbal diag run``) and return their outcomes."""
    root = Path(args.root)
    if getattr(args, "resume", None):
        args.run_id = io.validate_run_id(args.resume)
        requested = _requested(root, args)
        for key, value in ((read_manifest(root, args.run_id) or {}).get("settings") or {}).items():
            setattr(args, key, value)  # a resumed group runs with the settings the run started with
        groups = groups_to_resume(root, args.run_id, collect_run(root, args.run_id))
        if not groups:
            print(f"run {args.run_id}: every requested group has finished; nothing to resume.")
            return []
        args.overwrite = True  # only the unfinished groups are run again
    else:
        groups = requested = parse_groups(args.groups)
    args.run_id = io.validate_run_id(args.run_id or io.default_run_id())
    clashes = [g for g in groups if make_paths(group_desc(g), args.run_id, root).exists()]
    if clashes and not args.overwrite:
        raise FileExistsError(f"run '{args.run_id}' already exists for groups {', '.join(clashes)} under {root}; "
                              "pass --overwrite or choose another --run-id.")
    for g in groups:  # validate settings up front so a typo fails fast, not after an hour
        resolve_settings(g, args.profile, args.max_T, args.max_K, args.chains, args.tune, args.draws)
    SamplerSettings.from_args(args)  # the same checks as the command line's, for callers that build args themselves
    left_out = excluded_pairs(getattr(args, "exclude", None))
    not_run, cut = {}, not getattr(args, "resume", None) and not args.max_T and any(g.startswith("8") for g in groups)
    if left_out or cut:
        from ..datasets import load_dataset

        data = load_dataset(args.dataset, exclude=left_out)  # a pair the data lacks fails here, before any group runs
        if cut:  # the temporal groups a short recording would repeat
            groups, not_run = _without_repeats(groups, args.profile, data.sizes["frame"])
            requested = groups
    if getattr(args, "prior", None) and any(g in PRIOR_GROUPS for g in groups):
        from ..model.prior import PriorFileError

        try:  # a prior that cannot serve the groups' skeleton fails here, not in every group
            check_prior(args.prior, args.dataset, max_K=args.max_K, exclude=left_out)
        except PriorFileError as exc:
            raise UsageError(f"--prior {args.prior}: {exc}") from exc
    if getattr(args, "prior", None):
        args.prior = str(Path(args.prior).resolve())  # a resumed run finds it from any folder
    if args.backend == "jax" and importlib.util.find_spec("jax") is None:
        from ..model.fitting import JAX_INSTALL_HINT

        raise UsageError(f"--backend jax needs JAX: {JAX_INSTALL_HINT}.")
    moved = archive_legacy(root)
    if moved:
        print(f"moved {len(moved)} legacy tg* artifact(s) into {root / 'archive'}")
    write_manifest(root, args.run_id, requested, "running", settings={k: getattr(args, k, None) for k in RUN_SETTINGS},
                   **({} if getattr(args, "resume", None) else {"not_run": not_run}))  # a resumed run keeps its own
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_terminate(root, args.run_id, requested))
    print(f"run {args.run_id}: {len(groups)} group(s), profile {args.profile}, dataset {args.dataset}, {args.jobs} job(s) -> {root}", flush=True)
    lock = threading.Lock()
    futures: dict[str, cf.Future] = {}
    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for g in groups:
            ref = GROUPS[g].reference
            dep = futures.get(ref)

            def task(g=g, dep=dep):
                if dep is not None:
                    dep.result()  # groups 4 and 5 compare against group 3's fresh results
                return _execute(g, args, root, lock)

            futures[g] = pool.submit(task)
        outcomes = [futures[g].result() for g in groups]
    write_manifest(root, args.run_id, requested, "finished")
    return outcomes


def _row(o: dict) -> list[str]:
    from ..diagnostics.report import fmt

    r = o["result"]
    s = r.get("sampling") or {}
    v = r.get("verdict") or {}
    div = f"{s['divergences']}/{s['total_draws']}" if s else "-"
    return [o["group"], GROUPS[o["group"]].desc, o["status"], v.get("status", "-"), v.get("code", "-"), div,
            fmt(s.get("max_rhat_all"), 3) if s else "-", fmt(s.get("min_ess_bulk_all"), 3) if s else "-",
            fmt(s.get("min_ebfmi"), 2) if s else "-", f"{o['seconds']:.0f}"]


def print_table(outcomes: list[dict]) -> None:
    header = ["group", "description", "run", "verdict", "code", "div", "max R-hat", "min ESS", "E-BFMI", "time s"]
    rows = [header] + [_row(o) for o in outcomes]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cmd_run(args) -> int:
    outcomes = run_groups(args)
    print()
    print_table(outcomes)
    summary = write_summary(Path(args.root), args.run_id)
    print(f"\nsummary: {summary}")
    crashed = [o["group"] for o in outcomes if o["status"] == "crashed"]
    if crashed:
        print(f"crashed: group(s) {', '.join(crashed)} - see their notebooks under {Path(args.root) / 'results'}", file=sys.stderr)
        return 1
    return 0


def copy_notebooks(dest, overwrite: bool = False) -> list[Path]:
    """Copy the group notebooks into ``dest`` for interactive use (JupyterLab: open one, run all)."""
    import shutil

    dest = Path(dest)
    sources = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    clashes = [dest / s.name for s in sources if (dest / s.name).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{clashes[0]} already exists (and {len(clashes) - 1} more); pass --overwrite to replace them.")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(s, dest / s.name)) for s in sources]


def cmd_notebooks(args) -> int:
    for path in copy_notebooks(args.dest, args.overwrite):
        print(f"wrote {path}")
    print(f"open them with `jupyter lab {args.dest}` (needs `pip install gimbal[interactive]`); each runs top to bottom "
          "with its default parameters and writes the seed's tree under tests/diagnostics/ of the folder it runs in.")
    return 0


def register(dsub) -> None:
    """Add ``gimbal diag run`` and ``gimbal diag notebooks`` to the ``diag`` sub-parsers."""
    q = dsub.add_parser("notebooks", help="copy the group notebooks into a folder, to run them in JupyterLab",
                        description="Copy the group notebooks (shipped with gimbal) into DEST for interactive use.")
    q.add_argument("dest", help="folder to copy them into")
    q.add_argument("--overwrite", action="store_true", help="replace notebooks already there")
    q.set_defaults(func=cmd_notebooks)
    p = dsub.add_parser("run", help="run diagnostic groups with papermill",
                        description="Execute each group's notebook with papermill and write the seed's artifacts.")
    p.add_argument("--groups", default="all", help="'all', or a comma list like 1,2,3 or 8 (= 8a-8e) (default: all)")
    p.add_argument("--run-id", "--run_id", dest="run_id", default=None, help="run identifier (default: ISO timestamp)")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="finish an earlier run: run again only its groups that are missing, failed or were interrupted")
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                   help="quick: small T and draws; full: the seed's settings (2 x (300+100)); "
                        "long: the seed's T with 4 x (1000+1000), the sampling benchmarks' settings")
    add_data_arguments(p, "v0.2.1_L00_minimal")
    add_exclude_argument(p)
    add_prior_argument(p, f", in the groups whose model has pose states ({', '.join(PRIOR_GROUPS)}); the others "
                          "run as without it")
    add_sampler_arguments(p, profile_decides=True, adaptation=False, pooling=False)  # groups: one-stage warm-up
    p.add_argument("--jobs", type=positive_int, default=1, help="groups run in parallel (each in its own kernel)")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help=f"diagnostics root (default: {DEFAULT_ROOT.as_posix()})")
    p.set_defaults(func=cmd_run, fail_at=None)
