"""Render a group's results as the seed's seven-section Markdown report."""

from __future__ import annotations

import os
from pathlib import Path

from ..diagnostics.report import chance_column_note, fmt, md_table
from .results import dataset_label, parameter_rows

__all__ = ["render_report", "REPORT_SECTIONS"]

REPORT_SECTIONS = (
    "1. Header",
    "2. Model checks",
    "3. Gradient checks",
    "4. Sampling summary",
    "5. Artifacts",
    "6. Interpretation",
    "7. Next action",
)


def _heading_line(heading: dict) -> str:
    """The trained prior's body frame: where its heading baseline is short, and where the chains disagree."""
    base, tip = heading["keypoints"]
    short = heading["short_frames"]
    text = (f"**Body frame (trained prior).** The heading baseline ({base} -> {tip}) seen from above has a median "
            f"length of {fmt(heading['median_length'])} at the posterior mean, shortest {fmt(heading['min_length'])}; ")
    text += (f"{len(short)} of {heading['n_frames']} frames are shorter than {heading['short_fraction']:.0%} of it "
             f"({', '.join(map(str, short[:12]))}{', ...' if len(short) > 12 else ''})" if short else
             f"no frame is shorter than {heading['short_fraction']:.0%} of it")
    unconverged = heading["unconverged_frames"]
    if unconverged:
        text += f"; {heading['unconverged_at_short']} of the {len(unconverged)} frames where the chains disagree are among them"
    return text + ".\n"


def _patterns(payload: dict) -> str:
    conv = payload.get("convergence_localization")
    if not conv:
        return "not needed (R-hat within the threshold)" if payload.get("sampling") else "n/a"
    parts = [f"{name}: {', '.join(f'{n} {p}' for p, n in v['patterns'].items()) or 'none'}" for name, v in conv.items()]
    return "; ".join(parts)


def _worst_elements(payload: dict, top: int = 10) -> list[str]:
    """The table of the worst elements (where, R-hat, ESS, chain means and sds, pattern), per flagged variable."""
    out = []
    for name, v in (payload.get("convergence_localization") or {}).items():
        if not v["worst"]:
            continue
        found = v.get("exceedances")
        expected = (f"; exactly converged chains that mix as fast would put {fmt(found['expected'], 2)} there on "
                    "average" if found else "")
        out.append(f"Worst elements of `{name}` ({v['n_flagged']} of {v['n_elements']} above R-hat {v['rhat_threshold']}"
                   f"{expected}; {chance_column_note(v['n_elements'])}):\n")
        rows = [[", ".join(f"{d}={c}" for d, c in e["index"].items()), fmt(e["rhat"], 4), fmt(e["ess_bulk"], 3),
                 fmt(e["ess_tail"], 3), " / ".join(fmt(m, 4) for m in e["chain_means"]),
                 " / ".join(fmt(sd, 3) for sd in e["chain_sds"]), fmt(e.get("p_chance"), 2),
                 e["pattern"].replace("_", " ")]
                for e in v["worst"][:top]]
        out.append(md_table(["element", "R-hat", "bulk ESS", "tail ESS", "chain means", "chain sds", "chance",
                             "pattern"], rows) + "\n")
    return out


