"""Runs that crash, are killed or resumed: the summary never claims success without results."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gimbal.cli import build_parser
from gimbal.diagnostics import io
from gimbal.divergence.paths import make_paths
from gimbal.divergence import runner
from gimbal.divergence.groups import group_desc
from gimbal.divergence.runs import read_manifest, resolve_result
from gimbal.divergence.summary import collect_run, summary_markdown

REPO = Path(__file__).resolve().parents[1]


def test_a_group_that_writes_nothing_is_a_crash_in_the_summary(tmp_path, monkeypatch):
    def missing(group, notebook_dir=None):
        raise FileNotFoundError(f"notebook for group {group} not found")

    monkeypatch.setattr(runner, "notebook_for", missing)
    args = build_parser().parse_args(["diag", "run", "--groups", "1,2", "--run-id", "gone", "--root", str(tmp_path)])
    assert args.func(args) == 1
    results = collect_run(tmp_path, "gone")
    assert [r["header"]["group"] for r in results] == ["1", "2"]
    assert all(r["verdict"]["code"] == "no_results" for r in results)
    text = summary_markdown(results, "gone")
    assert "Every group passed" not in text and "ready for production" not in text
    assert "Group 1 (build_only_sanity) crashed" in text and "not found" in text
    err = json.loads((make_paths(group_desc("1"), "gone", tmp_path).debug_dir / "runner_error.json").read_text())
    assert "FileNotFoundError" in err["traceback"] and "NoneType: None" not in err["traceback"]
    assert summary_markdown([], "none").count("No group produced results") == 1
    from gimbal.divergence.book import generate_pages

    out, _ = generate_pages(tmp_path, "gone", tmp_path / "project")  # the book of such a run still builds its pages
    page = (out / "report_summary.md").read_text()
    assert "Group 2 (gradient_sanity) crashed" in page and "{doc}`groups/group_2_gradient_sanity`" in page
    assert "no results" in (out / "groups" / "group_1_build_only_sanity.md").read_text()


def test_groups_4_and_5_compare_only_with_a_like_for_like_group_3(tmp_path):
    from gimbal.divergence.groups import _load_reference

    header = {"dataset": "v0.2.1_L00_minimal", "T": 20, "K": 4, "seed": 1, "sampling_settings": {"chains": 2}}
    path = make_paths(group_desc("3"), "r1", tmp_path).results_run
    io.write_json(path, {"header": header, "status": "ok", "sampling": {"divergences": 7}})
    assert _load_reference(tmp_path, "3", "r1", header) == {"divergences": 7}
    assert _load_reference(tmp_path, "3", "other-run", header) is None
    assert _load_reference(tmp_path, "3", "r1", {**header, "T": 200}) is None
    assert _load_reference(tmp_path, "3", "r1", {**header, "dataset": "mine.nc"}) is None
    assert _load_reference(tmp_path, "3", "r1", {**header, "parameters": {"exclude": ["cam0:root"]}}) is None


def test_the_tree_depth_plot_draws_the_run_s_max_depth(tmp_path):
    from types import SimpleNamespace

    from gimbal.divergence.groups import _sampling_plots

    ctx = SimpleNamespace(paths=SimpleNamespace(plots_run=tmp_path), fit=SimpleNamespace(trace=None), selected=["x"],
                          result=SimpleNamespace(sampling={}, localization={}), options={"maxdepth": 5})
    jobs = _sampling_plots(ctx)
    assert jobs["step_size_treedepth"][1][2] == 5


def test_a_crashed_ablation_child_leaves_an_error_row(monkeypatch):
    import benchmarks.ablation as ablation

    def crashed(cmd, **kw):
        return subprocess.CompletedProcess(cmd, -11, stdout="", stderr="Fatal Python error: Segmentation fault")

    monkeypatch.setattr(ablation.subprocess, "run", crashed)
    row = ablation._run_isolated("v0.2.1_L00_minimal", True, 20, 2, 10, 10, "default", 60)
    assert row["variant"] == "default" and "status -11" in row["error"] and "Segmentation fault" in row["error"]


def test_a_running_result_of_a_dead_process_reads_as_interrupted():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    result = {"header": {"group": "6", "run_id": "r"}, "status": "running", "steps": [{"name": "build_model"}],
              "process": {"pid": dead, "host": __import__("platform").node()}, "verdict": None}
    out = resolve_result(result)
    assert out["status"] == "interrupted" and out["verdict"]["code"] == "interrupted"
    assert "after build_model" in out["verdict"]["interpretation"] and "--resume r" in out["verdict"]["next_action"]
    alive = dict(result, process={"pid": os.getpid(), "host": __import__("platform").node()})
    assert resolve_result(alive)["status"] == "running"


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_killed_run_is_marked_interrupted_and_resume_finishes_it(tmp_path):
    root = tmp_path / "diag"
    cmd = [sys.executable, "-m", "gimbal.cli", "diag", "run", "--groups", "1,6", "--run-id", "kill", "--root", str(root)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = make_paths(group_desc("6"), "kill", root).results_run
    deadline = time.time() + 600
    while time.time() < deadline:  # wait until group 6 is under way (its results file exists and says running)
        if target.exists() and json.loads(target.read_text()).get("status") == "running":
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("group 6 never started")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "--resume kill" in err
    assert json.loads(target.read_text())["status"] == "interrupted"
    assert read_manifest(root, "kill")["status"] == "interrupted"
    status = {r["header"]["group"]: r["status"] for r in collect_run(root, "kill")}
    assert status == {"1": "ok", "6": "interrupted"}
    resumed = subprocess.run([sys.executable, "-m", "gimbal.cli", "diag", "run", "--resume", "kill", "--root", str(root)],
                             cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "1 group(s)" in resumed.stdout  # only the interrupted group ran again
    assert {r["header"]["group"]: r["status"] for r in collect_run(root, "kill")} == {"1": "ok", "6": "ok"}
    assert read_manifest(root, "kill")["status"] == "finished"


def test_diag_run_leaves_out_the_detections_it_is_told_to(tmp_path):
    """``gimbal diag run --exclude``: the groups fit the dataset without those pairs, and the pages say so."""
    from gimbal.datasets import read_dataset_file
    from gimbal.divergence.groups import DATASET_ARTIFACT
    from gimbal.errors import UsageError

    bad = build_parser().parse_args(["diag", "run", "--groups", "1", "--run-id", "typo", "--root", str(tmp_path),
                                     "--exclude", "cam9:root"])
    with pytest.raises(UsageError, match="cam9.*cam0"):  # fails before any group runs
        bad.func(bad)
    assert not make_paths(group_desc("1"), "typo", tmp_path).exists()
    args = build_parser().parse_args(["diag", "run", "--groups", "1", "--run-id", "ex", "--root", str(tmp_path),
                                      "--max-T", "5", "--exclude", "cam1:distal_left"])
    assert args.func(args) == 0
    paths = make_paths(group_desc("1"), "ex", tmp_path)
    ds = read_dataset_file(paths.debug_dir / DATASET_ARTIFACT)
    assert ds.attrs["excluded_detections"] == "cam1:distal_left"
    obs = ds["observations"].sel(camera="cam1")
    assert obs.sel(keypoint="distal_left").isnull().all() and obs.sel(keypoint="root").notnull().any()
    [result] = collect_run(tmp_path, "ex")
    assert result["header"]["parameters"]["exclude"] == ["cam1:distal_left"]
    assert read_manifest(tmp_path, "ex")["settings"]["exclude"] == "cam1:distal_left"  # a resume keeps it
    from gimbal.divergence.book import generate_pages

    out, _ = generate_pages(tmp_path, "ex", tmp_path / "project")
    assert "v0.2.1_L00_minimal without cam1:distal_left (T=5" in (out / "groups" / "group_1_build_only_sanity.md").read_text()
    assert "# The data: `v0.2.1_L00_minimal without cam1:distal_left`" in (out / "data.md").read_text()
    assert "--dataset v0.2.1_L00_minimal --seed 123 --max-T 5 --exclude cam1:distal_left" in (
        out / "environment.md").read_text()  # the reproduce command repeats it


def test_diag_run_uses_a_trained_prior_in_the_groups_with_pose_states(tmp_path):
    """``gimbal diag run --prior``: groups whose model has pose states build it with the prior, the others say they
    ran without it; a file that cannot serve fails before any group runs."""
    import warnings

    from gimbal.datasets import load_dataset, skeleton_of
    from gimbal.divergence.book import generate_pages
    from gimbal.divergence.groups import PRIOR_GROUPS
    from gimbal.errors import UsageError
    from gimbal.model.prior import fit_prior, save_prior

    assert set(PRIOR_GROUPS) == {"1", "2", "5", "6", "8a", "8b", "8c", "8d", "8e"}  # 6c: explicit directions
    ds = load_dataset("v0.2.1_L00_minimal", max_T=200)
    skel = skeleton_of(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this synthetic animal's root -> proximal stands upright in some frames
        prior = fit_prior(ds["positions_true"].values, list(skel.parents), [0, 1], n_states=2,
                          keypoint_names=list(skel.names), source="L00 truth")
        other = fit_prior(ds["positions_true"].values[:, :3], [-1, 0, 1], [0, 1],
                          keypoint_names=["root", "proximal", "tail"])  # another animal's skeleton
    path = save_prior(prior, tmp_path / "prior.npz")
    other = save_prior(other, tmp_path / "other.npz")
    root = tmp_path / "diag"
    for bad, message in ((tmp_path / "missing.npz", "does not exist"), (other, "no keypoint.*distal_left")):
        args = build_parser().parse_args(["diag", "run", "--groups", "1", "--run-id", "bad", "--root", str(root),
                                          "--prior", str(bad)])
        with pytest.raises(UsageError, match=f"--prior .*{message}"):
            args.func(args)
        assert not make_paths(group_desc("1"), "bad", root).exists()
    args = build_parser().parse_args(["diag", "run", "--groups", "3,5", "--run-id", "pr", "--root", str(root),
                                      "--max-T", "8", "--prior", str(path)])
    assert args.func(args) == 0
    results = {r["header"]["group"]: r for r in collect_run(root, "pr")}
    used, unused = results["5"]["header"], results["3"]["header"]
    assert used["parameters"]["prior"] == str(path.resolve()) and used["parameters"]["prior_used"]
    assert used["config"]["prior"] == "L00 truth" and used["config"]["heading"] and used["config"]["n_states"] == 2
    assert unused["parameters"]["prior"] == str(path.resolve()) and not unused["parameters"]["prior_used"]
    assert unused["config"]["prior"] is None and not unused["config"]["heading"]
    assert read_manifest(root, "pr")["settings"]["prior"] == str(path.resolve())  # a resume keeps it
    # the body frame's check ran where the prior did: root -> proximal, the heading, stands upright in frames 0-1
    heading = results["5"]["heading"]
    assert heading["keypoints"] == ["root", "proximal"] and heading["n_frames"] == 8
    # only the truth's upright frames can be short, listed exactly when the shortest baseline is below the check's
    # 0.25x (whether this 8-frame run's posterior mean keeps them upright varies with the sampler's path: 0.47x once)
    assert set(heading["short_frames"]) <= {0, 1, 2}
    assert bool(heading["short_frames"]) == (heading["min_length"] < 0.25 * heading["median_length"])
    assert results["3"]["heading"] is None
    out, _ = generate_pages(root, "pr", tmp_path / "project")
    page = (out / "groups" / "group_5_sampling_hmm_only.md").read_text()
    assert f"| pose prior | {path.resolve()} |" in page and "**Body frame (trained prior).**" in page
    assert "not used: this group's model has no pose states" in (
        out / "groups" / "group_3_sampling_baseline_minimal.md").read_text()
    assert f"--prior {path.resolve()}" in (out / "environment.md").read_text()
    summary = summary_markdown(collect_run(root, "pr"), "pr")
    assert f"**Pose prior.** Group 5 ran with the trained prior `{path.resolve()}`" in summary


def test_temporal_groups_a_short_recording_would_repeat_are_not_run(tmp_path, monkeypatch, capsys):
    """On a recording shorter than the temporal groups' T, 8b-8e would all run the same frames under four titles
    (T=200 ... T=1800): only the first of them runs, and the run says which were left out and why."""
    from gimbal.datasets import load_dataset, save_dataset
    from gimbal.divergence.groups import repeated_temporal_groups

    assert repeated_temporal_groups(["8a", "8b", "8c", "8d", "8e"], "quick", 30) == {"8c": "8b", "8d": "8b", "8e": "8b"}
    assert repeated_temporal_groups(["8a", "8b", "8c", "8d", "8e"], "quick", 60) == {}
    assert repeated_temporal_groups(["1", "8a", "8e"], "full", 120) == {}  # 80 and 120: two different T
    assert repeated_temporal_groups(["8a", "8b", "8c"], "full", 50) == {"8b": "8a", "8c": "8a"}

    short = tmp_path / "short.nc"
    save_dataset(load_dataset("v0.2.1_L00_minimal", max_T=30), short)
    ran = []
    monkeypatch.setattr(runner, "_execute", lambda g, args, root, lock: ran.append(g) or {"group": g, "status": "ok"})
    args = build_parser().parse_args(["diag", "run", "--groups", "1,8", "--run-id", "short", "--root",
                                      str(tmp_path / "out"), "--dataset", str(short)])
    runner.run_groups(args)
    assert ran == ["1", "8a", "8b"]
    assert "not run: Groups 8c, 8d, 8e: the recording has 30 frames, which group 8b" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "out", "short")
    assert manifest["groups"] == ["1", "8a", "8b"]  # --resume does not run them
    reason = "the recording has 30 frames, which group 8b already runs whole"
    assert manifest["not_run"] == {"8c": reason, "8d": reason, "8e": reason}
    text = summary_markdown([], "short", not_run=manifest["not_run"])  # the summary page and the book's say so
    assert f"**Not run.** Groups 8c, 8d, 8e: {reason}." in text


def test_group_5s_hmm_check_fits_a_recording_shorter_than_its_five_frames(tmp_path):
    """A 3-frame recording (the SLEAP multi-view session has 3): group 5's brute-force HMM check ran on 5 frames of
    the dataset and crashed the group ("max_T=5 is outside [1, 3]"); it now enumerates the 2^3 paths of all 3."""
    from gimbal.datasets import load_dataset, save_dataset
    from gimbal.divergence.groups import _hmm_micro_check

    short = tmp_path / "three.nc"
    save_dataset(load_dataset("v0.2.1_L00_minimal", max_T=3), short)
    check = _hmm_micro_check(str(short), seed=0, n_frames=3)
    assert check["passed"], check["summary"]
    assert check["finite_difference"]["n_checked"] > 0
