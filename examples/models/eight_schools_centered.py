"""Eight schools, centered (Rubin 1981; the pymc-examples case study "Diagnosing biased inference with divergences").

The school effects ``theta`` are drawn around ``mu`` with scale ``tau``: with only eight noisy estimates the
posterior of ``(tau, theta)`` is a funnel, which NUTS cannot fit with one step size. Known answer: divergences,
concentrated at small ``tau``; the cure is the non-centered form (``eight_schools_noncentered.py``).

Run: ``gimbal diag model examples/models/eight_schools_centered.py``.
"""

import numpy as np
import pymc as pm

y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

with pm.Model(coords={"school": np.arange(8)}) as model:
    mu = pm.Normal("mu", 0.0, 5.0)
    tau = pm.HalfCauchy("tau", 5.0)
    theta = pm.Normal("theta", mu, tau, dims="school")
    pm.Normal("obs", theta, sigma, observed=y, dims="school")
