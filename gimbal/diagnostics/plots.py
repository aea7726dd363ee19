"""Diagnostic plots for any NUTS trace; each returns the written path.

Every figure has a title, axis labels and is saved to a file, then closed.
Outside Jupyter the Agg backend is selected (no display needed, no windows);
inside a Jupyter kernel the backend is left alone, so a user's inline figures
keep working. ArviZ (``arviz_plots``) draws the trace, energy
and pair plots; step size / tree depth and the localization profile, which
ArviZ has no plot for, are drawn here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # scripts, CLIs, workers: files only; a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from .io import write_json  # noqa: E402
from .sampling import _group, normalize_sample_stats  # noqa: E402

__all__ = [
    "plot_trace_selected",
    "plot_energy",
    "plot_step_size_treedepth",
    "plot_divergence_pairs",
    "plot_localization",
    "plot_logp_terms",
    "plot_gradient_by_variable",
    "scalar_subset",
    "write_manifest",
    "save_figure",
]


def save_figure(fig, path) -> Path:
    """Save a figure (110 dpi, tight box), close it, and return the path; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def scalar_subset(trace, var_names, max_elements: int = 4) -> xr.DataTree:
    """A small trace holding up to ``max_elements`` scalar series picked from ``var_names``.

    Elements are taken round-robin (the first element of every variable, then
    the second, ...) and labelled by index (``bone_length[0]``), so pair and
    trace plots of models with thousands of parameters stay readable.
    """
    post = _group(trace, "posterior")
    flats = {}
    for name in var_names:
        if name not in post:
            continue
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *extra).values.reshape(da.sizes["chain"], da.sizes["draw"], -1)
        shape = [da.sizes[d] for d in extra]
        flats[name] = (values, shape)
    picked = {}
    rank = 0
    while len(picked) < max_elements and any(rank < v.shape[-1] for v, _ in flats.values()):
        for name, (values, shape) in flats.items():
            if rank < values.shape[-1] and len(picked) < max_elements:
                idx = np.unravel_index(rank, shape) if shape else ()
                label = f"{name}[{', '.join(map(str, idx))}]" if shape else name
                picked[label] = (("chain", "draw"), values[..., rank])
        rank += 1
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}
    stats = _group(trace, "sample_stats")
    return xr.DataTree.from_dict({"posterior": xr.Dataset(picked, coords=coords), "sample_stats": stats})


def plot_trace_selected(trace, var_names, path, title="Trace of selected parameters") -> Path:
    import arviz_plots as azp

    sub = scalar_subset(trace, var_names, max_elements=6)
    pc = azp.plot_trace_dist(sub, backend="matplotlib")
    fig = pc.viz["figure"].item() if hasattr(pc.viz["figure"], "item") else pc.viz["figure"]
    fig.suptitle(f"{title}: chains should overlap and look like stationary noise")
    return save_figure(fig, path)


def plot_energy(trace, path, ebfmi=None) -> Path:
    import arviz_plots as azp

    pc = azp.plot_energy(trace, backend="matplotlib")
    fig = pc.viz["figure"].item() if hasattr(pc.viz["figure"], "item") else pc.viz["figure"]
    label = "" if not ebfmi else " (E-BFMI per chain: " + ", ".join(f"{b:.2f}" for b in ebfmi) + "; < 0.3 flags trouble)"
    fig.suptitle("Energy: marginal vs transition distributions should match" + label)
    return save_figure(fig, path)


