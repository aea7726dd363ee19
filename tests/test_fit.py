import json
import subprocess
import sys

import numpy as np
import pytest

from gimbal.datasets import load_dataset
from gimbal.diagnostics.sampling import sampling_summary
from gimbal.fitting import position_errors, sample_model
from gimbal.pymc_model import build_model


@pytest.mark.slow
def test_short_fit_beats_robust_triangulation_under_outliers():
    ds = load_dataset("v0.2.1_L02_outliers", max_T=40)
    model = build_model(ds)
    fit = sample_model(model, chains=2, tune=300, draws=100, seed=3, progress=False)
    summary = sampling_summary(fit.trace, wall_time_s=fit.sample_s)
    errors = position_errors(fit.trace, ds)
    assert summary["divergences"] == 0
    assert errors["posterior_mean"]["median"] < 0.8 * errors["triangulation"]["median"]
    assert errors["posterior_mean"]["p90"] < errors["triangulation"]["p90"]
    # bone lengths recovered
    rho = fit.trace["posterior"]["bone_length"].mean(("chain", "draw")).values
    np.testing.assert_allclose(rho, [10, 8, 8], rtol=0.03)


@pytest.mark.slow
def test_cli_fit_writes_outputs_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "fit"
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--max-T", "15", "--tune", "100", "--draws", "50", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "divergences" in done.stdout and "3D error, posterior mean" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == {"name": "v0.2.1_L00_minimal", "T": 15, "C": 3, "K": 4}
    assert summary["sampling"]["total_draws"] == 100
    assert (out / "trace.nc").stat().st_size > 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "--overwrite" in again.stderr


@pytest.mark.slow
def test_cli_windowed_fit_stitches_every_frame(tmp_path):
    import xarray as xr

    out = tmp_path / "windowed"
    cmd = [sys.executable, "-m", "gimbal.cli", "fit", "--max-T", "40", "--window", "20", "--overlap", "5", "--tune", "100",
           "--draws", "50", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(w["keep_start"], w["keep_stop"]) for w in summary["windowed"]["windows"]] == [(0, 20), (20, 40)]
    with xr.open_dataset(out / "trace.nc", engine="h5netcdf") as post:
        assert post["x"].sizes["frame"] == 40 and post["bone_length"].sizes["window"] == 2
    assert "3D error median" in done.stdout


def test_cli_reports_bad_input_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "gimbal.cli", "fit", "--dataset", "no_such_data", "--quiet"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "unknown dataset 'no_such_data'" in done.stderr and "Traceback" not in done.stderr
    helped = subprocess.run([sys.executable, "-m", "gimbal.cli", "fit", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--max-T" in helped.stdout
