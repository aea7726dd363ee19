import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gimbal.datasets import load_dataset
from gimbal.diagnostics.sampling import sampling_summary
from gimbal.model.fitting import position_errors, sample_model
from gimbal.model.build import build_model
from gimbal.model.moves import DEFAULT_ROUNDS


@pytest.mark.slow
def test_short_fit_beats_robust_triangulation_under_outliers():
    ds = load_dataset("v0.2.1_L02_outliers", max_T=40)
    model = build_model(ds)
    fit = sample_model(model, chains=2, tune=300, draws=100, seed=3, progress=False)
    summary = sampling_summary(fit.trace, wall_time_s=fit.sample_s)
    errors = position_errors(fit.trace, ds)
    assert summary["divergences"] == 0
    # 0.82 measured (seed 3) against the normalized solve's triangulation; 0.8 held against the plain solve's
    assert errors["posterior_mean"]["median"] < 0.9 * errors["triangulation"]["median"]
    assert errors["posterior_mean"]["p90"] < errors["triangulation"]["p90"]
    # bone lengths recovered
    rho = fit.trace["posterior"]["bone_length"].mean(("chain", "draw")).values
    np.testing.assert_allclose(rho, [10, 8, 8], rtol=0.03)


@pytest.mark.slow
def test_cli_fit_writes_outputs_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "fit"
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--max-T", "15", "--tune", "100", "--draws", "50", "--out", str(out), "--quiet",
           "--draws-on-disk", "--maxdepth", "6", "--exclude", "cam2:distal_left"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "left out: cam2:distal_left" in done.stdout
    fitted = load_dataset(out / "dataset.nc")  # the fit folder keeps the dataset as fitted
    assert np.isnan(fitted["observations"].values[:, 2, 2]).all() and fitted.attrs["excluded_detections"] == "cam2:distal_left"
    assert "divergences" in done.stdout and "3D error, posterior mean" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "draws.zarr").is_dir() and summary["draws_zarr"] == str(out / "draws.zarr")
    assert summary["sampler"]["maxdepth"] == 6
    assert summary["dataset"] == {"name": "v0.2.1_L00_minimal", "T": 15, "C": 3, "K": 4}
    assert summary["sampling"]["total_draws"] == 100
    support = summary["unconverged_positions"]  # every position's R-hat, by the cameras that support it
    assert support["positions"] == 15 * 4 and sum(v["positions"] for v in support["by_support"].values()) == 60
    assert "positions:" in done.stdout and "R-hat" in done.stdout.split("positions:")[-1]
    chance = summary["rhat_exceedances"]  # every coordinate of every position, read against chance
    assert chance["n_elements"] == 15 * 4 * 3
    assert chance["verdict"] in ("none", "within", "near", "beyond", "cannot_judge")
    assert support["unconverged"] <= chance["observed"] <= 3 * support["unconverged"]  # a position: its worst axis
    said = "no element above R-hat 1.01" if chance["observed"] == 0 else f"{chance['observed']:,} of 180 elements"
    assert f"R-hat against chance: {said}" in done.stdout
    assert (out / "trace.nc").stat().st_size > 0
    assert "chain_regions" in summary  # None, or the regions the chains sampled
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    windowed = subprocess.run(cmd + ["--window", "5", "--overwrite"], capture_output=True, text=True, timeout=600)
    assert windowed.returncode == 2 and "--draws-on-disk is for full-sequence fits" in windowed.stderr


def test_generated_source_goes_to_one_folder_for_this_process_and_its_children(tmp_path, monkeypatch):
    """PyTensor's generated source: one folder (not a new temporary file per compiled function), seen by child
    processes through PYTENSOR_FLAGS even where the path has a comma and a backslash; a folder already set is kept."""
    import pytensor
    from pytensor.configparser import parse_config_string

    from gimbal._generated_source import generated_source_folder

    monkeypatch.setenv("PYTENSOR_FLAGS", "floatX=float64")
    folder = tmp_path / "a,b\\c"
    with pytensor.config.change_flags(generated_src_dir=""):
        with generated_source_folder(folder) as used:
            assert used == folder and pytensor.config.generated_src_dir == str(folder)
            flags = parse_config_string(os.environ["PYTENSOR_FLAGS"])
            assert flags == {"floatX": "float64", "generated_src_dir": str(folder)}
            child = subprocess.run([sys.executable, "-c", "import pytensor; print(pytensor.config.generated_src_dir)"],
                                   capture_output=True, text=True, timeout=120)
            assert child.stdout.strip() == str(folder), child.stderr
        assert pytensor.config.generated_src_dir == "" and os.environ["PYTENSOR_FLAGS"] == "floatX=float64"
    with pytensor.config.change_flags(generated_src_dir=str(tmp_path / "mine")):
        with generated_source_folder(folder) as used:
            assert used is None and pytensor.config.generated_src_dir == str(tmp_path / "mine")


