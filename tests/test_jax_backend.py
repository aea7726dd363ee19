"""The JAX backend on CPU: same log-density and gradient as numba, and nutpie samples with it."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from gimbal.datasets import load_dataset
from gimbal.model.fitting import position_errors, sample_model
from gimbal.model.build import build_model

jax = pytest.importorskip("jax")


@pytest.fixture(scope="module")
def models():
    ds = load_dataset("v0.2.1_L02_outliers", max_T=20)
    return ds, build_model(ds, n_states=2)


@pytest.mark.parametrize("hmm_algorithm", ["sequential", "parallel"])
def test_jax_logp_and_gradient_match_numba(models, hmm_algorithm):
    """The plain-graph model compiled by JAX against the fused model compiled by numba."""
    from pymc.model.transform.optimization import freeze_dims_and_data

    ds, fused = models
    # no start gate: it would compile this plain graph with numba too, which is not what is compared here
    graph = build_model(ds, n_states=2, kernels="graph", hmm_algorithm=hmm_algorithm, init=fused.gimbal_init,
                        validate=False)
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
    ds, fused = models
    graph = build_model(ds, n_states=2, kernels="graph", hmm_algorithm="parallel", init=fused.gimbal_init,
                        validate=False)  # the start gate's numba compile of this graph is not what is tested here
    fit = sample_model(graph, backend="jax", chains=2, tune=150, draws=100, seed=3, progress=False)
    stats = fit.trace["sample_stats"]
    assert int(stats["diverging"].sum()) == 0
    assert fit.trace["posterior"]["x"].shape == (2, 100, 20, 4, 3)
    err = position_errors(fit.trace, ds)
    assert err["posterior_mean"]["median"] < err["triangulation"]["median"]


def test_jax_backend_refuses_fused_kernels_with_the_fix(models):
    ds, fused = models
    with pytest.raises(ValueError, match="kernels='graph'"):
        sample_model(fused, backend="jax", chains=1, tune=10, draws=10, progress=False)
    whitened = build_model(ds, n_states=2, kernels="graph", hmm_algorithm="parallel", whitened_tracks="all",
                           validate=False)
    with pytest.raises(ValueError, match=r"\(BidiagonalSolve\).*whitened_tracks='none'"):
        sample_model(whitened, backend="jax", chains=1, tune=10, draws=10, progress=False)


@pytest.mark.slow
def test_cli_fit_with_the_jax_backend_uses_the_parallel_hmm(tmp_path):
    """`gimbal fit --backend jax` builds the plain graph with the tree-form HMM and records where JAX ran."""
    import json
    import subprocess
    import sys

    out = tmp_path / "fit"
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--dataset", "v0.2.1_L02_outliers", "--max-T", "12", "--n-states", "2",
           "--backend", "jax",
           "--chains", "2", "--tune", "60", "--draws", "30", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["kernels"] == "graph" and summary["model"]["hmm_algorithm"] == "parallel"
    assert summary["model"]["n_states"] > 1 and summary["sampler"]["device"].startswith(("cpu", "gpu"))


def test_backend_benchmark_compares_every_variant_with_numba():
    """`python -m benchmarks backends` times nutpie's own logp+gradient callables and checks them against numba."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's benchmarks/ package
    from benchmarks.backends import VARIANTS, measure

    rows = measure("v0.2.1_L02_outliers", 9, n_evals=3)
    assert [r["variant"] for r in rows] == list(VARIANTS)
    for r in rows:
        assert r["n_parameters"] == rows[0]["n_parameters"] and r["logp_grad_median_ms"] > 0
        assert r["logp_abs_diff_vs_numba"] < 1e-8 and r["grad_max_rel_diff_vs_numba"] < 1e-10, r


@pytest.mark.slow
def test_diagnostic_group_runs_with_the_jax_backend_and_its_sampler_settings(tmp_path):
    """`gimbal diag run --backend jax --maxdepth --target-accept` reaches the notebook, the model and the reproduce command."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from gimbal.divergence import schema
    from gimbal.divergence.paths import make_paths
    from gimbal.divergence.book import _environment_page
    from gimbal.divergence.groups import group_desc

    cmd = [sys.executable, "-m", "gimbal.cli", "diag", "run", "--groups", "6", "--profile", "quick", "--backend", "jax",
           "--maxdepth", "6", "--target-accept", "0.85", "--run-id", "jax-run", "--root", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads(make_paths(group_desc("6"), "jax-run", tmp_path).results_run.read_text())
    schema.validate_results(payload)
    h = payload["header"]
    assert payload["status"] == "ok" and h["config"]["kernels"] == "graph" and h["config"]["hmm_algorithm"] == "parallel"
    s = h["sampling_settings"]
    assert (s["backend"], s["maxdepth"], s["target_accept"]) == ("jax", 6, 0.85) and s["device"].startswith(("cpu", "gpu"))
    assert payload["sampling"]["mean_tree_depth"] <= 6
    page = _environment_page([payload], "jax-run")
    assert "--target-accept 0.85 --maxdepth 6 --backend jax" in page
    assert h["parameters"]["backend"] == "jax"
    unsampled = {**payload, "header": {**h, "group": "2", "sampling_settings": None}}  # e.g. the gradient group
    assert "--seed 123 --max-T" in _environment_page([unsampled], "x") and "--backend jax" in _environment_page([unsampled], "x")
    bad = subprocess.run(cmd[:-4] + ["--maxdepth", "0", "--run-id", "bad", "--root", str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--maxdepth: the value must be an integer from 1 to 20, got '0'" in bad.stderr
