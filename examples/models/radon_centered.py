"""A centered hierarchical regression, radon-like (simulated: the Minnesota radon data are not shipped).

85 counties with 1 to 10 houses each (919 in Gelman & Hill's data; here a smaller, sparser draw, seed 1),
log radon ~ Normal(a[county] + b * floor, sigma), a[county] ~ Normal(mu_a, sigma_a). With few houses per
county and a small between-county spread the centered form is a funnel in (sigma_a, a). Known answer
(Gelman & Hill 2007; Wiecki, "Why hierarchical models are awesome, tricky, and Bayesian"): divergences at
small sigma_a; the non-centered ``a = mu_a + sigma_a * a_raw`` removes them.
"""

import numpy as np
import pymc as pm

rng = np.random.default_rng(1)
n_county = 85
houses = rng.integers(1, 4, n_county)
county = np.repeat(np.arange(n_county), houses)
floor = rng.integers(0, 2, county.size)
a_true = rng.normal(1.5, 0.1, n_county)
log_radon = rng.normal(a_true[county] - 0.6 * floor, 0.7)

with pm.Model(coords={"county": np.arange(n_county)}) as model:
    mu_a = pm.Normal("mu_a", 0.0, 5.0)
    sigma_a = pm.HalfNormal("sigma_a", 1.0)
    a = pm.Normal("a", mu_a, sigma_a, dims="county")
    b = pm.Normal("b", 0.0, 1.0)
    sigma = pm.HalfNormal("sigma", 1.0)
    pm.Normal("log_radon", a[county] + b * floor, sigma, observed=log_radon)
