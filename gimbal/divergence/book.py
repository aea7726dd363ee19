"""``gimbal diag book``: a Jupyter Book (1.x) generated from one run's artifacts, in any folder.

The book's configuration ships with the package (``book_template/``). For a
project folder ``P`` (default: the current one) the source is
``P/_build/book_source`` (the template's ``_config.yml`` and ``_toc.yml``, and the
pages under ``book/generated/``, never edited by hand, never committed); it is
built with ``jupyter-book build -W -n --keep-going`` (``execute_notebooks: "off"``:
papermill already ran the notebooks; the book never re-runs a model) into
``P/_build/html``. Benchmark tables come from ``P/benchmarks/results`` when present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt

from ..diagnostics import io
from ..diagnostics.book import run_jupyter_book
from .paths import DEFAULT_ROOT, make_paths
from ..diagnostics.plots import save_figure  # its import selects a headless backend outside Jupyter
from ..diagnostics.report import fmt, md_table
from .report import render_report
from .results import dataset_label, excluded_of
from .groups import GROUPS, group_desc
from .summary import collect_run, list_runs, run_not_run, summary_markdown, temporal_series, write_summary

__all__ = ["BOOK_DIR", "book_source", "generate_pages", "build_book", "register"]

BOOK_DIR = Path("book") / "generated"  # pages, relative to the book source
TEMPLATE = Path(__file__).resolve().parent / "book_template"


def book_source(project_dir=".") -> Path:
    """Where the book's source (configuration + generated pages) of a project folder lives."""
    return Path(project_dir).resolve() / "_build" / "book_source"


def _temporal_figure(series, path) -> Path | None:
    if not series:
        return None
    T = [p["T"] for p in series]
    panels = [("divergence_fraction", "divergence rate", lambda v: 100 * (v or 0), "%"),
              ("max_rhat", "max R-hat", lambda v: v, ""), ("min_ess_bulk_per_s", "min bulk ESS / s", lambda v: v, ""),
              ("compile_s", "compile time", lambda v: v, "s")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), layout="constrained")
    for ax, (key, label, f, unit) in zip(axes, panels):
        ax.plot(T, [f(p.get(key)) if p.get(key) is not None else float("nan") for p in series], "o-")
        ax.set(xscale="log", xlabel="T (frames)", ylabel=f"{label} {('(' + unit + ')') if unit else ''}", title=label)
        if key == "max_rhat":
            ax.axhline(1.01, color="red", ls="--", lw=1)
    fig.suptitle("Temporal scaling of the full model")
    return save_figure(fig, path)


