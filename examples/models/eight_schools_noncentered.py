"""Eight schools, non-centered: ``theta = mu + tau * theta_raw`` with ``theta_raw ~ Normal(0, 1)``.

The same model as ``eight_schools_centered.py`` written so that the sampler sees independent standard normals
instead of a funnel. Known answer (pymc-examples, Betancourt's case study): no divergences, converged chains.
"""

import numpy as np
import pymc as pm

y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

with pm.Model(coords={"school": np.arange(8)}) as model:
    mu = pm.Normal("mu", 0.0, 5.0)
    tau = pm.HalfCauchy("tau", 5.0)
    theta_raw = pm.Normal("theta_raw", 0.0, 1.0, dims="school")
    theta = pm.Deterministic("theta", mu + tau * theta_raw, dims="school")
    pm.Normal("obs", theta, sigma, observed=y, dims="school")
