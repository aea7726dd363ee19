"""Pooled warm-up (gimbal.model.pooling): which positions count as disputed, which explanation the start takes, and
the two-stage run inside sample_model."""

import numpy as np
import pytensor.tensor as pt
import pytest
import xarray as xr

from gimbal.datasets import load_dataset
from gimbal.model import pooling
from gimbal.model.build import build_model
from gimbal.model.fitting import sample_model


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("rodent18_realistic", max_T=10)
    return ds, build_model(ds, seed=0)


def _constrained_start(model) -> dict:
    """Each free variable's constrained value at the model's initial point."""
    ip = model.initial_point()
    out = {}
    for rv in model.free_RVs:
        value = ip[model.rvs_to_values[rv].name]
        transform = model.rvs_to_transforms.get(rv)
        out[rv.name] = value if transform is None else transform.backward(pt.as_tensor(value), *rv.owner.inputs).eval()
    return out


def _stage(model, ds, x_by_chain, draws=6, seed=0, noise=0.05):
    """A first stage's window: every chain at the start, its positions ``x_by_chain[c]`` plus ``noise`` (mm)."""
    rng = np.random.default_rng(seed)
    start = _constrained_start(model)
    data = {}
    for name, value in start.items():
        value = np.asarray(value, dtype=float)
        if name == "x":
            arr = np.stack([x[None] + noise * rng.standard_normal((draws, *x.shape)) for x in x_by_chain])
            data[name] = (("chain", "draw", "frame", "keypoint", "xyz"), arr)
        else:
            arr = np.broadcast_to(value, (len(x_by_chain), draws, *value.shape)).copy()
            data[name] = (("chain", "draw", *[f"{name}_dim_{i}" for i in range(value.ndim)]), arr)
    return xr.Dataset(data, coords={"keypoint": [str(k) for k in ds["keypoint"].values]}), start


def test_stages_split_the_warmup_and_need_two_chains_and_600_draws():
    assert pooling.stages(1000, 4) == (500 - pooling.WINDOW, pooling.WINDOW, 500)
    first, window, second = pooling.stages(601, 2)
    assert first + window + second == 601 and second == pooling.MIN_STAGE_TUNE
    assert pooling.stages(599, 4) is None  # too short for a second warm-up of MIN_STAGE_TUNE
    assert pooling.stages(1000, 1) is None  # one chain: nothing to pool


def test_disputed_runs_find_where_chain_means_part():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 40, 30, 4, 3))  # chains, draws, frames, keypoints, xyz; within sd ~1.7 in 3D
    x[2, :, 10:12, 1] += 20.0  # one chain elsewhere at keypoint 1, frames 10-11
    x[1, :, 13, 1] += 20.0  # two frames on, another chain: the same run (gap <= RUN_GAP)
    x[0, :, 25, 3] -= 30.0  # a second, more disputed run
    disputed, runs = pooling.disputed_runs(*pooling.chain_spread(x))
    assert set(zip(*np.nonzero(disputed))) == {(10, 1), (11, 1), (13, 1), (25, 3)}
    assert runs == [(3, 24, 26), (1, 9, 14)]  # widened by a frame each side; the most disputed first
    x[:, :, 25, 3] = 0.0  # every chain at one point, no spread at all: not disputed (0 apart)
    assert (25, 3) not in set(zip(*np.nonzero(pooling.disputed_runs(*pooling.chain_spread(x))[0])))