def _copy_notebook(src: Path, dst: Path, title: str) -> None:
    """Copy an executed notebook, retitled so 8a-8e (one template) get distinct page titles."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    first = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first is not None and first.source.startswith("# "):
        first.source = f"# {title}" + first.source[first.source.find(chr(10)):] if chr(10) in first.source else f"# {title}"
    nbformat.write(nb, dst)


def _group_page(result: dict, root: Path, run_id: str, out: Path) -> str:
    g = result["header"]["group"]
    gd = group_desc(g)
    paths = make_paths(gd, run_id, root)
    if not paths.results_run.exists():  # requested, but it crashed before writing anything
        v = result["verdict"]
        return (f"# Group {g}: no results\n\n```{{error}}\n{v['interpretation']}\n```\n\n**What to do next.** "
                f"{v['next_action']}\n")
    fig_dir = out / "figures" / gd
    plot_paths, captions = {}, {}
    manifest_path = paths.plots_run / "artifacts_manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {"files": []}
    for f in manifest["files"]:
        src = paths.plots_run / f["file"]
        if src.exists():
            fig_dir.mkdir(parents=True, exist_ok=True)
            plot_paths[f["kind"]] = Path(shutil.copyfile(src, fig_dir / f["file"]))
            captions[f["kind"]] = f["caption"]
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    json_copy = Path(shutil.copyfile(paths.results_run, data_dir / paths.results_run.name))
    page = out / "groups" / f"{gd}.md"
    text = render_report(result, page, json_copy, plot_paths, captions, book=True)
    nb_src = paths.notebook_run
    if nb_src.exists():
        (out / "notebooks").mkdir(parents=True, exist_ok=True)
        _copy_notebook(nb_src, out / "notebooks" / f"{gd}.ipynb", f"Notebook of group {g}: {result['header']['title']}")
        text = text.replace("\n## 1. Header", f"\nThe executed notebook of this run: {{doc}}`../notebooks/{gd}`.\n\n## 1. Header", 1)
    return text


def _runs_page(root: Path) -> str:
    runs = list_runs(root)
    lines = ["# Run history\n", "Every run found under the diagnostics root, oldest first: compare columns to see what a change "
             "of model, data or sampler did (for example before and after a fix). Each cell: verdict code, divergences, max R-hat.\n"]
    table = {g: {} for g in GROUPS}
    for run in runs:
        for r in collect_run(root, run):
            s, v = r.get("sampling") or {}, r.get("verdict") or {}
            cell = v.get("code", "-")
            if s:
                cell += f"; {s['divergences']}/{s['total_draws']} div; R-hat {fmt(s.get('max_rhat_all'), 3)}"
            table[r["header"]["group"]][run] = cell
    rows = [[g] + [table[g].get(run, "-") for run in runs] for g in GROUPS if table[g]]
    lines.append(md_table(["group"] + runs, rows) + "\n")
    return "\n".join(lines)


def _data_page(results: list[dict], root: Path, run_id: str, out: Path) -> str:
    """The data as the groups saw it: read from each group's dataset artifact, never regenerated or downloaded."""
    import xarray as xr

    from ..datasets import read_dataset_file
    from ..plotting import plot_detections, plot_position_errors, plot_skeleton_3d
    from .groups import DATASET_ARTIFACT

    name = dataset_label(results[0]["header"])
    lines = [f"# The data: `{name}`\n"]
    saved = [(r, make_paths(group_desc(r["header"]["group"]), run_id, root).debug_dir) for r in results]
    saved = [(r, d) for r, d in saved if (d / DATASET_ARTIFACT).is_file()]
    if not saved:
        return "\n".join(lines + ["No group of this run saved its dataset (runs before gimbal 0.4 did not), so there "
                                  "are no data figures. Re-run the groups to get them.\n"])
    widest, wdir = max(saved, key=lambda rd: (rd[0]["header"].get("T") or 0, rd[0]["header"].get("K") or 0))
    full = read_dataset_file(wdir / DATASET_ARTIFACT)
    desc = str(full.attrs.get("description", "")).rstrip()
    lines.append(f"{desc + ('' if not desc or desc.endswith('.') else '.')} As run by group {widest['header']['group']}: "
                 f"T={full.sizes['frame']} frames, C={full.sizes['camera']} cameras "
                 f"({', '.join(map(str, full['camera'].values))}), K={full.sizes['keypoint']} keypoints, units "
                 f"{full.attrs.get('units', '')}.\n")
    check = full.attrs.get("calibration_check")
    if check:
        rep = json.loads(check)
        rows = [[c["name"], c["n_points"], fmt(c["heldout_median_px"]), "flagged: " + c["cause"] if c["flagged"] else "ok"]
                for c in rep["cameras"]]
        lines.append("## Calibration check at import\n")
        lines.append("Median reprojection error of each camera's detections from the other cameras' triangulation "
                     f"({rep['rule']}).\n")
        lines.append(md_table(["camera", "detections", "held-out median (px)", "verdict"], rows) + "\n")
    fig = out / "figures" / "data"
    plot_skeleton_3d(full, fig / "skeleton.png")
    plot_detections(full, fig / "detections.png")
    lines.append("```{figure} figures/data/skeleton.png\n:alt: skeleton\n:width: 60%\n\nThe skeleton tree in 3D at frame 0; "
                 "every bone joins a keypoint to its parent.\n```\n")
    lines.append("```{figure} figures/data/detections.png\n:alt: detections\n:width: 100%\n\nFrame 0's 2D detections in "
                 "each camera (over the camera's video frame where the dataset names a video); red crosses are known "
                 "outliers, missing detections are listed.\n```\n")
    # the posterior of the longest sampling group whose trace was kept
    candidates = [(r, d) for r, d in saved if r.get("sampling") and r["header"].get("T")]
    for r, ddir in sorted(candidates, key=lambda rd: -rd[0]["header"]["T"]):
        trace_path = ddir / "trace.nc"
        if not trace_path.exists():
            continue
        ds = full if ddir == wdir else read_dataset_file(ddir / DATASET_ARTIFACT)  # read each artifact once
        ref = "positions_true" if "positions_true" in ds else ("positions_reference" if "positions_reference" in ds else None)
        if ref is None:
            continue
        with xr.open_datatree(trace_path, engine="h5netcdf") as tree:
            if "x" not in tree["posterior"]:
                continue
            mean = tree["posterior"]["x"].mean(("chain", "draw")).values
        h = r["header"]
        plot_position_errors(ds, mean, fig / "errors.png", reference=ref)
        err = r.get("position_error") or {}
        lines.append(f"## 3D error against {'ground truth' if ref == 'positions_true' else 'the reference reconstruction'}\n")
        lines.append(f"From group {h['group']} (T={h['T']}): posterior-mean median error "
                     f"{fmt((err.get('posterior_mean') or {}).get('median'))} vs robust triangulation "
                     f"{fmt((err.get('triangulation') or {}).get('median'))} {full.attrs.get('units', '')}.\n")
        lines.append("```{figure} figures/data/errors.png\n:alt: errors\n:width: 100%\n\nMedian 3D error per frame and mean "
                     "error per keypoint: the posterior mean should sit below triangulation, most of all where detections are wrong.\n```\n")
        break
    return "\n".join(lines)


