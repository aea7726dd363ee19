"""Neal's funnel (Neal 2003, "Slice sampling"): ``v ~ Normal(0, 3)``, ``x_i ~ Normal(0, exp(v / 2))``, i = 1..9.

No data: the prior itself is the funnel. Known answer: divergences at low ``v`` (the neck, where ``x`` is
tightly constrained) and a biased ``v`` from the centered form; the non-centered form
``x = exp(v / 2) * x_raw`` samples it exactly.
"""

import pymc as pm

with pm.Model(coords={"i": range(9)}) as model:
    v = pm.Normal("v", 0.0, 3.0)
    pm.Normal("x", 0.0, pm.math.exp(v / 2), dims="i")