def plot_step_size_treedepth(trace, path, max_treedepth: int = 10) -> Path:
    """Step size through warm-up and sampling, and tree depth per draw, per chain."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for group, offset_label in (("warmup_sample_stats", "warm-up"), ("sample_stats", "sampling")):
        node = _group(trace, group)
        if node is None:
            continue
        stats = normalize_sample_stats(trace, group)
        n_warm = _group(trace, "warmup_sample_stats").sizes["draw"] if group == "sample_stats" and _group(trace, "warmup_sample_stats") is not None else 0
        for c in stats["chain"].values:
            x = np.arange(stats.sizes["draw"]) + n_warm
            if "step_size" in stats:
                axes[0].plot(x, stats["step_size"].sel(chain=c), lw=0.8, label=f"chain {c} {offset_label}")
            if "tree_depth" in stats and group == "sample_stats":
                axes[1].plot(x, stats["tree_depth"].sel(chain=c), ".", ms=3, label=f"chain {c}")
    axes[0].set_yscale("log")
    axes[0].set(title="Step size (warm-up adapts, then fixed)", xlabel="iteration", ylabel="step size")
    axes[1].axhline(max_treedepth, color="red", ls="--", lw=1, label="max depth")
    axes[1].set(title="Tree depth per draw (hitting the max = inefficiency)", xlabel="iteration", ylabel="tree depth")
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_divergence_pairs(trace, var_names, path) -> Path:
    """Pair plot of a few parameters, divergent draws highlighted (funnel necks show up as clusters)."""
    import arviz_plots as azp

    sub = scalar_subset(trace, var_names, max_elements=3)
    if len(sub["posterior"].data_vars) >= 2:
        pc = azp.plot_pair(sub, backend="matplotlib", visuals={"divergence": True})
        fig = pc.viz["figure"].item() if hasattr(pc.viz["figure"], "item") else pc.viz["figure"]
    else:  # one parameter: draw it against the log density
        post = sub["posterior"].to_dataset()
        name = list(post.data_vars)[0]
        stats = normalize_sample_stats(trace)
        fig, ax = plt.subplots(figsize=(5, 4))
        div = stats["diverging"].values.astype(bool).ravel()
        xv, yv = post[name].values.ravel(), stats["lp"].values.ravel()
        ax.scatter(xv[~div], yv[~div], s=6, alpha=0.5, label="draws")
        ax.scatter(xv[div], yv[div], s=12, color="red", label="divergent")
        ax.set(xlabel=name, ylabel="log density")
        ax.legend()
    fig.suptitle("Selected parameters; divergent draws highlighted: clusters mark where the geometry breaks")
    return save_figure(fig, path)


def plot_localization(localization: dict, path) -> Path:
    """Per-frame and per-keypoint displacement of divergent draws, and the most displaced variables."""
    profiles = localization.get("profiles", {})
    panels = [d for d in ("frame", "keypoint") if d in profiles] + ["variables"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "variables":
            vs = localization.get("variables", [])[:8]
            ax.barh([v["name"] for v in vs][::-1], [v["z"] for v in vs][::-1], color="tab:red")
            ax.set(title="Most displaced variables", xlabel="z (divergent - others, in sd)")
            if not vs:
                ax.text(0.5, 0.5, localization.get("note", "no divergences"), ha="center", va="center", transform=ax.transAxes)
        else:
            prof = profiles[panel]
            xs = np.arange(len(prof["coords"]))
            if panel == "frame":
                ax.plot(prof["coords"], prof["mean_abs_z"], color="tab:red")
            else:
                ax.bar(xs, prof["mean_abs_z"], color="tab:red")
                ax.set_xticks(xs, [str(c) for c in prof["coords"]], rotation=60, fontsize=7)
            ax.set(title=f"Divergence displacement per {panel}", xlabel=panel, ylabel="mean |z|")
    fig.suptitle(f"Divergence localization ({localization.get('n_divergent', 0)} divergent draws): peaks mark where the geometry breaks")
    return save_figure(fig, path)


def plot_logp_terms(terms: dict, path, top: int = 10) -> Path:
    """Bar chart of the worst log-density terms at a point."""
    items = list(terms.items())[:top]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(items) + 1.5))
    vals = [v if np.isfinite(v) else np.nan for _, v in items]
    ax.barh([k for k, _ in items][::-1], vals[::-1], color="tab:blue")
    for i, (k, v) in enumerate(items[::-1]):
        if not np.isfinite(v):
            ax.text(0, i, f" {v}", color="red", va="center")
    ax.set(title="Worst log-density terms at the initial point (non-finite in red)", xlabel="log density")
    return save_figure(fig, path)


def plot_gradient_by_variable(per_variable: dict, path) -> Path:
    """Largest absolute gradient component of every variable (log scale)."""
    names = list(per_variable)
    vals = [max(per_variable[n]["max_abs"], 1e-300) for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    ax.barh(names, vals, color=["tab:red" if per_variable[n]["nan"] or per_variable[n]["inf"] else "tab:blue" for n in names])
    ax.set_xscale("log")
    ax.set(title="Largest |gradient| per variable at the initial point (red: NaN/inf present)", xlabel="max |d logp / d value|")
    return save_figure(fig, path)


def write_manifest(directory, produced: dict, failed: dict, captions: dict | None = None) -> Path:
    """``artifacts_manifest.json``: produced files (with captions) and plots that could not be drawn."""
    directory = Path(directory)
    files = [{"file": Path(p).name, "caption": (captions or {}).get(k, ""), "kind": k} for k, p in produced.items()]
    return write_json(directory / "artifacts_manifest.json", {"files": files, "failed": failed})


def read_manifest(directory) -> dict:
    path = Path(directory) / "artifacts_manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"files": [], "failed": {}}


def plot_rhat_map(conv, path) -> Path:
    """Where a variable fails to converge: per-element R-hat over its first two dims (seaborn heatmap).

    ``conv`` is a :class:`~gimbal.diagnostics.convergence.VariableConvergence`. Further dims are reduced by their
    maximum (a keypoint's worst coordinate); a 1-D variable is drawn as one row. Cells above the flag threshold
    are outlined by the colour scale's upper part; the worst elements are listed in the report.
    """
    import seaborn as sns

    rhat = conv.rhat
    dims = list(rhat.dims)
    if len(dims) > 2:
        rhat = rhat.max(dims[2:])
        dims = dims[:2]
    table = rhat.to_pandas() if len(dims) == 2 else rhat.to_pandas().to_frame().T if dims else None
    if table is None:
        raise ValueError(f"{conv.variable} is a scalar: nothing to map.")
    if len(dims) == 2 and table.shape[0] > table.shape[1]:
        table = table.T  # long axis (frames) horizontal
    width = min(18.0, 3.0 + 0.12 * table.shape[1])
    fig, ax = plt.subplots(figsize=(width, 2.6 + 0.32 * table.shape[0]), layout="constrained")
    vmax = max(1.05, float(np.nanmax(table.values)) if np.isfinite(table.values).any() else 1.05)
    sns.heatmap(table, ax=ax, cmap="rocket_r", vmin=1.0, vmax=vmax, cbar_kws={"label": "R-hat (rank-normalized, folded)"},
                xticklabels=max(1, table.shape[1] // 25), yticklabels=True)
    ax.set(title=f"R-hat of '{conv.variable}' per element ({conv.n_flagged} above {conv.rhat_threshold}; "
                 f"pattern: {(conv.pattern or 'none').replace('_', ' ')})",
           xlabel=str(table.columns.name or ""), ylabel=str(table.index.name or ""))
    return save_figure(fig, path)