def _environment_page(results: list[dict], run_id: str) -> str:
    env = results[0]["header"]["environment"]
    lines = ["# Environment and how to reproduce\n", f"Run `{run_id}`: Python {env['python']} on {env['platform']}.\n"]
    lines.append(md_table(["package", "version"], sorted(env["packages"].items())) + "\n")
    lines.append("## Commands\n")
    lines.append("Each group can be re-run on its own with the exact parameters it used:\n")
    for r in results:
        h = r["header"]
        p = h.get("parameters", {})
        cmd = f"gimbal diag run --groups {h['group']} --run-id {run_id}-again --profile {h['profile']} --dataset {h['dataset']} --seed {h['seed']}"
        if p.get("max_T"):
            cmd += f" --max-T {p['max_T']}"
        if p.get("max_K"):
            cmd += f" --max-K {p['max_K']}"
        if excluded_of(h):
            cmd += f" --exclude {','.join(excluded_of(h))}"
        if p.get("prior"):
            cmd += f' --prior "{p["prior"]}"' if " " in p["prior"] else f" --prior {p['prior']}"
        s = h.get("sampling_settings") or {}
        if s:
            cmd += f" --chains {s['chains']} --tune {s['tune']} --draws {s['draws']} --sampler {s['sampler']}"
            for key, flag, default in (("target_accept", "--target-accept", 0.8), ("maxdepth", "--maxdepth", 10),
                                       ("backend", "--backend", "numba")):
                if s.get(key, default) != default:
                    cmd += f" {flag} {s[key]}"
        elif p.get("backend", "numba") != "numba":  # no sampling, but the backend chose the model's kernels
            cmd += f" --backend {p['backend']}"
        lines.append(f"Group {h['group']} ({h['title']}):\n\n```bash\n{cmd}\n```\n")
    return "\n".join(lines)


def _gradient_section(data: dict, rows: list[dict]) -> str:
    """``benchmarks/results/gradient_T*.json``: one logp + gradient per model, timed in interleaved rounds."""
    text = (f"One logp + gradient at T = {data['T']} (median of {data['rounds']} interleaved rounds of "
            f"{data['evals_per_round']} calls each, at the initial point). Sampling time is this cost times the "
            "gradients per draw, so the ratio to the seed's model is what the default model costs per step.\n")
    table = md_table(["configuration", "dataset", "states", "parameters", "logp+grad ms (p10-p90)", "ratio to the seed's"],
                     [[r["configuration"], r["dataset"], r["n_states"], r["n_parameters"],
                       f"{fmt(r['logp_grad_median_ms'], 3)} ({fmt(r['logp_grad_p10_ms'], 3)}-{fmt(r['logp_grad_p90_ms'], 3)})",
                       fmt(r["ratio_to_seed_model"], 3)] for r in rows])
    return text + "\n" + table + "\n"


