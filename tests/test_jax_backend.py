"""The JAX backend on CPU: same log-density and gradient as numba, and nutpie samples with it."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from gimbal.datasets import load_dataset
from gimbal.fitting import position_errors, sample_model
from gimbal.pymc_model import build_model

jax = pytest.importorskip("jax")


@pytest.fixture(scope="module")
def models():
    ds = load_dataset("v0.2.1_L02_outliers", max_T=20)
    fused = build_model(ds, n_states=2)
    graph = build_model(ds, n_states=2, kernels="graph", init=fused.gimbal_init)
    return ds, fused, graph


def test_jax_logp_and_gradient_match_numba(models):
    """The plain-graph model compiled by JAX against the fused model compiled by numba."""
    from pymc.model.transform.optimization import freeze_dims_and_data

    _, fused, graph = models
    point = fused.initial_point()
    rng = np.random.default_rng(0)
    values = {k: v + rng.normal(scale=0.05, size=np.shape(v)) for k, v in point.items()}
    names = [v.name for v in fused.value_vars]
    results = []
    for model, mode in ((fused, "NUMBA"), (freeze_dims_and_data(graph), "JAX")):  # JAX needs static shapes
        by_name = {v.name: v for v in model.value_vars}
        inputs = [by_name[n] for n in names]
        logp = model.logp()
        fn = pytensor.function(inputs, [logp, *pt.grad(logp, inputs)], mode=mode)
        results.append(fn(*(values[n] for n in names)))
    ref, out = results
    assert float(out[0]) == pytest.approx(float(ref[0]), rel=1e-10)
    for a, b in zip(ref[1:], out[1:]):
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-7, atol=1e-8 * np.abs(a).max())


@pytest.mark.slow
def test_nutpie_samples_with_the_jax_backend(models):
    ds, _, graph = models
    fit = sample_model(graph, backend="jax", chains=2, tune=150, draws=100, seed=3, progress=False)
    stats = fit.trace["sample_stats"]
    assert int(stats["diverging"].sum()) == 0
    assert fit.trace["posterior"]["x"].shape == (2, 100, 20, 4, 3)
    err = position_errors(fit.trace, ds)
    assert err["posterior_mean"]["median"] < err["triangulation"]["median"]


def test_jax_backend_refuses_fused_kernels_with_the_fix(models):
    _, fused, _ = models
    with pytest.raises(ValueError, match="kernels='graph'"):
        sample_model(fused, backend="jax", chains=1, tune=10, draws=10, progress=False)