def test_pooled_start_takes_another_chains_better_explanation_with_its_descendants(small):
    ds, model = small
    names = [str(k) for k in ds["keypoint"].values]
    parents = np.asarray(model.gimbal_skeleton.parents)
    elbow, arm, knee, shin = (names.index(n) for n in ("ElbowL", "ArmL", "KneeL", "ShinL"))
    assert parents[arm] == elbow and parents[shin] == knee
    x0 = np.asarray(_constrained_start(model)["x"], dtype=float)
    bad_arm, bad_leg = x0.copy(), x0.copy()
    bad_arm[2:4, [elbow, arm]] += 40.0  # chain 0: the elbow (and the arm below it) elsewhere in frames 2-3
    bad_leg[5:8, [knee, shin]] += 40.0  # chain 1: knee and shin elsewhere in frames 5-7 (worse: more frames)
    stage, start = _stage(model, ds, [bad_arm, bad_leg])
    logp = model.compile_logp()
    value = model.initial_point()

    pooled = pooling.pooled_start(model, stage)

    assert pooled.base == 0  # the chain whose last draw has the higher log density
    assert pooled.disputed_positions == 2 * 2 + 3 * 2
    assert pooled.runs_compared == 4  # each keypoint's own run; the arm's is settled once the elbow's is taken
    assert len(pooled.repairs) == 1  # the leg stays as chain 0 has it: chain 1's explanation there is worse
    repair = pooled.repairs[0]
    assert (repair.keypoint, repair.first, repair.last, repair.donor) == ("ElbowL", 1, 4, 1)
    last = [stage["x"].isel(chain=c, draw=-1).values for c in range(2)]
    x = pooled.point["x"]
    np.testing.assert_array_equal(x[1:5, [elbow, arm]], last[1][1:5][:, [elbow, arm]])  # the arm came along
    np.testing.assert_array_equal(x[5:8], last[0][5:8])
    others = [k for k in range(len(names)) if k not in (elbow, arm)]
    np.testing.assert_array_equal(x[:, others], last[0][:, others])
    # the recorded gain is the model's own log-density difference, and more than the margin
    gain = float(logp({**value, "x": x})) - float(logp({**value, "x": last[0]}))
    assert repair.gain == pytest.approx(gain, rel=1e-9, abs=1e-6)
    assert repair.gain > pooling.MARGIN
    for name in start:
        if name != "x":
            np.testing.assert_array_equal(pooled.point[name], stage[name].isel(chain=0, draw=-1).values)
    assert pooled.left_positions == 0  # every other explanation is worse by more than the margin
    assert "ElbowL 1-4" in pooled.text() and pooled.as_dict()["repairs"][0]["donor"] == 1

    # two explanations of the leg about as good (chain 1's knee and shin 0.2 mm further): kept, and counted as left
    near = bad_arm.copy()
    near[5:8, [knee, shin]] += 0.2
    tie, _ = _stage(model, ds, [bad_arm, near], noise=0.01)
    undecided = pooling.pooled_start(model, tie, np.array([0.0, -1.0]))
    assert undecided.base == 0 and undecided.repairs == ()
    assert undecided.left_positions == 3 * 2 and "6 disputed positions kept as chain 0 has them" in undecided.text()
    assert undecided.chain_logp == (0.0, -1.0) and "from chain 0's (log density of the others -1)" in undecided.text()

    none = pooling.pooled_start(model, stage, margin=np.inf)  # nothing is ever worth an infinite margin
    assert none.repairs == () and np.array_equal(none.point["x"], last[0])


def test_sample_model_pools_in_two_stages_from_the_pooled_point(small, tmp_path, monkeypatch):
    import nutpie

    import gimbal.model.fitting as fitting

    ds, model = small
    trace_dir = tmp_path / "draws"
    compiled = []
    compile_once = fitting.compile_nutpie
    monkeypatch.setattr(fitting, "compile_nutpie",
                        lambda *a, **k: compiled.append(compile_once(*a, **k)) or compiled[-1])
    seeds, sample_once = [], nutpie.sample
    monkeypatch.setattr(nutpie, "sample", lambda *a, **k: seeds.append(k["seed"]) or sample_once(*a, **k))
    fit = sample_model(model, chains=2, tune=600, draws=20, seed=3, progress=False, trace_dir=trace_dir, maxdepth=3)
    assert len(compiled) == 1  # the second stage reuses the compiled model with the new start (no second compile)
    # the second stage has a random stream of its own, the same for the same seed
    assert seeds == [3, pooling.second_stage_seed(3)] and seeds[1] not in (3, pooling.second_stage_seed(4))
    assert fit.pooled is not None and fit.pooled.base in (0, 1)
    assert fit.trace.posterior.sizes["draw"] == 20
    assert fit.trace["warmup_posterior"].sizes["draw"] == 300  # the second stage's warm-up: half of it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draws"]  # the first stage's store is gone

    # the second stage starts where the pooling says: both chains 20 mm (per axis) from the model's start
    x0 = np.asarray(_constrained_start(model)["x"], dtype=float)
    stage, _ = _stage(model, ds, [x0 + 20.0, x0 + 20.0])
    moved = fitting._starting_at(compiled[0], model, pooling.pooled_start(model, stage), backend="numba", jitter=False)
    draw = nutpie.sample(moved, chains=1, tune=10, draws=1, seed=0, progress_bar=False, maxdepth=1)
    x = draw.warmup_posterior["x"].values[0, 0]  # after one leapfrog step
    assert np.abs(x - (x0 + 20.0)).max() < 5.0 and np.abs(x - x0).min() > 10.0

    def refuse(*args, **kwargs):
        raise AssertionError("pooled_start ran")

    monkeypatch.setattr(pooling, "pooled_start", refuse)
    monkeypatch.setattr(fitting, "compile_nutpie", lambda *a, **k: compiled[0])  # the same model: no compile
    plain = sample_model(model, chains=2, tune=600, draws=5, seed=3, progress=False, maxdepth=3, pooled_warmup=False)
    assert plain.pooled is None and plain.trace["warmup_posterior"].sizes["draw"] == 600


def test_gimbal_fit_says_how_the_warmup_is_split(small):
    from gimbal.cli import _pooling_text
    from gimbal.settings import SamplerSettings

    _, model = small
    assert "two stages (300 + 300)" in _pooling_text(model, SamplerSettings(chains=2, tune=600))
    assert _pooling_text(model, SamplerSettings(chains=2, tune=599)) == ""
    assert _pooling_text(model, SamplerSettings(chains=2, tune=600, pooled_warmup=False)) == ""
    assert _pooling_text(model, SamplerSettings(chains=2, tune=600, sampler="pymc")) == ""
