"""The report: every group's notebook under papermill (quick profile) and the book built from that one run.

One quick run of every group serves the notebook checks and the book (its HTML checked in headless Chromium as a
reader would), so the run is made once per suite.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest

from gimbal.divergence import schema
from gimbal.divergence.book import build_book
from gimbal.divergence.paths import make_paths
from gimbal.divergence.report import REPORT_SECTIONS
from gimbal.divergence.groups import GROUPS, group_desc
from gimbal.divergence.runner import NOTEBOOK_DIR

RUN_ID = "ci-quick"
REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "_build" / "screenshots"
SAMPLING_PLOTS = {"trace_selected.png", "energy.png", "step_size_treedepth.png", "divergence_pairs.png", "divergence_localization.png"}


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("diag")
    cmd = [sys.executable, "-m", "gimbal.cli", "diag", "run", "--groups", "all", "--profile", "quick", "--jobs", "2",
           "--run-id", RUN_ID, "--root", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=Path(__file__).resolve().parents[1])
    return root, done


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOK_DIR.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert any("parameters" in c.metadata.get("tags", []) for c in code), path.name


@pytest.mark.slow
def test_all_groups_run_under_papermill_and_write_the_seed_tree(quick_run):
    root, done = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for g in GROUPS:  # the final table lists every group
        assert f"\n{g} " in done.stdout or done.stdout.count(f"group {g}") >= 1
    for sub in ("results", "plots", "debug_outputs", "archive"):
        assert (root / sub).is_dir()
    for g, spec in GROUPS.items():
        p = make_paths(group_desc(g), RUN_ID, root)
        payload = json.loads(p.results_run.read_text())
        schema.validate_results(payload)
        assert payload["status"] == "ok" and payload["verdict"]["status"] in ("pass", "finding", "fail")
        assert json.loads(p.results_latest.read_text()) == payload
        text = p.report_run.read_text()
        for section in REPORT_SECTIONS:
            assert f"## {section}" in text, (g, section)
        assert p.report_latest.read_text() == text
        for name, conv in (payload.get("convergence_localization") or {}).items():
            # every flagged variable read against chance at its elements' own ESS, and the page shows it
            assert (conv["exceedances"] or {}).get("observed", 0) == conv["n_flagged"], (g, name)
            if conv["worst"]:
                assert f"Worst elements of `{name}`" in text and "| chance | pattern |" in text, (g, name)
        assert p.notebook_run.exists()
        manifest = json.loads((p.plots_run / "artifacts_manifest.json").read_text())
        produced = {f["file"] for f in manifest["files"]}
        assert manifest["failed"] == {}, (g, manifest["failed"])
        if spec.samples:
            assert SAMPLING_PLOTS <= produced, g
            assert payload["sampling"]["total_draws"] == 200
        for name in produced:
            assert (p.plots_run / name).stat().st_size > 1000 and (p.plots_latest / name).exists()
    # the seed's model has a correct gradient: group 2 must not call the rounding noise of its logp a mismatch
    g2 = json.loads(make_paths(group_desc("2"), RUN_ID, root).results_run.read_text())
    assert g2["gradient_checks"]["finite_difference"]["n_failed"] == 0 and g2["verdict"]["code"] == "gradient_ok"
    g1 = json.loads(make_paths(group_desc("1"), RUN_ID, root).results_run.read_text())
    assert [s["name"] for s in g1["steps"]] == ["load_data", "build_model", "model_checks", "gradient_checks", "plots",
                                                "verdict"]  # the declared steps a build-only group applies
    g4 = json.loads(make_paths(group_desc("4"), RUN_ID, root).results_run.read_text())
    assert g4["gradient_checks"]["component_checks"]["mixture"]["missing_contributes_exactly_zero"] is True
    g5 = json.loads(make_paths(group_desc("5"), RUN_ID, root).results_run.read_text())
    assert g5["gradient_checks"]["component_checks"]["hmm_micro_gradient"]["passed"] is True
    assert g5["header"]["config"]["n_states"] >= 2
    summary = (root / "report_summary.md").read_text()
    assert "Which group fails first" in summary and "Temporal scaling" in summary
    # the contrast run (the earlier port's parameterization) diverges on the default data, its page says where,
    # and the summary sets it against group 6 without calling it the study's first failure
    g6c = json.loads(make_paths(group_desc("6c"), RUN_ID, root).results_run.read_text())
    g6 = json.loads(make_paths(group_desc("6"), RUN_ID, root).results_run.read_text())
    assert g6c["sampling"]["divergences"] > 0 and g6c["verdict"]["code"] == "earlier_port_diverges"
    assert "most displaced in" in g6c["verdict"]["interpretation"]
    assert "**Contrast.** The contrast run (group 6c" in summary and "first_failure_group_6c" not in summary
    if g6["sampling"]["divergences"] == 0:
        assert "the default removes them." in summary


@pytest.mark.slow
def test_existing_run_is_not_overwritten(quick_run):
    root, _ = quick_run
    cmd = [sys.executable, "-m", "gimbal.cli", "diag", "run", "--groups", "1", "--run-id", RUN_ID, "--root", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--overwrite" in done.stderr


@pytest.mark.slow
def test_forced_failure_still_leaves_valid_json_and_report(tmp_path):
    import papermill as pm

    out = tmp_path / "failed.ipynb"
    params = dict(group="3", run_id="boom", max_T=10, profile="quick", root=str(tmp_path), fail_at="sampling")
    with pytest.raises(pm.PapermillExecutionError):
        pm.execute_notebook(str(NOTEBOOK_DIR / "group_3_sampling_baseline_minimal.ipynb"), str(out), parameters=params,
                            progress_bar=False, kernel_name="python3", cwd=str(Path(__file__).resolve().parents[1]))
    p = make_paths(group_desc("3"), "boom", tmp_path)
    payload = json.loads(p.results_run.read_text())
    schema.validate_results(payload)
    assert payload["status"] == "failed" and payload["error"]["step"] == "sampling"
    assert "injected failure" in payload["error"]["message"] and "Traceback" in payload["error"]["traceback"]
    assert payload["model_checks"]["finite"] is True  # what was reached before the failure is kept
    assert payload["verdict"]["status"] == "error"
    text = p.report_run.read_text()
    assert "failed" in text and "sampling" in text and "## 2. Model checks" in text
    assert out.exists()  # papermill keeps the executed notebook with the error


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def built_book(quick_run):
    """The book of the quick run of every group."""
    root, done = quick_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root, build_book(root, RUN_ID, REPO)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    exe = _chromium()
    if exe is None or not shutil.which("chromedriver"):
        pytest.skip("headless Chromium / chromedriver not installed (Debian packages chromium, chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1300,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def _check_page(driver, url: Path, shot: str):
    driver.get(url.as_uri())
    driver.execute_script("return document.readyState")
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth])")
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / shot))
    broken_images = [src for src, width in images if not width]
    broken_links = []
    for href in links:
        parsed = urlparse(href)
        if parsed.scheme != "file":
            continue  # external links are not ours to check offline
        target = Path(unquote(parsed.path))
        if not target.exists():
            broken_links.append(href)
    return images, broken_images, broken_links, driver.page_source


@pytest.mark.browser
@pytest.mark.slow
def test_summary_and_group_pages_load_every_image_and_link(built_book, browser):
    root, landing = built_book
    assert landing.exists()
    images, bad_img, bad_links, html = _check_page(browser, landing, "summary.png")
    assert not bad_img and not bad_links, (bad_img, bad_links)
    assert "Which group fails first" in html and "temporal_scaling" in html
    group = landing.parent / "groups" / "group_3_sampling_baseline_minimal.html"
    images, bad_img, bad_links, html = _check_page(browser, group, "group_3.png")
    assert len([s for s, w in images if w and "_images" in (s or "")]) >= 5  # the five sampling plots, embedded
    assert not bad_img and not bad_links, (bad_img, bad_links)
    for section in ("1. Header", "4. Sampling summary", "7. Next action"):
        assert section in html
    assert "Traceback" not in html  # no raw tracebacks on a page of a group that did not fail
    for page in ("runs", "data", "environment"):
        _, bad_img, bad_links, _ = _check_page(browser, landing.parent / f"{page}.html", f"{page}.png")
        assert not bad_img and not bad_links, (page, bad_img, bad_links)


@pytest.mark.slow
def test_a_failed_group_is_named_on_the_summary(built_book, tmp_path):
    import papermill as pm

    root = tmp_path / "diag"
    shutil.copytree(built_book[0], root)  # the quick run's artifacts, left as they are for the other tests

    params = dict(group="3", run_id="book-failed", max_T=10, root=str(root), fail_at="sampling")
    with pytest.raises(pm.PapermillExecutionError):
        pm.execute_notebook(str(NOTEBOOK_DIR / "group_3_sampling_baseline_minimal.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=params, progress_bar=False, kernel_name="python3", cwd=str(REPO))
    landing = build_book(root, "book-failed", REPO)
    html = landing.read_text(encoding="utf-8")
    assert "Group 3" in html and "crashed" in html and "injected failure" in html
    group_page = (landing.parent / "groups" / "group_3_sampling_baseline_minimal.html").read_text(encoding="utf-8")
    assert "failed" in group_page and "sampling" in group_page
    # the run history shows both runs side by side
    runs = (landing.parent / "runs.html").read_text(encoding="utf-8")
    assert RUN_ID in runs and "book-failed" in runs


def test_performance_page_renders_every_benchmark_kind(tmp_path):
    """Benchmark JSON (as `python -m benchmarks` writes it) becomes tables; unknown kinds must not break the page."""
    import json

    from gimbal.divergence.book import _performance_page
    from gimbal.diagnostics.chance import chance_max_rhat

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    mach = {"platform": "test", "python": "3.12", "cpu_count": 2}
    sampling_row = {"T": 1800, "chains": 4, "draws": 1000, "maxdepth": 5, "divergences": 0, "max_rhat_latents": 1.0123,
                    "min_ess_bulk_latents": 901.0, "min_ess_tail_latents": 700.0, "min_ess_bulk_per_s": 0.9,
                    "mean_grad_evals_per_draw": 31.0, "sample_s": 1000.0, "posterior_median_error": 1.2,
                    "triangulation_median_error": 2.1, "peak_rss_mib": 5000.0,
                    "stored": "every draw in a zarr store on disk"}
    windowed_row = {"T": 1800, "n_windows": 9, "window": 200, "overlap": 10, "chains": 4, "draws": 1000, "maxdepth": 4,
                    "divergences": 0, "max_rhat_latents": 1.02, "min_ess_bulk_latents": 600.0, "min_ess_tail_latents": 500.0,
                    "mean_grad_evals_per_draw": 15.0, "sample_s": 700.0, "wall_s": 900.0, "posterior_median_error": 1.3,
                    "triangulation_median_error": 2.1, "peak_rss_mib": 4000.0}
    chance = chance_max_rhat(4, 100, 50, seed=0)
    payloads = {
        "sampling_rodent": {"benchmark": "sampling", "dataset": "rodent", "machine": mach, "rows": [sampling_row]},
        "windowed_rodent": {"benchmark": "windowed", "dataset": "rodent", "machine": mach, "rows": [windowed_row]},
        "rhat_chance": {"benchmark": "rhat_chance", "dataset": "simulated", "machine": mach,
                        "rows": [{"chains": 4, "draws": 100, "n_elements": 50, "ess_fraction": 1.0, "ess_bulk": 400.0,
                                  "chance_max_rhat": chance}]},
    }
    scaling_rows = [{"T": T, "n_parameters": 12 * T + 8, "build_s": 0.1, "compile_cold_s": c, "compile_warm_s": w,
                     "logp_grad_median_ms": 4e-4 * T, "peak_rss_mib": 600.0} for T, c, w in ((80, 6.0, 3.0), (1800, 6.3, 3.3))]
    payloads["scaling_toy"] = {"benchmark": "scaling", "dataset": "toy", "machine": mach, "rows": scaling_rows,
                               "ratios": {"T_low": 80, "T_high": 1800, "compile_cold_ratio_vs_lowest": {"1800": 1.05, "80": 1.0},
                                          "compile_warm_ratio_vs_lowest": {"1800": 1.1, "80": 1.0}}}
    gpu = {"platform": "gpu-box", "python": "3.12", "cpu_count": 16, "jax_device": "gpu: TestCard"}
    payloads["sampling_rodent"]["rows"].append({**sampling_row, "T": 200, "backend": "jax", "device": "gpu: TestCard",
                                                "machine": gpu, "stored": "memory", "seed": 2, "build_s": 5.0,
                                                "compile_s": 4.0, "summary_s": 59.0, "chance_max_rhat_positions": 1.00683})
    backend_rows = [{"T": 1800, "variant": v, "device": d, "compile_s": 3.0, "logp_grad_median_ms": ms,
                     "logp_abs_diff_vs_numba": diff, "grad_max_rel_diff_vs_numba": diff}
                    for v, d, ms, diff in (("numba-fused", "cpu", 8.0, 0.0), ("jax-graph-parallel", "gpu: TestCard", 0.5, 1e-9))]
    payloads["backends_rodent_gpu"] = {"benchmark": "backends", "dataset": "rodent", "machine": gpu, "rows": backend_rows}
    stats = lambda med, p90: {"n": 100, "mean": med, "median": med, "p90": p90}  # noqa: E731
    payloads["loco_mouse"] = {"benchmark": "loco", "dataset": "mouse", "T": 120, "K": 15, "machine": mach,
                              "settings": {"chains": 2, "tune": 300, "draws": 200, "min_confidence": 0.5},
                              "rows": [{"camera": "side", "posterior": stats(30.0, 47.2), "triangulation": stats(33.1, 49.8),
                                        "ratio_median_posterior_to_triangulation": 0.906, "bone_cv_posterior": 0.013,
                                        "bone_cv_triangulation": 0.066, "divergences": 0, "max_rhat": 1.1, "fit_s": 69.0,
                                        "triangulation_least_squares": stats(31.5, 48.0),
                                        "posterior_only": {"n": 12, "mean": 85.0, "median": 80.0, "p90": 120.0},
                                        "posterior_closer": 0.57, "keypoints_lower": 9, "keypoints_compared": 15,
                                        "ratio_median_interval": [0.8512, 0.9634],
                                        "ratio_median_by_chain": [0.8812, 0.9311]}]}
    gradient_rows = [{"configuration": c, "dataset": d, "T": 1800, "n_states": 4, "n_parameters": 97216, "n_evals": 200,
                      "logp_grad_median_ms": ms, "logp_grad_p10_ms": ms - 0.2, "logp_grad_p90_ms": ms + 0.5,
                      "ratio_to_seed_model": r}
                     for c, d, ms, r in (("seed's model", "rodent", 6.5, 1.0), ("default + prior", "realistic", 7.5, 1.154))]
    payloads["gradient_T1800"] = {"benchmark": "gradient", "dataset": "rodent, realistic", "T": 1800, "rounds": 5,
                                  "evals_per_round": 40, "machine": mach, "rows": gradient_rows}
    for name, payload in payloads.items():
        (results / f"{name}.json").write_text(json.dumps(payload), encoding="utf-8")
    page = _performance_page(tmp_path, tmp_path / "out")
    assert "One logp + gradient at T = 1800 (median of 5 interleaved rounds of 40" in page
    assert "| default + prior | realistic | 4 | 97,216 | 7.5 (7.3-8) | 1.15 |" in page
    assert "## Leave one camera out: `mouse` (T=120, K=15)" in page and "confidence >= 0.5" in page
    loco_row = ("| side | 100 | 30 | 33.1 | 0.906 | 0.851-0.963 | 47.2 | 49.8 | 0.013 / 0.066 | 31.5 / 48 | 12, 80 "
                "| 57% | 9/15 | 0 | 1.1 | 0.881 / 0.931 | 69 |")
    assert loco_row in page
    assert "numba, 2 CPUs" in page and "jax on gpu: TestCard, 16 CPUs" in page  # each sampling row names its machine
    assert "JAX device gpu: TestCard" in page and "| jax-graph-parallel | gpu: TestCard | 3 | 0.5 | 16 | 1e-09 |" in page
    assert "## sampling: `rodent`" in page and "1.012" in page and "901 / 700" in page and "disk (zarr)" in page
    # the GPU row: its seed, the chance yardstick next to its R-hat, wall = build + compile + sampling + summary
    assert "| 4 x 1000 (2) |" in page and "| 1.0123 (1.0068) |" in page and "| 1000 | 1068 |" in page
    assert "| 4 x 1000 (1) |" in page and "| 1000 | n/a |" in page  # a row without a timed summary has no wall time
    assert "9 x (200 + 2 x 10)" in page and "600 / 500" in page
    assert "max R-hat by chance" in page and f"{chance:.5g}" in page
    assert "T=80: x1.00 / x1.00, T=1800: x1.05 / x1.10" in page and (tmp_path / "out" / "figures" / "scaling_toy.png").is_file()


def test_ablation_page_shows_positions_and_failed_variants(tmp_path):
    import json

    from gimbal.divergence.book import _ablation_page

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    row = {"variant": "default", "n_parameters": 10, "divergences": 0, "max_rhat_latents": 1.0174, "max_rhat_latents_var": "x",
           "min_ess_bulk_latents": 1428.0, "max_rhat_positions": 1.0123, "min_ess_bulk_positions": 2601.0, "min_ebfmi": 0.8,
           "mean_grad_evals_per_draw": 29.0, "gradient_ms": 0.43, "sample_s": 34.0, "multimodality": "ok",
           "error_ratio": 0.62, "failure_removed_by_default": "-"}
    payload = {"benchmark": "ablation", "dataset": "toy", "T": 100, "chains": 4, "tune": 500, "draws": 500,
               "machine": {"platform": "test", "cpu_count": 2},
               "rows": [row, {"variant": "directions=explicit", "error": "did not finish within 240 s (killed)",
                              "failure_removed_by_default": "sphere"}]}
    (results / "ablation_toy.json").write_text(json.dumps(payload), encoding="utf-8")
    page = _ablation_page(tmp_path)
    assert "| default | 10 | 0 | 1.017 (x) | 1428 | 1.012, 2601 |" in page
    assert "`directions=explicit` failed: did not finish within 240 s" in page


def test_ablation_page_shows_the_trained_prior_against_the_model_without_it(tmp_path):
    """`python -m benchmarks prior-transfer` JSON becomes a table on the Ablation page, never on Performance."""
    from gimbal.divergence.book import _ablation_page, _performance_page

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    e = lambda m: {"mean": m, "median": m / 2, "p90": 2 * m, "n": 10}  # noqa: E731
    payload = {"benchmark": "prior_transfer", "dataset": "dannce_markerless_mouse", "train": "m1", "test": "m2",
               "frames_test": 91, "noise": "5 px", "chains": 4, "tune": 1000, "draws": 1000, "n_states": 4,
               "heading": ["SpineM", "Snout"], "seed": 0, "quick": False, "machine": {"platform": "test", "cpu_count": 2},
               "rows": {"triangulation": {"errors": e(6.0), "errors_wrong_in_3_cameras": e(18.0)},
                        "trained prior (4 states)": {"errors": e(1.4), "errors_wrong_in_3_cameras": e(3.4),
                                                     "divergences": 0, "max_rhat_x": 2.38,
                                                     "fraction_x_rhat_above_1.01": 0.053, "wall_s": 78.2,
                                                     "unconverged_by_support": {"unconverged": 111,
                                                                                "unconverged_weakly_supported": 75}}}}
    (results / "prior_transfer.json").write_text(json.dumps(payload), encoding="utf-8")
    (results / "stray.json").write_text(json.dumps({"rows": []}), encoding="utf-8")  # not a benchmark result
    page = _ablation_page(tmp_path)
    assert "train on `m1`, test on `m2`" in page and "heading SpineM -> Snout" in page
    assert "| triangulation | 6 / 3 / 12 | 18 / 9 / 36 |" in page
    assert ("| trained prior (4 states) | 1.4 / 0.7 / 2.8 | 3.4 / 1.7 / 6.8 | 0 | 2.38 | 5.3% | 75 of 111 | 78.2 |"
            in page)
    assert "seen by <= 1 camera" in page
    perf = _performance_page(tmp_path, tmp_path / "out")
    assert "m1" not in perf and "`stray.json` is not a benchmark result" in perf


def _errors(m):
    return {"mean": m, "median": m / 2, "p90": 2 * m, "n": 10}


def _write_observation_result(project, name: str, T: int, rows: dict, **settings) -> None:
    """A ``python -m benchmarks observation`` JSON with a triangulation row and ``rows``, under ``project``."""
    results = project / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "observation_models", "dataset": "rodent18_realistic", "train": "rodent18_realistic_train",
               "T": T, "chains": 4, "tune": 1000, "draws": 1000, "n_states": 4, "heading": ["SpineM", "SpineF"],
               "seed": 0, "quick": False, "machine": {"platform": "test", "cpu_count": 2}, **settings,
               "rows": {"triangulation": {"errors": _errors(5.0), "errors_wrong_in_3_cameras": _errors(9.0)}, **rows}}
    (results / f"{name}.json").write_text(json.dumps(payload), encoding="utf-8")


def test_ablation_page_compares_observation_models_against_triangulation(tmp_path):
    """`python -m benchmarks observation` JSON: one row per choice, with its ratio to triangulation."""
    from gimbal.divergence.book import _ablation_page, _performance_page

    row = {"errors": _errors(2.0), "errors_wrong_in_3_cameras": _errors(3.0), "divergences": 0, "max_rhat_all": 1.004,
           "max_rhat_variable": "x", "min_ess_bulk_all": 512.0, "min_ess_bulk_variable": "obs_sigma_ck",
           "fraction_x_rhat_above_1.01": 0.0, "outlier_rate_correlation": 0.93, "wall_s": 150.0}
    moved = {**row, "moves": {"candidate_runs": 120, "rounds": 16, "tried": 4000, "accepted": 500}}
    _write_observation_result(tmp_path, "observation_models", 100, {"per (camera, keypoint), uniform outliers": row,
                                                                    "with moves + moves (PyMC NUTS)": moved})
    page = _ablation_page(tmp_path)
    assert "## Observation models on `rodent18_realistic`, T=100" in page
    assert "**with moves + moves (PyMC NUTS)**: PyMC's NUTS" in page and "4000 moves tried" in page
    assert "dealt into 16 rounds per iteration" in page
    assert "500 accepted (12.5%)" in page and page.count("moves tried") == 1  # only the row sampled with them
    assert ("| per (camera, keypoint), uniform outliers | 2 / 1 / 4 | 0.4 / 0.4 | 3 / 1.5 / 6 | 0 | 1.004 (x) | "
            "512 (obs_sigma_ck) | 0.0% |  |  | 0.93 | 150 |") in page
    assert "rodent18_realistic" not in _performance_page(tmp_path, tmp_path / "out")
    assert "R-hat > 1.01 at" not in page  # converged rows get no localisation paragraph


def test_ablation_page_says_where_unconverged_positions_sit(tmp_path):
    """A row with positions above R-hat 1.01 gets a paragraph: keypoints, frame runs, chain spread, errors there."""
    from gimbal.divergence.book import _ablation_page

    where = {"pairs": 3, "keypoints": {"ShinL": 2, "ArmR": 1}, "frame_runs": [[5, 6], [40, 40]],
             "chain_mean_spread_mm": {"median": 1.02, "max": 29.3}, "patterns": {"separate_modes": 1, "slow_mixing": 2},
             "fraction_wrong_in_3_cameras": 0.67,
             "error_mean_mm": 4.2, "triangulation_error_mean_mm": 14.7}
    row = {"errors": _errors(2.0), "errors_wrong_in_3_cameras": _errors(3.0), "divergences": 0, "max_rhat_all": 1.67,
           "max_rhat_variable": "x", "min_ess_bulk_all": 6.4, "min_ess_bulk_variable": "x",
           "fraction_x_rhat_above_1.01": 0.0025, "x_rhat_above_1.01": where, "wall_s": 2200.0,
           "rhat_exceedances": {"observed": 5, "expected": 0.976, "verdict": "beyond"}}
    _write_observation_result(tmp_path, "observation_models_T1800", 1800, {"default": row})
    page = _ablation_page(tmp_path)
    assert "| 5 / 0.98, beyond |" in page and "*By chance*: how many coordinates" in page
    assert ("**default**: positions with R-hat > 1.01 at 3 (frame, keypoint) pairs in 2 runs of frames; most at "
            "ShinL (2), ArmR (1). 67% of those pairs") in page
    assert ("1.02 mm apart at the median and up to 29.3 mm; pattern of each pair's least converged coordinate: "
            "separate_modes 1, slow_mixing 2.") in page
    assert "posterior mean 4.2 mm, triangulation 14.7 mm" in page


def test_ablation_page_says_a_row_was_sampled_in_windows(tmp_path):
    """`--window`: the section says the positions' R-hat is their own window's; a cell without a variable is bare."""
    from gimbal.divergence.book import _ablation_page

    row = {"errors": _errors(2.0), "errors_wrong_in_3_cameras": _errors(3.0), "divergences": 0, "max_rhat_all": 1.02,
           "max_rhat_variable": "x", "min_ess_bulk_all": 95.0, "min_ess_bulk_variable": None,
           "fraction_x_rhat_above_1.01": 0.0001, "wall_s": 2000.0}
    _write_observation_result(tmp_path, "observation_models_T1800_window200", 1800, {"default, windows of 200 frames": row},
                              window=200, overlap=10)
    page = _ablation_page(tmp_path)
    assert "## Observation models on `rodent18_realistic`, T=1800, in windows of 200 frames\n" in page
    assert "200 kept frames each, 10 more sampled on either side" in page
    assert "| 1.02 (x) | 95 | 0.0% |" in page