def test_windowed_fit_names_the_depth_cap_per_window():
    """`gimbal fit --window`: the windows whose draws stopped at the cap and that did not converge, the worst in full."""
    from gimbal.cli import _windows_depth_text

    def window(start, share, rhat, ess):
        return {"keep_start": start, "keep_stop": start + 20, "max_treedepth_fraction": share, "max_rhat": rhat,
                "min_ess_bulk": ess}

    windows = [window(0, 1.0, 1.03, 150.0), window(20, 0.2, 1.2, 20.0), window(40, 0.9, 1.08, 500.0),
               window(60, 1.0, 1.002, 900.0)]
    text = _windows_depth_text(windows, 5)
    # window 20 is the worst by R-hat but short trajectories are not its problem; window 60 converged
    assert text.startswith("2 of 4 windows; frames 40-59: 90% of the draws")
    assert "max R-hat 1.080" in text and text.endswith("Re-run with --maxdepth 6 (README: Long recordings).")
    assert _windows_depth_text([window(0, 0.1, 1.5, 10.0), window(20, None, None, None)], 5) == ""


@pytest.mark.slow
def test_cli_windowed_fit_stitches_every_frame(tmp_path):
    import xarray as xr

    out = tmp_path / "windowed"
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--max-T", "40", "--window", "20", "--overlap", "5", "--tune", "100",
           "--draws", "50", "--out", str(out), "--quiet"]
    temporary = tmp_path / "tmp"  # the fit's own temporary folder: nothing may be left in it (PyTensor's sources)
    temporary.mkdir()
    flags = ",".join(f for f in os.environ.get("PYTENSOR_FLAGS", "").split(",") if not f.startswith("generated_src_dir"))
    env = dict(os.environ, TMPDIR=str(temporary), TEMP=str(temporary), TMP=str(temporary), PYTENSOR_FLAGS=flags)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert not list(temporary.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert [(w["keep_start"], w["keep_stop"]) for w in summary["windowed"]["windows"]] == [(0, 20), (20, 40)]
    with xr.open_dataset(out / "trace.nc", engine="h5netcdf") as post:
        assert post["x"].sizes["frame"] == 40 and post["bone_length"].sizes["window"] == 2
    assert "3D error median" in done.stdout
    from gimbal.model.regions import ChainFindings

    for w in summary["windowed"]["windows"]:  # a window whose chains split or strand is named, the others are not
        said = ChainFindings(regions=w["chain_regions"], stranded=w["stranded_chains"]).text()
        assert (f"chains, frames {w['keep_start']}-{w['keep_stop'] - 1}:" in done.stdout) == bool(said)
    assert summary["unconverged_positions"]["positions"] == 40 * 4  # every frame of both windows, 4 keypoints
    assert summary["rhat_exceedances"]["n_elements"] == 40 * 4 * 3 and "R-hat against chance:" in done.stdout
    assert "positions:" in done.stdout and "R-hat" in done.stdout.split("positions:")[-1]


@pytest.mark.slow
def test_draws_on_disk_are_the_same_draws_and_never_overwrite(tmp_path):
    """nutpie's zarr store: same seed, same draws as in memory; a used folder is refused."""
    ds = load_dataset("v0.2.1_L00_minimal", max_T=10)
    model = build_model(ds)
    kw = dict(chains=2, tune=60, draws=30, seed=5, progress=False, save_warmup=False)
    in_memory = sample_model(model, **kw).trace
    on_disk = sample_model(model, trace_dir=tmp_path / "draws.zarr", float32_vars=("x",), **kw).trace
    x = on_disk["posterior"]["x"]
    assert x.dtype == np.float32 and "warmup_posterior" not in on_disk.children
    np.testing.assert_array_equal(x.values, in_memory["posterior"]["x"].values.astype(np.float32))
    np.testing.assert_array_equal(on_disk["posterior"]["bone_length"].values, in_memory["posterior"]["bone_length"].values)
    assert set(on_disk["posterior"].data_vars) == set(in_memory["posterior"].data_vars)
    assert sampling_summary(on_disk)["total_draws"] == 60
    np.testing.assert_array_equal(on_disk["sample_stats"]["diverging"].values, in_memory["sample_stats"]["diverging"].values)
    with pytest.raises(FileExistsError, match="not empty"):
        sample_model(model, trace_dir=tmp_path / "draws.zarr", **kw)
    with pytest.raises(ValueError, match="nutpie"):
        sample_model(model, sampler="pymc", trace_dir=tmp_path / "other", **kw)


def test_cli_reports_bad_input_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "gimbal.cli", "fit", "--dataset", "no_such_data", "--quiet"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "unknown dataset 'no_such_data'" in done.stderr and "Traceback" not in done.stderr
    excluded = subprocess.run([sys.executable, "-m", "gimbal.cli", "fit", "--exclude", "cam1:elbow", "--quiet"],
                              capture_output=True, text=True)
    assert excluded.returncode == 2 and "keypoint 'elbow' (in 'cam1:elbow') is not a keypoint" in excluded.stderr
    assert "Traceback" not in excluded.stderr
    helped = subprocess.run([sys.executable, "-m", "gimbal.cli", "fit", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--max-T" in helped.stdout


def test_unconverged_positions_are_counted_by_the_cameras_that_support_them():
    """Two chains that agree everywhere but at one keypoint seen right by one camera: that position is the one
    flagged, and it is counted among those supported by at most one camera; camera_support counts detections
    within the threshold, missing ones never."""
    import xarray as xr

    from gimbal.datasets import load_dataset
    from gimbal.model.support import UnconvergedSupport, camera_support, unconverged_support

    ds = load_dataset("v0.2.1_L00_minimal", max_T=6).copy(deep=True)
    truth = ds["positions_true"].values
    obs = ds["observations"].values  # (T, C, K, 2)
    obs[2, 1:, 3] += 80.0  # keypoint 3 at frame 2: every camera but the first far off
    obs[4, 0, 1] = np.nan  # a missing detection
    support = camera_support(truth, ds, threshold_px=10.0)
    C = ds.sizes["camera"]
    assert support[2, 3] == 1 and support[4, 1] == C - 1 and support[0, 0] == C
    rng = np.random.default_rng(0)
    x = truth[None, None] + rng.normal(0.0, 0.01, (2, 2000, *truth.shape))
    x[1, :, 2, 3] += 0.05  # the second chain elsewhere at that one position
    trace = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": (("chain", "draw", "frame", "keypoint", "xyz"), x)})})
    result = unconverged_support(trace, ds, pixel_noise=3.0)
    assert result.n_unconverged == 1 and result.n_unconverged_weak == 1
    assert result.n_positions == truth.shape[0] * truth.shape[1]
    out = result.to_json()
    assert out["unconverged_weakly_supported"] == 1 and out["fraction_unconverged_well_supported"] == 0.0
    assert result.text().startswith(f"1 of {result.n_positions} positions have R-hat > 1.01; 1 of them are supported")
    assert "one camera's ray" in result.text() and "as a whole" not in result.text()
    # the chains 5 within-chain sds apart there: they sit apart, and more draws will not bring them together
    assert result.patterns == {"separate_modes": 1} and out["patterns"] == {"separate_modes": 1}
    assert "0 mix slowly" in result.text() and "1 sit apart" in result.text()
    near = x.copy()
    near[1, :, 2, 3] -= 0.045  # half a within-chain sd apart: the same place, explored too slowly to agree yet
    slow = unconverged_support(xr.DataTree.from_dict({"posterior": xr.Dataset(
        {"x": (("chain", "draw", "frame", "keypoint", "xyz"), near)})}), ds, pixel_noise=3.0)
    assert slow.n_unconverged == 1 and slow.patterns == {"slow_mixing": 1} and "1 mix slowly" in slow.text()
    x[1] += 0.05  # the second chain elsewhere everywhere: not a matter of particular keypoints
    trace = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": (("chain", "draw", "frame", "keypoint", "xyz"), x)})})
    assert "the run as a whole" in unconverged_support(trace, ds, pixel_noise=3.0).text()
    # most unconverged positions seen by several cameras: disagreeing cameras, and the remedies for that case
    firm = UnconvergedSupport(rhat_threshold=1.01, threshold_px=10.0, by_support={1: (10, 1), 3: (500, 4)})
    assert "two groups of cameras disagree" in firm.text() and "a larger --steps-dof" in firm.text()
    assert "--steps-dof" not in result.text()


@pytest.mark.slow
def test_cli_fit_with_moves_between_explanations(tmp_path):
    """--sampler pymc --moves: PyMC's NUTS with the explanation moves; their counts land in summary.json."""
    out = tmp_path / "moves"
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--dataset", "v0.2.1_L02_outliers", "--max-T", "15", "--tune",
           "60", "--draws", "40", "--out", str(out), "--quiet", "--maxdepth", "5"]
    refused = subprocess.run(cmd + ["--moves"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--sampler pymc" in refused.stderr and "Traceback" not in refused.stderr
    # the moves score each position's walk in the world: the default frame ("auto") is refused, naming the fix
    refused = subprocess.run(cmd + ["--moves", "--sampler", "pymc"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "add --step-frame world" in refused.stderr and "Traceback" not in refused.stderr
    cmd += ["--step-frame", "world"]
    done = subprocess.run(cmd + ["--moves", "--sampler", "pymc"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "moves between explanations" in done.stdout
    moves = json.loads((out / "summary.json").read_text())["moves"]
    assert moves["candidate_runs"] > 0 and moves["tried"] > 0 and 0 < moves["accepted"] <= moves["tried"]
    assert moves["rounds"] == DEFAULT_ROUNDS
    assert f"{moves['tried']} tried over the kept draws, {moves['accepted']} accepted" in done.stdout
    windowed = subprocess.run(cmd + ["--moves", "--sampler", "pymc", "--window", "8", "--overlap", "2", "--overwrite"],
                              capture_output=True, text=True, timeout=600)
    assert windowed.returncode == 0, windowed.stderr
    assert "pymc + moves between explanations" in windowed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"]["sampler"] == "pymc" and summary["sampler"]["moves"] is True
    per_window = [w["moves"] for w in summary["windowed"]["windows"]]
    assert len(per_window) == 2 and all(m["candidate_runs"] > 0 and m["tried"] > 0 for m in per_window)
    assert all(0 <= m["accepted"] <= m["tried"] and m["rounds"] == DEFAULT_ROUNDS for m in per_window)
    assert summary["moves"]["tried"] == sum(m["tried"] for m in per_window)
    assert summary["moves"]["accepted"] == sum(m["accepted"] for m in per_window)
    assert f"moves between explanations: {summary['moves']['tried']} tried" in windowed.stdout


def test_fit_summary_calls_a_reconstruction_a_reference_not_ground_truth(capsys):
    """Real recordings carry another program's 3D (DeepFly3D's) as ``positions_reference``: the printed summary says
    distance to it, where it says 3D error against a simulation's ground truth."""
    from types import SimpleNamespace

    from gimbal.cli import _print_fit_summary

    s = {"divergences": 0, "total_draws": 40, "divergence_fraction": 0.0, "max_rhat_all": 1.0,
         "min_ess_bulk_all": 400.0, "min_ess_tail_all": 400.0, "ebfmi_per_chain": [0.9], "max_treedepth_fraction": 0.0}
    stats = {"median": 0.02, "p90": 0.07}
    result = SimpleNamespace(compile_s=1.0, sample_s=2.0, pooled=None)  # a FitResult's fields the summary reads
    for reference, said in (("positions_reference", "distance to the reference 3D, posterior mean"),
                            ("positions_true", "3D error, posterior mean")):
        _print_fit_summary(s, {"reference": reference, "units": "mm", "posterior_mean": stats, "triangulation": stats},
                           result)
        out = capsys.readouterr().out
        assert said in out and ("not ground truth" in out) == (reference == "positions_reference")


def test_compiling_text_names_the_folder_where_pytensor_keeps_its_numba_kernels():
    from pytensor.link.numba.cache import NUMBA_CACHE_PATH

    from gimbal.model.fitting import compiling_text

    said = compiling_text("numba")
    assert str(NUMBA_CACHE_PATH) in said and "first run on a machine" in said  # the folder a cold machine fills
    assert "JAX" in compiling_text("jax") and str(NUMBA_CACHE_PATH) not in compiling_text("jax")
