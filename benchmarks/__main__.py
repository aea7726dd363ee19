"""``python -m benchmarks {scaling,sampling,backends,gradient,ablation,windowed,rhat-chance,prior-transfer,observation,all} [--quick] [--dataset NAME] [--T 80,200]``.

Results are JSON files in benchmarks/results/; the report book's Performance and
Ablation pages render them.
"""

from __future__ import annotations

import argparse
import sys

from gimbal.settings import add_sampler_arguments, positive_int


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="GIMBAL speed, memory and convergence benchmarks.")
    p.add_argument("which", choices=("scaling", "sampling", "backends", "gradient", "ablation", "windowed", "rhat-chance",
                                        "prior-transfer", "observation", "all"))
    p.add_argument("--quick", action="store_true", help="small T and few draws (a smoke run)")
    p.add_argument("--dataset", action="append",
                   help="dataset name (repeatable; default: v0.2.1_L00_minimal, rodent18_multistate for ablation)")
    p.add_argument("--T", default=None, help="comma list of sequence lengths (default: the benchmark's; ablation: first)")
    p.add_argument("--variants", default=None,
                   help="ablation, backends: comma list of variant labels; observation: separated by ';' (its labels hold commas) (default: all)")
    p.add_argument("--variant-timeout", type=float, default=None,
                   help="ablation: run each variant in a child process and record it as timed out after this many seconds")
    p.add_argument("--states", type=positive_int, default=4,
                   help="prior-transfer, observation, gradient: pose states of the trained prior")
    p.add_argument("--window", type=positive_int, default=None,
                   help="windowed: kept frames per window (default 200); observation: sample in windows of this many "
                        "kept frames instead of the whole sequence")
    p.add_argument("--overlap", type=int, default=10, help="windowed, observation with --window: extra frames sampled on "
                                                          "each side")
    p.add_argument("--repeats", type=positive_int, default=1, help="scaling: repeats per T (medians are reported)")
    p.add_argument("--trace-on-disk", action="store_true",
                   help="sampling, observation: nutpie writes draws to a temporary zarr store instead of memory")
    p.add_argument("--moves", action="store_true",
                   help="observation: PyMC's NUTS with moves between explanations (rows labelled '+ moves (PyMC NUTS)'; "
                        "--sampler pymc alone: PyMC's NUTS without them, the control)")
    # the sampler options of `gimbal fit` and `gimbal diag run`, declared once (--seed: a repeat with another seed is a
    # new row of the sampling benchmark); chains/tune/draws default to each benchmark's own
    add_sampler_arguments(p, seed=1, profile_decides="the benchmark's")
    args = p.parse_args(argv)
    if not args.pooled_warmup and args.which not in ("observation", "sampling"):
        p.error(f"--no-pooled-warmup applies to the observation and sampling benchmarks, not {args.which}.")
    lengths = tuple(int(t) for t in args.T.split(",")) if args.T else None
    from . import ablation, backends, gradient, observation, prior_transfer, rhat_chance, sampling, scaling, windowed

    if args.which == "gradient":
        print("one logp + gradient of the seed's model and the default model (+ trained prior), side by side")
        gradient.run(T=lengths[0] if lengths else 1800, n_states=args.states, quick=args.quick)
        return 0

    if args.which == "prior-transfer":
        print("trained prior: train on DANNCE mouse 1's 3D labels, test on mouse 2 with detector-like errors")
        prior_transfer.run(n_states=args.states, chains=args.chains or 4, tune=1000 if args.tune is None else args.tune,
                           draws=args.draws or 1000, seed=args.seed, quick=args.quick)
        return 0

    if args.which == "observation":
        print("observation models on rodent18_realistic (a simulated real detector), prior trained on another seed")
        observation.run(T=lengths[0] if lengths else 100, n_states=args.states, chains=args.chains or 4,
                        tune=1000 if args.tune is None else args.tune, draws=args.draws or 1000, seed=args.seed,
                        variants=args.variants.split(";") if args.variants else None, quick=args.quick,
                        maxdepth=args.maxdepth, target_accept=args.target_accept, trace_on_disk=args.trace_on_disk,
                        moves=args.moves, sampler=args.sampler, window=args.window, overlap=args.overlap,
                        pooled_warmup=args.pooled_warmup)
        return 0

    if args.which == "rhat-chance":
        print("maximum R-hat of perfectly converged chains, by chance")
        rhat_chance.run(chains=args.chains or 4, draws=args.draws or 1000, quick=args.quick)
        return 0

    if args.which == "windowed":
        for ds in args.dataset or ["rodent18_multistate"]:
            print(f"windowed benchmark on {ds}")
            windowed.run(ds, T=lengths[0] if lengths else 1800, window=args.window or 200, overlap=args.overlap,
                         chains=args.chains or 4, tune=1000 if args.tune is None else args.tune, draws=args.draws or 1000,
                         maxdepth=args.maxdepth, target_accept=args.target_accept, quick=args.quick)
        return 0

    if args.which == "ablation":
        for ds in args.dataset or ["rodent18_multistate"]:
            print(f"ablation benchmark on {ds}")
            ablation.run(ds, quick=args.quick, T=lengths[0] if lengths else None, chains=args.chains, tune=args.tune,
                         draws=args.draws, variants=args.variants.split(",") if args.variants else None,
                         timeout_s=args.variant_timeout)
        return 0
    datasets = args.dataset or ["v0.2.1_L00_minimal"]
    if args.which == "backends":
        for ds in datasets:
            print(f"backend benchmark on {ds}")
            backends.run(ds, quick=args.quick, lengths=lengths, variants=args.variants.split(",") if args.variants else None)
        return 0

    for ds in datasets:
        if args.which in ("scaling", "all"):
            print(f"scaling benchmark on {ds}")
            scaling.run(ds, quick=args.quick, lengths=lengths, repeats=args.repeats)
        if args.which in ("sampling", "all"):
            print(f"sampling benchmark on {ds}")
            sampling.run(ds, quick=args.quick, lengths=lengths, chains=args.chains, tune=args.tune, draws=args.draws,
                         adaptation=args.adaptation, maxdepth=args.maxdepth, target_accept=args.target_accept,
                         trace_on_disk=args.trace_on_disk, backend=args.backend, seed=args.seed,
                         pooled_warmup=args.pooled_warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
