"""Display helpers for the group notebooks: tables and figures, no logic.

Outputs avoid Markdown headings (they would break the book's table of contents).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from ..diagnostics.report import fmt
from .results import GroupResult, dataset_label, parameter_rows

__all__ = ["show_header", "show_checks", "show_sampling", "show_plots", "show_verdict"]


def _table(rows, columns=("quantity", "value")):
    display(pd.DataFrame([(a, fmt(b)) for a, b in rows], columns=list(columns)).style.hide(axis="index"))


def show_header(result: GroupResult) -> None:
    h = result.header
    _table([("group", h.group), ("run_id", h.run_id), ("dataset", dataset_label(asdict(h))), ("T, K, C", f"{h.T}, {h.K}, {h.C}"),
            ("profile", h.profile), ("status", result.status)] + parameter_rows(asdict(h))
           + ([("frozen at", h.frozen_at)] if h.frozen_at else []) + [(k, v) for k, v in h.config.items()])


def show_checks(result: GroupResult) -> None:
    mc, gc = result.model_checks, result.gradient_checks
    if mc:
        display(Markdown(f"**Log density at the initial point: {fmt(mc['total'])}** - worst terms:"))
        _table([(t["term"], t["logp"]) for t in mc["worst_terms"]], ("term", "log density"))
    if gc:
        g = gc["at_initial_point"]
        display(Markdown(f"**Gradient:** L2 {fmt(g['l2_norm'])}, L-inf {fmt(g['linf_norm'])}, {g['nan_count']} NaN, {g['inf_count']} inf."))
        _table([(c["name"], c["value"]) for c in g["top_components"][:10]], ("component", "d logp"))
        for name, check in (gc.get("component_checks") or {}).items():
            display(Markdown(f"**Component check {name}:** {'passed' if check['passed'] else 'FAILED'} - {check['summary']}"))
        if gc.get("finite_difference"):
            fd = gc["finite_difference"]
            display(Markdown(f"**Finite differences:** {fd['n_checked'] - fd['n_failed']} of {fd['n_checked']} components agree."))


def show_sampling(result: GroupResult) -> None:
    s = result.sampling
    if not s:
        display(Markdown("_This group does not sample._"))
        return
    _table([
        ("divergences", f"{s['divergences']} / {s['total_draws']}"),
        ("max R-hat (all)", f"{fmt(s['max_rhat_all'])} [{s.get('max_rhat_all_var')}]"),
        ("min bulk ESS (all)", f"{fmt(s['min_ess_bulk_all'])} [{s.get('min_ess_bulk_all_var')}]"),
        ("E-BFMI per chain", ", ".join(fmt(b, 3) for b in s["ebfmi_per_chain"])),
        ("max tree depth fraction", s["max_treedepth_fraction"]),
        ("gradient evaluations / draw", s.get("mean_grad_evals_per_draw")),
        ("chains agree", (result.multimodality or {}).get("verdict")),
        ("sampling time (s)", s.get("wall_time_s")),
    ])


def show_plots(result: GroupResult) -> None:
    for kind, path in (result.plots or {}).get("produced", {}).items():
        if Path(path).exists():
            display(Markdown(f"**{kind.replace('_', ' ')}**"))
            display(Image(filename=str(path)))


def show_verdict(result: GroupResult) -> None:
    v = result.verdict
    display(Markdown(f"**Interpretation ({v.status}, {v.code}).** {v.interpretation}\n\n**Next action.** {v.next_action}"))