def _performance_page(project: Path, out: Path) -> str:
    """Tables and curves from ``benchmarks/results/*.json`` (written by ``python -m benchmarks``)."""
    results_dir = project / "benchmarks" / "results"
    files = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    lines = ["# Performance\n"]
    if not files:
        lines.append("No benchmark results yet. Run `python -m benchmarks scaling` and `python -m benchmarks sampling` "
                     "(add `--quick` for a smoke run); this page then shows their tables and curves.\n")
        return "\n".join(lines)
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        if data.get("benchmark") in ("ablation", "prior_transfer", "observation_models"):
            continue  # on the Ablation page
        if "benchmark" not in data or "dataset" not in data:
            lines.append(f"`{f.name}` is not a benchmark result this page knows (no `benchmark`/`dataset`); skipped.\n")
            continue
        rows = [r for r in data.get("rows", []) if "error" not in r]
        if data.get("benchmark") == "loco":
            lines.append(_loco_section(data))
            continue
        lines.append(f"## {data['benchmark']}: `{data['dataset']}`{' (quick)' if data.get('quick') else ''}\n")
        accel = f"; JAX device {data['machine']['jax_device']}" if data["machine"].get("jax_device") else ""
        lines.append(f"Machine: {data['machine']['platform']}, {data['machine']['cpu_count']} CPUs{accel}.\n")
        if data["benchmark"] == "scaling":
            lines.append(md_table(["T", "parameters", "build s", "compile cold s", "compile warm s", "logp+grad ms", "peak MiB"],
                                  [[r["T"], r["n_parameters"], r["build_s"], r["compile_cold_s"], r["compile_warm_s"],
                                    r["logp_grad_median_ms"], r["peak_rss_mib"]] for r in rows]) + "\n")
            ratios = data.get("ratios") or {}
            if ratios:
                cold, warm = ratios.get("compile_cold_ratio_vs_lowest", {}), ratios.get("compile_warm_ratio_vs_lowest", {})
                per_T = ", ".join(f"T={T}: x{cold[T]:.2f} / x{warm[T]:.2f}" for T in sorted(cold, key=int) if T in warm)
                lines.append(f"Compile time (median over repeats) relative to T={ratios['T_low']}, cold / warm cache: "
                             f"{per_T or 'n/a'}.\n")
            fig_path = out / "figures" / f"{f.stem}.png"
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
            Ts = [r["T"] for r in rows]
            axes[0].plot(Ts, [r["compile_cold_s"] for r in rows], "o-", label="cold")
            axes[0].plot(Ts, [r["compile_warm_s"] for r in rows], "o-", label="warm")
            axes[0].set(xscale="log", xlabel="T (frames)", ylabel="seconds", title="Compile time")
            axes[0].legend()
            axes[1].plot(Ts, [r["logp_grad_median_ms"] for r in rows], "o-")
            axes[1].set(xscale="log", yscale="log", xlabel="T (frames)", ylabel="ms", title="One logp + gradient (median)")
            save_figure(fig, fig_path)
            lines.append(f"```{{figure}} figures/{fig_path.name}\n:alt: scaling\n:width: 100%\n\nCompile time should stay flat "
                         "in T; evaluation cost should grow linearly (slope 1 on log-log axes).\n```\n")
        elif data["benchmark"] == "rhat_chance":
            lines.append("The largest R-hat that exactly converged chains reach by chance, as a function of how many "
                         "elements the maximum is taken over and of the ESS per draw (simulated stationary AR(1) chains, "
                         "ArviZ's rank-normalized split R-hat). Read a measured *max R-hat over every latent* against it: "
                         "at tens of thousands of positions, 1.01 can be exceeded by chance alone.\n")
            lines.append(md_table(["chains x draws", "elements", "ESS per draw", "bulk ESS", "max R-hat by chance"],
                                  [[f"{r['chains']} x {r['draws']}", r["n_elements"], r["ess_fraction"], r["ess_bulk"],
                                    fmt(r["chance_max_rhat"], 5)] for r in rows]) + "\n")
        elif data["benchmark"] == "windowed":
            lines.append("Windowed inference (`gimbal.model.windowed.sample_windowed`): each window is sampled on its own and "
                         "only its core frames are kept; R-hat and ESS are the worst over all windows.\n")
            lines.append(md_table(["T", "windows", "chains x draws", "max depth", "divergences", "max R-hat (latents)",
                                   "min bulk / tail ESS", "grad/draw", "sampling s", "wall s",
                                   "error posterior / triangulation", "peak MiB"],
                                  [[r["T"], f"{r['n_windows']} x ({r['window']} + 2 x {r['overlap']})",
                                    f"{r['chains']} x {r['draws']}", r.get("maxdepth", 10), r["divergences"],
                                    r["max_rhat_latents"],
                                    f"{fmt(r['min_ess_bulk_latents'])} / {fmt(r.get('min_ess_tail_latents'))}",
                                    r["mean_grad_evals_per_draw"], r["sample_s"], r["wall_s"],
                                    f"{fmt(r['posterior_median_error'], 3)} / {fmt(r['triangulation_median_error'], 3)}",
                                    r["peak_rss_mib"]] for r in rows]) + "\n")
        elif data["benchmark"] == "backends":
            lines.append(_backends_section(rows))
        elif data["benchmark"] == "gradient":
            lines.append(_gradient_section(data, rows))
        else:
            lines.append("Every row ran with nutpie; the *backend* column says which compiler built its logp and "
                         "gradient and on what machine (compare sampling times only between rows of the same machine). "
                         "*Wall s* is build + compile + sampling + the R-hat/ESS summary. Where a row records it, the "
                         "R-hat column gives in brackets the maximum that exactly converged chains reach by chance over "
                         "as many positions with the median position's ESS (`chance_max_rhat`): a measured maximum "
                         "near it is chance, one far above it is a mixing problem.\n")
            lines.append(md_table(["T", "backend, machine", "chains x draws (seed)", "max depth, target accept",
                                   "divergences", "max R-hat, latents (by chance)", "min bulk / tail ESS", "ESS/s",
                                   "grad/draw", "sampling s", "wall s", "error posterior / triangulation", "peak MiB",
                                   "draws held in"],
                                  [[r["T"], _backend_label(r, data["machine"]),
                                    f"{r['chains']} x {r['draws']} ({r.get('seed', 1)})",
                                    f"{r.get('maxdepth', 10)}, {r.get('target_accept', 0.8)}", r["divergences"],
                                    fmt(r["max_rhat_latents"], 5) + (f" ({fmt(r['chance_max_rhat_positions'], 5)})"
                                                                     if r.get("chance_max_rhat_positions") else ""),
                                    f"{fmt(r['min_ess_bulk_latents'])} / {fmt(r.get('min_ess_tail_latents'))}",
                                    r["min_ess_bulk_per_s"], r["mean_grad_evals_per_draw"], r["sample_s"],
                                    _wall_s(r),
                                    f"{fmt(r['posterior_median_error'], 3)} / {fmt(r['triangulation_median_error'], 3)}",
                                    r.get("peak_rss_mib"), "disk (zarr)" if "zarr" in r.get("stored", "") else "memory"]
                                   for r in rows]) + "\n")
    return "\n".join(lines)