def _rel(target, start) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def render_report(payload: dict, report_path, json_path, plot_paths: dict, captions: dict | None = None,
                  book: bool = False) -> str:
    """The report Markdown for one group run.

    Parameters
    ----------
    payload : dict
        The results JSON content (see ``gimbal/divergence/schemas/results.schema.json``).
    report_path : path
        Where the report will be written (links are made relative to it).
    json_path : path
        The run's results JSON.
    plot_paths : dict
        kind -> PNG path.
    captions : dict, optional
        kind -> one-line caption saying what to look for.
    book : bool
        Emit MyST (figures with captions, download links) for Jupyter Book
        instead of plain Markdown.
    """
    h = payload["header"]
    base = Path(report_path).parent
    out = []
    status = payload.get("status")
    title = f"Group {h['group']}: {h['title']}"
    out.append(f"# {title}\n")
    if h.get("purpose"):
        out.append(f"*What this group runs:* {h['purpose']}\n")
    if status == "failed":
        err = payload.get("error") or {}
        out.append(
            f"```{{error}}\nThis group **failed** at step `{err.get('step')}`: {err.get('type')}: {err.get('message')}\n"
            "The sections below show what was reached before the failure; the traceback is in the results JSON.\n```\n"
        )
    out.append("## 1. Header\n")
    cfg = h.get("config", {})
    out.append(
        md_table(
            ["field", "value"],
            [
                ("group", h["group"]),
                ("run_id", h["run_id"]),
                ("timestamp", h["timestamp"]),
                ("dataset", f"{dataset_label(h)} (T={h.get('T')}, K={h.get('K')}, C={h.get('C')})"),
                ("toggles", ", ".join(f"{k}={v}" for k, v in cfg.items())),
                ("sampler", ", ".join(f"{k}={v}" for k, v in (h.get("sampling_settings") or {}).items()) or "not sampled"),
                ("seed", h.get("seed")),
                ("status", status),
            ] + parameter_rows(h) + ([("positions frozen at", h["frozen_at"])] if h.get("frozen_at") else []),
        )
        + "\n"
    )
    mc = payload.get("model_checks")
    out.append("## 2. Model checks\n")
    if mc:
        out.append(f"Total log density at the initial point: **{fmt(mc['total'])}** "
                   f"({'all terms finite' if mc['finite'] else 'non-finite terms: ' + ', '.join(mc['nonfinite_terms'])}).\n")
        out.append("Worst 10 point-logp contributors:\n")
        out.append(md_table(["term", "log density"], [(t["term"], t["logp"]) for t in mc["worst_terms"][:10]]) + "\n")
    else:
        out.append("Not reached.\n")
    gc = payload.get("gradient_checks")
    out.append("## 3. Gradient checks\n")
    if gc:
        g = gc["at_initial_point"]
        out.append(md_table(["quantity", "value"], [
            ("parameters (unconstrained)", g["n_parameters"]), ("L2 norm", g["l2_norm"]), ("L-inf norm", g["linf_norm"]),
            ("NaN components", g["nan_count"]), ("inf components", g["inf_count"]),
        ]) + "\n")
        out.append("Largest components:\n")
        out.append(md_table(["component", "d logp"], [(c["name"], c["value"]) for c in g["top_components"][:20]]) + "\n")
        fd = gc.get("finite_difference")
        if fd:
            out.append(f"Finite differences (central, eps={fmt(fd['epsilon'])} and 10x that; a component fails when it "
                       f"disagrees at both): {fd['n_checked']} components checked, **{fd['n_failed']} failed**.\n")
        pert = gc.get("perturbation")
        if pert:
            out.append(md_table(["perturbed point", "logp", "grad L2", "non-finite grad"],
                                [(p["index"], p["logp"], p["grad_l2"], p["grad_nonfinite"]) for p in pert["points"]]) + "\n")
        for name, check in (gc.get("component_checks") or {}).items():
            out.append(f"Component check **{name}**: {'passed' if check.get('passed') else 'FAILED'} - {check.get('summary', '')}\n")
    else:
        out.append("Not reached.\n")
    s = payload.get("sampling")
    out.append("## 4. Sampling summary\n")
    if s:
        mm = payload.get("multimodality") or {}
        out.append(md_table(["quantity", "value"], [
            ("divergences", f"{s['divergences']} / {s['total_draws']} ({100 * (s['divergence_fraction'] or 0):.1f}%)"),
            ("mean step size", s.get("mean_step_size")),
            ("draws at max tree depth", f"{100 * (s.get('max_treedepth_fraction') or 0):.1f}%"),
            ("gradient evaluations / draw", s.get("mean_grad_evals_per_draw")),
            ("E-BFMI per chain", ", ".join(fmt(b, 3) for b in s.get("ebfmi_per_chain", [])) or "n/a"),
            ("max R-hat (selected)", f"{fmt(s.get('max_rhat_selected'))} [{s.get('max_rhat_selected_var')}]"),
            ("min bulk ESS (selected)", s.get("min_ess_bulk_selected")),
            ("max R-hat (all)", f"{fmt(s.get('max_rhat_all'))} [{s.get('max_rhat_all_var')}]"),
            ("min bulk / tail ESS (all)", f"{fmt(s.get('min_ess_bulk_all'))} / {fmt(s.get('min_ess_tail_all'))}"),
            ("chain means agree (multimodality check, means only)", mm.get("verdict", "n/a")),
            ("non-convergence pattern (per element: means and spreads)", _patterns(payload)),
            ("compile / sampling time (s)", f"{fmt(s.get('compile_s'))} / {fmt(s.get('wall_time_s'))}"),
        ]) + "\n")
        out.extend(_worst_elements(payload))
        regions = payload.get("chain_regions")
        if regions:
            out.append(f"**Chains in separate regions.** {regions['text']}\n")
        heading = payload.get("heading")
        if heading:
            out.append(_heading_line(heading))
        loc = payload.get("localization") or {}
        if loc.get("variables"):
            where = ", ".join(f"{v['name']} (z={v['z']:.2f})" for v in loc["variables"][:3])
            peaks = "; ".join(f"peak {d} = {p['peak']}" for d, p in loc.get("profiles", {}).items())
            out.append(f"Divergent draws are most displaced in: {where}. {peaks}\n")
    else:
        out.append("This group does not sample." if not h.get("samples") else "Not reached.")
        out.append("\n")
    out.append("## 5. Artifacts\n")
    captions = captions or {}
    if book:
        out.append(f"- results JSON: {{download}}`{Path(json_path).name} <{_rel(json_path, base)}>`\n")
        for kind, p in plot_paths.items():
            out.append(f"\n```{{figure}} {_rel(p, base)}\n:alt: {kind}\n:width: 100%\n\n"
                       f"**{kind.replace('_', ' ')}.** {captions.get(kind, '')}\n```\n")
    else:
        out.append(f"- results JSON: [{Path(json_path).name}]({_rel(json_path, base)})\n")
        for kind, p in plot_paths.items():
            cap = captions.get(kind, "")
            out.append(f"- {kind}: [{Path(p).name}]({_rel(p, base)}){' - ' + cap if cap else ''}\n")
        for kind, p in plot_paths.items():
            out.append(f"\n![{captions.get(kind, kind)}]({_rel(p, base)})\n")
    v = payload.get("verdict") or {}
    out.append("\n## 6. Interpretation\n")
    out.append(f"**Verdict: {v.get('status', 'n/a')} ({v.get('code', 'n/a')}).** {v.get('interpretation', '')}\n")
    out.append("\n## 7. Next action\n")
    out.append(f"{v.get('next_action', '')}\n")
    return "\n".join(out)
