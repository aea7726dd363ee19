"""A two-component normal mixture with exchangeable priors on well-separated data (simulated, seed 0).

The likelihood is invariant to swapping the components' labels, so the posterior has two mirror-image modes;
each chain picks one. Known answer (Jasra, Holmes & Stephens 2005; Stan's "mixture models" guide): no
divergences, R-hat far above 1 on the component means, and chains that agree once their labels are permuted
(label switching); the fix is an ordering constraint or other identifying restriction.
"""

import numpy as np
import pymc as pm

rng = np.random.default_rng(0)
y = np.concatenate([rng.normal(-3.0, 1.0, 150), rng.normal(3.0, 1.0, 150)])

with pm.Model(coords={"component": [0, 1]}) as model:
    w = pm.Dirichlet("w", np.ones(2), dims="component")
    mu = pm.Normal("mu", 0.0, 10.0, dims="component")
    sd = pm.HalfNormal("sd", 2.0)
    pm.NormalMixture("y", w=w, mu=mu, sigma=sd, observed=y)