def _loco_section(data: dict) -> str:
    """The leave-one-camera-out table of ``gimbal evaluate`` (validation without ground truth)."""
    st = data["settings"]
    text = [f"## Leave one camera out: `{data['dataset']}` (T={data['T']}, K={data['K']})\n",
            f"Machine: {data['machine']['platform']}, {data['machine']['cpu_count']} CPUs. For each camera, the model was "
            f"fitted without it ({st['chains']} chains x ({st['tune']} + {st['draws']})); the posterior mean and robust "
            "triangulation from the same remaining cameras were projected into it (raw pixels, lens distortion included) "
            "and compared with its detections"
            + (f" of confidence >= {st['min_confidence']}" if st.get("min_confidence") is not None else "")
            + ". Both are scored on the same detections, those every method places; the held-out detections of "
              "keypoints that fewer than two remaining cameras see, which only the model places, are counted apart "
              "(*posterior only*). A ratio below 1 means the model placed keypoints better than triangulation where it "
              "could not see them; its *90% interval* comes from resampling blocks of frames (what other frames of the "
              "same session would give; the cameras and their calibration stay those of this one); *closer* is the "
              "share of the scored detections that the model's point reprojects "
              "closer to than triangulation's (a paired view of the same comparison); *keypoints lower*: of the "
              "keypoints scored, those whose median error is lower for the model (the pooled median mixes easy and "
              "hard keypoints, so it can rise while most keypoints improve). Bone CV: median over bones of "
              "the length's sd / mean over frames (0 for a rigid skeleton). "
              "Least-squares triangulation: the same consensus moved to the minimum of its inlier cameras' "
              "reprojection error (a stronger baseline than the linear one the ratio uses). *Ratio per chain*: the "
              "ratio with each chain's own mean, which says, where the chains disagree (max R-hat well above 1), "
              "whether the lead holds in each of their regions.\n"]
    rows = [[r["camera"], r["posterior"]["n"], fmt(r["posterior"]["median"]), fmt(r["triangulation"]["median"]),
             fmt(r["ratio_median_posterior_to_triangulation"]), _interval(r.get("ratio_median_interval")),
             fmt(r["posterior"]["p90"]), fmt(r["triangulation"]["p90"]),
             f"{fmt(r['bone_cv_posterior'])} / {fmt(r['bone_cv_triangulation'])}",
             _median_p90(r.get("triangulation_least_squares")), _posterior_only(r.get("posterior_only")),
             _percent(r.get("posterior_closer")), _of(r.get("keypoints_lower"), r.get("keypoints_compared")),
             r["divergences"], fmt(r["max_rhat"], 3), _by_chain(r.get("ratio_median_by_chain")), fmt(r["fit_s"])]
            for r in data["rows"]]
    text.append(md_table(["held-out camera", "detections", "posterior median px", "triangulation median px", "ratio",
                          "ratio 90% interval", "posterior p90", "triangulation p90", "bone CV post / tri",
                          "least-squares triangulation median / p90", "posterior only: detections, median px",
                          "closer", "keypoints lower", "div", "max R-hat", "ratio per chain", "fit s"], rows) + "\n")
    return "\n".join(text)


def _posterior_only(stats: dict | None) -> str:
    """``posterior_only`` of a row; files written before it was scored apart say "n/a"."""
    return "n/a" if stats is None else f"{stats['n']}, {fmt(stats.get('median'))}"


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _interval(bounds: list | None) -> str:
    """``"low-high"`` of a ratio's interval, or "n/a" (older result files lack it)."""
    return "n/a" if not bounds else f"{fmt(bounds[0], 3)}-{fmt(bounds[1], 3)}"


def _by_chain(ratios: list | None) -> str:
    """Each chain's ratio, or "n/a" (older result files lack them)."""
    return "n/a" if not ratios else " / ".join(fmt(r, 3) for r in ratios)


def _of(part: int | None, whole: int | None) -> str:
    """``"part/whole"``, or "n/a" where there is nothing to count (older result files lack the fields)."""
    return "n/a" if not whole else f"{part}/{whole}"


def _median_p90(stats: dict | None) -> str:
    return "n/a" if not stats else f"{fmt(stats.get('median'))} / {fmt(stats.get('p90'))}"


def _wall_s(row: dict) -> str:
    """Build + compile + sampling + summary seconds of a sampling row ("n/a" for rows that did not time the summary)."""
    parts = [row.get(k) for k in ("build_s", "compile_s", "sample_s", "summary_s")]
    return "n/a" if any(p is None for p in parts) else fmt(sum(parts), 4)


def _backend_label(row: dict, machine: dict) -> str:
    """``numba, 2 CPUs`` or ``jax on gpu: NVIDIA H200, 16 CPUs`` for a sampling row (rows carry their own machine)."""
    backend = row.get("backend", "numba")
    where = f" on {row['device']}" if backend == "jax" and row.get("device") else ""
    return f"{backend}{where}, {row.get('machine', machine)['cpu_count']} CPUs"


def _backends_section(rows: list[dict]) -> str:
    """The ``python -m benchmarks backends`` table: numba against JAX, timed side by side in one process."""
    numba = {r["T"]: r["logp_grad_median_ms"] for r in rows if r["variant"] == "numba-fused"}
    text = ("One logp + gradient of the same model and point, per compilation backend, all measured in one process on "
            "this machine: numba on one CPU thread with the fused kernels (what each chain runs by default), and JAX "
            "on its default device with the plain graph, the HMM either frame by frame (*sequential*: one kernel "
            "launch per frame on a GPU) or as a tree of depth log2 T (*parallel*, `hmm_algorithm=\"parallel\"`). "
            "The last two columns compare value and gradient with numba's at that point. Compile time includes "
            "JAX's first call (where it traces and compiles).\n")
    table = md_table(["T", "variant", "device", "compile s", "logp+grad ms", "speed-up vs numba", "logp difference vs numba",
                      "max gradient difference (relative)"],
                     [[r["T"], r["variant"], r["device"], r["compile_s"], r["logp_grad_median_ms"],
                       fmt(numba[r["T"]] / r["logp_grad_median_ms"], 3) if r["T"] in numba else "n/a",
                       fmt(r.get("logp_abs_diff_vs_numba"), 2), fmt(r.get("grad_max_rel_diff_vs_numba"), 2)]
                      for r in rows])
    return text + "\n" + table + "\n"


