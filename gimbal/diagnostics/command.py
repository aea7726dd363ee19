"""``gimbal diag model FILE.py``: the engine's command, for any PyMC model (a file that defines ``model``)."""

from __future__ import annotations

import runpy
from pathlib import Path

from ..errors import UsageError
from ..settings import positive_int, nonnegative_int, probability, tree_depth

__all__ = ["load_model_file", "register", "cmd_model"]


def load_model_file(path, variable: str = "model"):
    """Run a Python file and return its PyMC model (the object named ``variable``)."""
    import pymc as pm

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist.")
    namespace = runpy.run_path(str(path), run_name="__gimbal_diag__")
    model = namespace.get(variable)
    if not isinstance(model, pm.Model):
        found = [k for k, v in namespace.items() if isinstance(v, pm.Model)]
        raise UsageError(f"{path} defines no PyMC model named '{variable}'"
                         + (f"; it has {', '.join(found)}: pass --model-name {found[0]}." if found else
                            ": build one with `with pm.Model() as model: ...`."))
    return model


def cmd_model(args) -> int:
    from .diagnose import diagnose, write_diagnosis

    if args.trace and len(args.files) > 1:
        raise UsageError("--trace diagnoses one model's trace: give one model file with it (or none).")
    out = Path(args.out)
    if not args.files and not args.trace:
        if not args.book:
            raise UsageError("give model files (FILE.py defining `model`), --trace FILE.nc, or --book to build the "
                             f"book of the pages already in {out}.")
        return _book(out)
    jobs = [(Path(f).stem, f) for f in args.files] or [(Path(args.trace).stem, None)]
    for name, _ in jobs:  # nothing is sampled if a page would be overwritten
        if (out / name / f"{name}.md").exists() and not args.overwrite:
            raise UsageError(f"{out / name / (name + '.md')} exists; pass --overwrite to replace it.")
    for name, file in jobs:
        model = load_model_file(file, args.model_name) if file else None
        trace = None
        if args.trace:
            import xarray as xr

            trace = xr.open_datatree(args.trace).load()
        print(f"{name}: {'diagnosing the trace' if trace is not None else f'sampling {args.chains} x ({args.tune} + {args.draws})'} ...",
              flush=True)
        d = diagnose(model, trace=trace, name=name, chains=args.chains, tune=args.tune, draws=args.draws,
                     seed=args.seed, target_accept=args.target_accept, maxdepth=args.maxdepth)
        page = write_diagnosis(d, out, overwrite=args.overwrite)
        print(f"  {d.verdict.status} ({d.verdict.code}): {d.verdict.interpretation}\n  next: {d.verdict.next_action}\n"
              f"  page: {page}")
    return _book(out) if args.book else 0


def _book(out: Path) -> int:
    from .book import build_model_book

    try:
        landing = build_model_book(out)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    print(f"book built: {landing}")
    return 0


def register(dsub) -> None:
    p = dsub.add_parser("model", help="diagnose any PyMC model (a .py file defining `model`) or a saved trace",
                        description="Run the engine's generic checks on any PyMC model: log density and gradient at "
                                    "the start point, finite differences, NUTS sampling, divergence and funnel "
                                    "localization, chains in modes and label switching, non-convergence "
                                    "localization; writes a JSON, plots and a report page per model, and with --book an "
                                    "HTML book of them (OUT/_build/html/index.html).")
    p.add_argument("files", nargs="*", help="Python files that each define a PyMC model named `model`")
    p.add_argument("--model-name", default="model", help="the model's variable name in the files (default: model)")
    p.add_argument("--trace", default=None, help="a saved NUTS trace (netCDF) to diagnose instead of sampling")
    p.add_argument("--out", default="model_diagnostics", help="output folder (default: ./model_diagnostics)")
    p.add_argument("--chains", type=positive_int, default=4, help="chains (default: 4)")
    p.add_argument("--tune", type=nonnegative_int, default=1000, help="warm-up draws per chain (default: 1000)")
    p.add_argument("--draws", type=positive_int, default=1000, help="kept draws per chain (default: 1000)")
    p.add_argument("--target-accept", type=probability, default=0.8, help="NUTS step-size target (default: 0.8)")
    p.add_argument("--maxdepth", type=tree_depth, default=10, help="largest NUTS tree depth (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing pages")
    p.add_argument("--book", action="store_true",
                   help="then build an HTML book of every page in --out (alone: only build the book)")
    p.set_defaults(func=cmd_model)
