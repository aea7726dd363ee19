"""Settings declared and validated once; exit statuses; the seed's flag spellings; bad datasets refused."""

import subprocess
import sys

import numpy as np
import pymc as pm
import pytest

from gimbal.cli import build_parser
from gimbal.errors import UsageError
from gimbal.settings import SamplerSettings


@pytest.mark.parametrize("argv, message", [
    (["fit", "--target-accept", "1.5"], "--target-accept: the value must be a number between 0 and 1 (exclusive), got '1.5'"),
    (["diag", "run", "--tune", "-1"], "--tune: the value must be an integer >= 0, got '-1'"),
    (["diag", "run", "--max-T", "0"], "--max-T/--max_T: the value must be an integer >= 1, got '0'"),
    (["diag", "run", "--chains", "0"], "--chains: the value must be an integer >= 1, got '0'"),
    (["diag", "run", "--jobs", "0"], "--jobs: the value must be an integer >= 1, got '0'"),
    (["diag", "run", "--maxdepth", "30"], "--maxdepth: the value must be an integer from 1 to 20, got '30'"),
    (["evaluate", "--dataset", "x.nc", "--draws", "many"], "--draws: the value must be an integer >= 1, got 'many'"),
    (["fit", "--steps-dof", "0"], "--steps-dof: the value must be a number > 0, got '0'"),
    (["evaluate", "--dataset", "x.nc", "--steps-dof", "inf"], "--steps-dof: the value must be a number > 0, got 'inf'"),
])
def test_bad_options_are_refused_up_front_with_one_message_style(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_python_callers_get_the_same_checks():
    with pytest.raises(UsageError, match=r"--target-accept must be a number between 0 and 1 \(exclusive\), got 1.5"):
        SamplerSettings(target_accept=1.5)
    with pytest.raises(UsageError, match="--tune must be an integer >= 0, got -1"):
        SamplerSettings(tune=-1)
    with pytest.raises(UsageError, match="--backend jax compiles the model for nutpie"):
        SamplerSettings(backend="jax", sampler="pymc")
    assert SamplerSettings(chains=4, tune=0).sample_kwargs()["chains"] == 4


def test_the_seeds_flag_spellings_are_aliases():
    args = build_parser().parse_args(["diag", "run", "--dataset_name", "v0.2.1_L01_noise", "--max_T", "30", "--max_K",
                                      "3", "--seed", "7", "--run_id", "r1", "--overwrite"])
    assert (args.dataset, args.max_T, args.max_K, args.seed, args.run_id, args.overwrite) == (
        "v0.2.1_L01_noise", 30, 3, 7, "r1", True)


def test_exit_status_two_for_usage_one_for_a_failed_run_with_the_traceback_logged(tmp_path):
    env = {**__import__("os").environ, "GIMBAL_CACHE_DIR": str(tmp_path / "cache")}
    usage = subprocess.run([sys.executable, "-m", "gimbal.cli", "fit", "--dataset", "no_such_data"], capture_output=True,
                           text=True, env=env)
    assert usage.returncode == 2 and "unknown dataset" in usage.stderr and "Traceback" not in usage.stderr
    bad = tmp_path / "broken.toml"
    bad.write_text("[cam_0]\nname = 'a'\nsize = [10, 10]\n")
    failed = subprocess.run([sys.executable, "-m", "gimbal.cli", "import", "--detections", "a=x.slp", "--calibration",
                             str(bad), "--out", str(tmp_path / "o.nc")], capture_output=True, text=True, env=env)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "lacks ['matrix', 'rotation', 'translation']" in failed.stderr
    log = failed.stderr.split("(traceback: ")[1].split(")")[0]
    assert "Traceback" in open(log, encoding="utf-8").read()


def test_degenerate_cameras_and_keypoints_nobody_sees_are_refused(minimal80):
    from gimbal.datasets import from_arrays

    obs = minimal80["observations"].values[:10]
    P = minimal80["camera_matrix"].values.copy()
    parents = minimal80["parents"].values
    zeros = P.copy()
    zeros[1] = 0.0
    with pytest.raises(ValueError, match=r"camera\(s\) \['cam1'\] have a degenerate camera matrix"):
        from_arrays(obs, zeros, parents)
    hidden = obs.copy()
    hidden[:, :, 3] = np.nan
    with pytest.raises(ValueError, match=r"keypoint\(s\) \['kp3'\] are detected by no camera"):
        from_arrays(hidden, P, parents)


def test_the_start_gate_rejects_what_nutpie_rejects_and_names_it():
    from gimbal.model.initialization import InitializationError, check_initial_point

    with pm.Model() as model:
        pm.Normal("informed", 0.0, 1.0, initval=0.5)
        pm.Normal("uninformed", 2.0, 1.5, shape=3, initval=np.array([2.0, 1.0, 2.0]))  # at its mode: gradient 0
    with pytest.raises(InitializationError, match=r"2 gradient component\(s\) exactly zero \(uninformed\[0\], uninformed\[2\]"):
        check_initial_point(model)


def test_pixi_tasks_are_the_tasks_py_jobs():
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    pixi = tomllib.loads((repo / "pixi.toml").read_text())
    tasks_py = (repo / "tasks.py").read_text()
    for job in ("report", "test", "setup"):
        assert pixi["tasks"][job] == f"python tasks.py {job}"
        assert f'"{job}"' in tasks_py
    assert pixi["dependencies"]["python"] == "3.12.*"
    assert "pypi-dependencies" not in pixi  # versions come from constraints.txt through tasks.py, not a second list


def test_a_sampler_that_refuses_the_start_is_explained_without_a_backtrace(monkeypatch):
    import nutpie

    from gimbal.model.fitting import SamplerFailed, sample_model
    from gimbal.model.initialization import InitializationError

    with pm.Model() as ok_model:
        pm.Normal("a", 0.0, 1.0, initval=0.3)
    with pm.Model() as flat_model:
        pm.Normal("b", 1.0, 1.0, initval=1.0)  # at its mode: zero gradient, which nutpie refuses

    def refuse(*args, **kwargs):
        raise RuntimeError("Logp function returned error: ErrorCode(3)\nstack backtrace:\n   0: nuts_rs::chain")

    monkeypatch.setattr(nutpie, "sample", refuse)
    with pytest.raises(InitializationError, match=r"exactly zero \(b\)"):
        sample_model(flat_model, chains=1, tune=5, draws=5, progress=False)
    with pytest.raises(SamplerFailed) as failed:
        sample_model(ok_model, chains=1, tune=5, draws=5, progress=False)
    assert "ErrorCode(3)" in str(failed.value) and "backtrace" not in str(failed.value)


def test_cli_model_option_defaults_are_the_model_defaults():
    """`gimbal fit`'s model options default to ModelConfig's (the CLI keeps them literal so it starts without PyMC)."""
    from gimbal.cli import build_parser
    from gimbal.model.build import ModelConfig

    args = build_parser().parse_args(["fit"])
    for option in ("directions", "state_params", "steps", "steps_dof", "scales", "kernels", "root_dynamics",
                   "outlier_model", "observation"):
        assert getattr(args, option) == getattr(ModelConfig, option), option
    assert args.confidence is ModelConfig.confidence


def test_the_cli_prints_gimbals_own_warnings_as_warning_lines(capsys):
    """gimbal's warnings name the problem and the fix: the command prints them as ``warning: ...`` lines, not with
    Python's file:line prefix; other packages' warnings keep theirs, and Python's format is back after the command."""
    import warnings

    from gimbal import cli

    ours = cli._format_warning(UserWarning("the baseline is short"), UserWarning,
                               str(cli.PACKAGE_DIR / "model" / "build.py"), 10)
    assert ours == "warning: the baseline is short\n"
    theirs = cli._format_warning(UserWarning("deprecated"), UserWarning, "/elsewhere/lib.py", 3)
    assert "/elsewhere/lib.py:3" in theirs and not theirs.startswith("warning:")
    before = warnings.formatwarning
    assert cli.main(["datasets"]) == 0
    assert warnings.formatwarning is before


def test_steps_dof_without_student_t_steps_is_refused():
    """--steps-dof is the Student-t steps' degrees of freedom: with --steps gaussian it would be ignored, so it is
    refused; with the Student-t steps it reaches build_model."""
    from gimbal.cli import _model_options
    from gimbal.datasets import load_dataset

    ds = load_dataset("v0.2.1_L00_minimal", max_T=5)
    args = build_parser().parse_args(["fit", "--steps", "gaussian", "--steps-dof", "3"])
    refused = "--steps-dof 3 sets the Student-t steps' degrees of freedom, and --steps gaussian"
    with pytest.raises(UsageError, match=refused):
        _model_options(args, ds, "minimal")
    options = lambda *argv: _model_options(build_parser().parse_args(["fit", *argv]), ds, "minimal")  # noqa: E731
    assert options("--steps-dof", "3")["steps_dof"] == 3.0
    assert options("--steps", "gaussian")["steps"] == "gaussian"


def test_pooled_warmup_is_one_flag_of_fit_and_evaluate_and_not_of_the_diagnostic_groups(capsys):
    parser = build_parser()
    assert SamplerSettings.from_args(parser.parse_args(["fit"])).pooled_warmup is True
    assert SamplerSettings.from_args(parser.parse_args(["fit", "--no-pooled-warmup"])).pooled_warmup is False
    evaluate = parser.parse_args(["evaluate", "--dataset", "x.nc", "--no-pooled-warmup"])
    assert SamplerSettings.from_args(evaluate).pooled_warmup is False
    with pytest.raises(SystemExit):  # the groups always warm up in one stage: the flag would do nothing there
        parser.parse_args(["diag", "run", "--no-pooled-warmup"])
    assert "--no-pooled-warmup" in capsys.readouterr().err
    with pytest.raises(UsageError, match="pooled_warmup must be True or False"):
        SamplerSettings(pooled_warmup="yes")