def _prior_transfer_section(data: dict) -> str:
    """``benchmarks/results/prior_transfer*.json``: the trained prior against the model without it, on real labels."""
    def errs(e):
        return f"{fmt(e['mean'], 3)} / {fmt(e['median'], 3)} / {fmt(e['p90'], 3)}"

    rows = []
    for name, r in data["rows"].items():
        frac = r.get("fraction_x_rhat_above_1.01")
        rows.append([name, errs(r["errors"]), errs(r["errors_wrong_in_3_cameras"]), r.get("divergences", ""),
                     fmt(r.get("max_rhat_x"), 3) if r.get("max_rhat_x") is not None else "",
                     f"{100 * frac:.1f}%" if frac is not None else "", _support_cell(r), r.get("wall_s", "")])
    return "\n".join([
        f"## A trained pose prior: train on `{data['train']}`, test on `{data['test']}`{' (quick)' if data.get('quick') else ''}\n",
        f"The prior ({data['n_states']} pose states in the body frame, heading {' -> '.join(data['heading'])}) is fitted "
        f"on the training animal's manual 3D labels; the test animal's {data['frames_test']} labelled frames get "
        f"detector-like errors ({data['noise']}). 3D error of the posterior mean against the test animal's 3D labels, "
        f"{data['chains']} chains x ({data['tune']} + {data['draws']}); machine: {data['machine']['platform']}, "
        f"{data['machine']['cpu_count']} CPUs.\n",
        md_table(["reconstruction", "all keypoints: mean / median / p90", "wrong in >= 3 cameras: mean / median / p90",
                  "divergences", "max R-hat (x)", "positions with R-hat > 1.01", SUPPORT_HEADER, "wall s"],
                 rows) + "\n",
        SUPPORT_NOTE,
    ])


SUPPORT_HEADER = "of those, seen by <= 1 camera"
SUPPORT_NOTE = ("*Seen by <= 1 camera*: the positions with R-hat > 1.01 whose posterior mean has at most one "
                "detection within 3 noise sds of its projection (`gimbal.model.support`): the pose prior and at most "
                "one camera's ray place them, and a ray can cross the bone's sphere around its parent twice.\n")


CHANCE_HEADER = "coordinates > 1.01: measured / by chance"
CHANCE_NOTE = ("*By chance*: how many coordinates exactly converged chains that mix as fast (each chain's own bulk "
               "ESS, coordinate by coordinate) would put above R-hat 1.01 on average, and the verdict "
               "(`gimbal.diagnostics.chance.rhat_exceedances`): *within* chance, the excess R-hat is what the ESS "
               "gives and more draws lower it; *beyond*, the chains differ by more than their mixing explains.\n")


def _chance_cell(row: dict) -> str:
    """``"<measured> / <expected by chance>, <verdict>"`` coordinates above R-hat 1.01, blank where not recorded."""
    chance = row.get("rhat_exceedances")
    if not chance:
        return ""
    return f"{chance['observed']:,} / {fmt(chance['expected'], 2)}, {chance['verdict'].replace('_', ' ')}"


def _support_cell(row: dict) -> str:
    """``"<weakly supported> of <unconverged>"`` positions of a benchmark row, blank when none or not recorded."""
    support = row.get("unconverged_by_support")
    if not support or not support.get("unconverged"):
        return ""
    return f"{support['unconverged_weakly_supported']} of {support['unconverged']}"


def _value_of(value, digits: int, variable: str | None) -> str:
    """A table cell: the value and, where recorded, the variable it belongs to; blank without a value."""
    if value is None:
        return ""
    return fmt(value, digits) + (f" ({variable})" if variable else "")


