"""``python -m benchmarks {scaling,sampling} [--quick] [--dataset NAME] [--T 80,200]``: results in benchmarks/results/."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="GIMBAL speed, memory and convergence benchmarks.")
    p.add_argument("which", choices=("scaling", "sampling", "all"))
    p.add_argument("--quick", action="store_true", help="small T and few draws (a smoke run)")
    p.add_argument("--dataset", action="append", help="dataset name (repeatable; default: v0.2.1_L00_minimal)")
    p.add_argument("--T", default=None, help="comma list of sequence lengths (default: the benchmark's)")
    p.add_argument("--repeats", type=int, default=1, help="scaling: repeats per T (medians are reported)")
    p.add_argument("--chains", type=int, default=None)
    p.add_argument("--tune", type=int, default=None)
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--adaptation", choices=("diag", "low_rank"), default="diag")
    args = p.parse_args(argv)
    lengths = tuple(int(t) for t in args.T.split(",")) if args.T else None
    datasets = args.dataset or ["v0.2.1_L00_minimal"]
    from . import sampling, scaling

    for ds in datasets:
        if args.which in ("scaling", "all"):
            print(f"scaling benchmark on {ds}")
            scaling.run(ds, quick=args.quick, lengths=lengths, repeats=args.repeats)
        if args.which in ("sampling", "all"):
            print(f"sampling benchmark on {ds}")
            sampling.run(ds, quick=args.quick, lengths=lengths, chains=args.chains, tune=args.tune, draws=args.draws,
                         adaptation=args.adaptation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
