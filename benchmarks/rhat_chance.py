"""How large a maximum R-hat perfectly converged chains reach by chance (``gimbal.diagnostics.chance.chance_max_rhat``).

The issue's bar, R-hat <= 1.01 for *every* latent, is a maximum over tens of
thousands of elements at T = 1800. This table gives the reference: the worst
rank-normalized split R-hat of exactly stationary chains, for the trace sizes
and ESS-per-draw fractions that the sampling benchmarks measure.
"""

from __future__ import annotations

import time

from .common import machine, write_result

# 21,600 and 97,200: every position of the 4- and 18-keypoint datasets at T = 1800; ESS per draw from a
# sticky 0.25 to the antithetic 2 that NUTS often reaches on near-Gaussian positions
FULL = {"n_elements": (21_600, 97_200), "ess_fraction": (0.25, 0.5, 1.0, 2.0)}
QUICK = {"n_elements": (2_000,), "ess_fraction": (0.4, 1.0)}


def run(chains: int = 4, draws: int = 1000, quick: bool = False, seed: int = 0) -> dict:
    from gimbal.diagnostics.chance import chance_max_rhat

    grid = QUICK if quick else FULL
    rows = []
    for n in grid["n_elements"]:
        for f in grid["ess_fraction"]:
            t0 = time.perf_counter()
            worst = chance_max_rhat(chains, draws, n, ess_fraction=f, seed=seed)
            rows.append({"chains": chains, "draws": draws, "n_elements": n, "ess_fraction": f,
                         "ess_bulk": f * chains * draws, "chance_max_rhat": worst, "seconds": time.perf_counter() - t0})
            print(f"  {n:6d} elements, ESS/draw {f:.2f} (ESS {f * chains * draws:.0f}): max R-hat by chance {worst:.4f}",
                  flush=True)
    payload = {"benchmark": "rhat_chance", "dataset": "simulated stationary AR(1) chains", "quick": quick,
               "machine": machine(), "rows": rows}
    write_result(f"rhat_chance{'_quick' if quick else ''}", payload)
    return payload