def _observation_models_section(data: dict) -> str:
    """``benchmarks/results/observation_models*.json``: observation-model choices against a simulated real detector."""
    def errs(e):
        return f"{fmt(e['mean'], 3)} / {fmt(e['median'], 3)} / {fmt(e['p90'], 3)}"

    tri = data["rows"]["triangulation"]["errors"]
    rows = []
    for name, r in data["rows"].items():
        frac = r.get("fraction_x_rhat_above_1.01")
        ratio = f"{fmt(r['errors']['mean'] / tri['mean'], 2)} / {fmt(r['errors']['p90'] / tri['p90'], 2)}"
        rows.append([
            name, errs(r["errors"]), ratio, errs(r["errors_wrong_in_3_cameras"]), r.get("divergences", ""),
            _value_of(r.get("max_rhat_all"), 4, r.get("max_rhat_variable")),
            _value_of(r.get("min_ess_bulk_all"), 3, r.get("min_ess_bulk_variable")),
            f"{100 * frac:.1f}%" if frac is not None else "", _support_cell(r), _chance_cell(r),
            fmt(r.get("outlier_rate_correlation"), 2) if r.get("outlier_rate_correlation") is not None else "",
            r.get("wall_s", ""),
        ])
    return "\n".join([
        f"## Observation models on `{data['dataset']}`, T={data['T']}{' (quick)' if data.get('quick') else ''}"
        + (f", in windows of {data['window']} frames\n" if data.get("window") else "\n"),
        *([f"Sampled in overlapping windows (`gimbal.model.windowed`): {data['window']} kept frames each, "
           f"{data['overlap']} more sampled on either side; the globals are estimated per window, every position's "
           "R-hat and ESS are those of its own window's chains, divergences are summed over the windows and the "
           "globals' R-hat and ESS are the windows' worst.\n"] if data.get("window") else []),
        "A simulated real detector (`gimbal.datasets.detector_errors`): outlier rates per (camera, keypoint) from 5% to "
        "95% in runs of frames, confident left/right swaps, systematic offsets, scores that overlap between good and "
        "bad detections; the animal turns about the vertical. Each row reconstructs the same frames: robust "
        "triangulation (the baseline), the skeleton-consistent triangulation the chains start from, where present "
        "least squares on the detections the simulator left intact (a reference that knows every outlier, not a "
        "method: what frame-by-frame triangulation reaches without wrong detections), then the models; rows "
        "*on the true inliers* are references too: the default model given only those detections (and, *without "
        "their systematic offsets*, also each pair's offset taken off), so the rest of its error is the inlier "
        "noise's; "
        f"rows marked *+ trained prior* add a pose prior trained on `{data['train']}`'s ground truth ({data['n_states']} states, heading "
        f"{' -> '.join(data['heading'])}). 3D error (mm) of the posterior mean, its ratio to robust triangulation's "
        "(target: at most 0.5 in mean and p90), convergence over every latent (positions and globals), and how well "
        "the per-pair outlier rates track the simulated ones (correlation on the logit scale). "
        f"{data['chains']} chains x ({data['tune']} + {data['draws']}); machine: {data['machine']['platform']}, "
        f"{data['machine']['cpu_count']} CPUs.\n",
        md_table(["reconstruction", "mean / median / p90", "ratio to triangulation (mean / p90)",
                  "wrong in >= 3 cameras", "divergences", "max R-hat (variable)", "min bulk ESS (variable)",
                  "positions with R-hat > 1.01", SUPPORT_HEADER, CHANCE_HEADER, "outlier-rate correlation", "wall s"],
                 rows) + "\n",
        SUPPORT_NOTE,
        CHANCE_NOTE,
        *(_moves_text(name, r["moves"]) for name, r in data["rows"].items() if r.get("moves")),
        *(_unconverged_text(name, r["x_rhat_above_1.01"]) for name, r in data["rows"].items()
          if (r.get("x_rhat_above_1.01") or {}).get("pairs")),
    ])


def _moves_text(name: str, moves: dict) -> str:
    """A row sampled with the moves between explanations: what they are and how often they were taken."""
    share = moves["accepted"] / moves["tried"] if moves["tried"] else None
    return (f"**{name}**: PyMC's NUTS, and after every transition Metropolis moves between each keypoint's "
            f"explanations (`gimbal.model.moves`; {moves['candidate_runs']} candidate runs of frames from the "
            f"detections: two camera groups, one camera's detection as inlier or outlier, one camera's ray"
            + (f"; dealt into {moves['rounds']} rounds per iteration" if moves.get("rounds") else "") + "); "
            f"{moves['tried']} moves tried over the kept draws, {moves['accepted']} accepted"
            + (f" ({100 * share:.1f}%)" if share is not None else "") + ".\n")


def _unconverged_text(name: str, where: dict) -> str:
    """Where a row's positions with R-hat > 1.01 sit, and whether the chains disagree (modes) or only mix slowly."""
    top = sorted(where["keypoints"].items(), key=lambda kv: -kv[1])[:6]
    spread = where["chain_mean_spread_mm"]
    return (f"**{name}**: positions with R-hat > 1.01 at {where['pairs']} (frame, keypoint) pairs in "
            f"{len(where['frame_runs'])} runs of frames; most at " + ", ".join(f"{k} ({n})" for k, n in top) + ". "
            f"{100 * where['fraction_wrong_in_3_cameras']:.0f}% of those pairs have detections wrong in >= 3 cameras. "
            f"The chains' means there lie {fmt(spread['median'], 3)} mm apart at the median and up to "
            f"{fmt(spread['max'], 3)} mm; pattern of each pair's least converged coordinate: "
            + (", ".join(f"{p} {n}" for p, n in where["patterns"].items()) if where.get("patterns") else "not recorded")
            + f". 3D error there: posterior mean "
            f"{fmt(where['error_mean_mm'], 3)} mm, triangulation {fmt(where['triangulation_error_mean_mm'], 3)} mm.\n")


