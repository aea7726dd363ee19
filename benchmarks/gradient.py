"""One logp + gradient of each model the T = 1800 time target compares, side by side in one process.

The sampling time of a recording is (gradients per draw) x (cost of one gradient). This benchmark measures the
second factor for the model the seed's study times (``rodent18_multistate``, the seed's observation model, pose
states from the data), the default model on the same recording (which has no detector scores), the default model
on ``rodent18_realistic`` (whose scores it uses as a covariate: log-odds per detection instead of per camera and
keypoint) without and with a trained prior, and the latter with the scores left out (what they cost). All models are compiled first, then timed in interleaved rounds at their initial point, so a
machine that slows down mid-run slows every row alike; each row reports its median and its ratio to the seed's.
Results go to ``benchmarks/results/gradient_T{T}.json`` (the book's Performance page shows them).
"""

from __future__ import annotations

import time

import numpy as np

from .common import SEED_MODEL, dataset_of_length, logp_grad_callable, logp_grad_times, machine, write_result

BASELINE = "seed's model (seed observation model, states from the data)"


def _configurations(n_states: int):
    """``(label, dataset, build_model options)`` for each row (the trained prior is fitted once, for all rows)."""
    from .observation import DATASET, train_prior

    prior = train_prior(n_states, 0)
    return [
        (BASELINE, "rodent18_multistate", dict(SEED_MODEL)),
        ("default model (no detector scores in this dataset)", "rodent18_multistate", {}),
        ("default model (with the detector scores)", DATASET, {}),
        (f"default model + trained prior ({n_states} states)", DATASET, dict(prior=prior)),
        (f"default model + trained prior ({n_states} states), scores left out", DATASET,
         dict(prior=prior, confidence=False)),
    ]


def run(*, T: int = 1800, n_states: int = 4, rounds: int = 5, evals_per_round: int = 40, quick: bool = False,
        out: bool = True) -> dict:
    """Compile every configuration at ``T`` frames, then time ``rounds`` x ``evals_per_round`` calls of each."""
    from gimbal.model.build import build_model
    from gimbal.model.fitting import compile_nutpie

    if quick:
        T, rounds, evals_per_round = min(T, 100), 2, 10
    rows, calls = [], []
    for label, dataset, options in _configurations(n_states):
        ds = dataset_of_length(dataset, T)
        t0 = time.perf_counter()
        model = build_model(ds, validate=False, **options)
        compiled = compile_nutpie(model, jitter=False)
        f, x0, _ = logp_grad_callable(compiled, model)
        logp, _ = f(x0)
        if not np.isfinite(logp):
            raise RuntimeError(f"{label} on {dataset}: the log density at the initial point is {logp}")
        rows.append({"configuration": label, "dataset": dataset, "T": T, "n_states": model.gimbal_config.n_states,
                     "observation": model.gimbal_config.observation, "outlier_model": model.gimbal_config.outlier_model,
                     "confidence": model.gimbal_config.confidence, "n_parameters": int(x0.size),
                     "build_compile_s": round(time.perf_counter() - t0, 2)})
        calls.append((f, x0, []))
        print(f"compiled: {label} on {dataset} ({x0.size} parameters)", flush=True)
    for r in range(rounds):
        for f, x0, times in calls:
            times.extend(logp_grad_times(f, x0, evals_per_round))
        print(f"round {r + 1}/{rounds} timed", flush=True)
    for row, (_, _, times) in zip(rows, calls):
        ms = 1e3 * np.asarray(times)
        row.update({"n_evals": int(ms.size), "logp_grad_median_ms": round(float(np.median(ms)), 3),
                    "logp_grad_p10_ms": round(float(np.percentile(ms, 10)), 3),
                    "logp_grad_p90_ms": round(float(np.percentile(ms, 90)), 3)})
    base = rows[0]["logp_grad_median_ms"]
    for row in rows:
        row["ratio_to_seed_model"] = round(row["logp_grad_median_ms"] / base, 3)
    result = {"benchmark": "gradient", "dataset": ", ".join(dict.fromkeys(r["dataset"] for r in rows)), "T": T,
              "quick": quick, "rounds": rounds, "evals_per_round": evals_per_round, "machine": machine(), "rows": rows}
    if out:
        path = write_result(f"gradient_T{T}" + ("_quick" if quick else ""), result)
        print(f"wrote {path}")
    return result