def _ablation_page(project: Path) -> str:
    """One table per ``benchmarks/results/ablation_*.json`` (``python -m benchmarks ablation``)."""
    files = sorted((project / "benchmarks" / "results").glob("ablation_*.json"))
    transfer = sorted((project / "benchmarks" / "results").glob("prior_transfer*.json"))
    observation = sorted((project / "benchmarks" / "results").glob("observation_models*.json"))
    lines = [
        "# Ablation: what each model choice buys\n",
        "Each row switches one default of `build_model` (or of the sampler) back to its alternative and samples the "
        "same data with the same seed, chains and draws. The first row is the default model. *Failure removed* names "
        "what the default choice is there to prevent; the numbers show whether the alternative runs into it.\n",
    ]
    lines.extend(_observation_models_section(json.loads(f.read_text(encoding="utf-8"))) for f in observation)
    lines.extend(_prior_transfer_section(json.loads(f.read_text(encoding="utf-8"))) for f in transfer)
    if not files:
        lines.append("No ablation results yet. Run `python -m benchmarks ablation` (add `--quick` for a smoke run).\n")
        return "\n".join(lines)
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        lines.append(f"## `{data['dataset']}`, T={data['T']}{' (quick)' if data.get('quick') else ''}\n")
        lines.append(f"{data['chains']} chains x ({data['tune']} warm-up + {data['draws']} draws), nutpie; machine: "
                     f"{data['machine']['platform']}, {data['machine']['cpu_count']} CPUs. R-hat and ESS over every latent "
                     "(3D positions included).\n")
        ok = [r for r in data["rows"] if "error" not in r]
        lines.append(md_table(
            ["variant", "parameters", "divergences", "max R-hat (variable)", "min bulk ESS", "positions: max R-hat, min ESS",
             "min E-BFMI", "grad/draw", "ms/grad", "sampling s", "chains", "error ratio"],
            [[r["variant"], r["n_parameters"], r["divergences"], f"{fmt(r['max_rhat_latents'], 4)} ({r['max_rhat_latents_var']})",
              r["min_ess_bulk_latents"],
              f"{fmt(r.get('max_rhat_positions'), 4)}, {fmt(r.get('min_ess_bulk_positions'))}", r["min_ebfmi"], r["mean_grad_evals_per_draw"], r["gradient_ms"], r["sample_s"],
              r["multimodality"], r["error_ratio"]] for r in ok]) + "\n")
        lines.append(md_table(["variant", "failure removed by the default"],
                              [[r["variant"], r["failure_removed_by_default"]] for r in data["rows"]]) + "\n")
        for r in data["rows"]:
            if "error" in r:
                lines.append(f"- `{r['variant']}` failed: {r['error']}\n")
        lines.append("*error ratio*: median 3D error of the posterior mean over that of robust triangulation (lower is "
                     "better; < 1 means the model adds information). *chains*: `ok`, or how chains disagree "
                     "(`label_switching`, `chains_in_different_modes`).\n")
    return "\n".join(lines)


def generate_pages(root, run_id: str | None = None, project_dir=".") -> tuple[Path, str]:
    """Write every page of the book for one run; returns (generated folder, run id)."""
    root, project = Path(root), Path(project_dir)
    runs = list_runs(root)
    if not runs:
        raise FileNotFoundError(f"no diagnostic runs under {root}; run `gimbal diag run` first.")
    run_id = run_id or runs[-1]
    if run_id not in runs:
        raise ValueError(f"run '{run_id}' not found under {root}; available: {', '.join(runs)}.")
    results = collect_run(root, run_id)
    out = book_source(project) / BOOK_DIR
    if out.exists():
        shutil.rmtree(out)  # generated pages only; regenerated from the artifacts every time
    (out / "groups").mkdir(parents=True)
    write_summary(root, run_id)
    fig = _temporal_figure(temporal_series(results), out / "figures" / "temporal_scaling.png")
    io.save_text(out / "report_summary.md", summary_markdown(results, run_id, book=True,
                                                             figure="figures/temporal_scaling.png" if fig else None,
                                                             not_run=run_not_run(root, run_id)))
    for r in results:
        io.save_text(out / "groups" / f"{group_desc(r['header']['group'])}.md", _group_page(r, root, run_id, out))
    if not (out / "notebooks").exists():  # keeps the TOC's notebook glob valid, and says why it is empty
        io.save_text(out / "notebooks" / "none.md", "# No executed notebooks\n\nNo executed notebook was found for run "
                     f"`{run_id}` under `{root}`: the groups were run without `gimbal diag run`.\n")
    io.save_text(out / "runs.md", _runs_page(root))
    ran = [r for r in results if "environment" in r["header"]]  # groups that started (not no_results stand-ins)
    if ran:
        io.save_text(out / "data.md", _data_page(ran, root, run_id, out))
        io.save_text(out / "environment.md", _environment_page(ran, run_id))
    else:
        for page, title in (("data.md", "The data"), ("environment.md", "Environment and how to reproduce")):
            io.save_text(out / page, f"# {title}\n\nNo group of run `{run_id}` started, so there is nothing to show.\n")
    io.save_text(out / "performance.md", _performance_page(project, out))
    io.save_text(out / "ablation.md", _ablation_page(project))
    return out, run_id


def build_book(root, run_id: str | None = None, project_dir=".", strict: bool = True) -> Path:
    """Generate the pages and build the HTML under ``project_dir/_build``; returns the landing page."""
    project = Path(project_dir).resolve()
    source = book_source(project)
    source.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(TEMPLATE / name, source / name)
    generate_pages(root, run_id, project)
    return run_jupyter_book(source, project, strict=strict) / BOOK_DIR / "report_summary.html"


def cmd_book(args) -> int:
    landing = build_book(args.root, args.run_id, ".", strict=not args.no_strict)
    print(f"book built: {landing}")
    return 0


def register(dsub) -> None:
    p = dsub.add_parser("book", help="build the report book from a run's artifacts",
                        description="Generate the report pages from a run's artifacts and build them with Jupyter Book.")
    p.add_argument("--run-id", default=None, help="which run (default: the latest)")
    p.add_argument("--root", default=str(DEFAULT_ROOT), help=f"diagnostics root (default: {DEFAULT_ROOT.as_posix()})")
    p.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    p.set_defaults(func=cmd_book)
