"""``report_summary.md``: which group fails first, and what that implies (the seed's section 8)."""

from __future__ import annotations

from pathlib import Path

from ..diagnostics import io
from .paths import make_paths
from ..diagnostics.report import fmt, md_table
from .groups import GROUPS, group_desc
from .rules import rule_contrast, rule_summary, rule_temporal
from .runs import RUNS_DIR, missing_result, read_manifest, resolve_result

__all__ = ["collect_run", "list_runs", "summary_rows", "summary_markdown", "write_summary", "temporal_series",
           "run_not_run", "not_run_lines"]


def collect_run(root, run_id: str) -> list[dict]:
    """Every group of ``run_id``, in the seed's order, as it stands.

    Groups the run's manifest requested but that wrote no results appear as failed (``no_results``); a result
    left ``running`` by a process that no longer exists reads as ``interrupted`` (see :mod:`.runs`).
    """
    manifest = read_manifest(root, run_id)
    requested = set(manifest["groups"]) if manifest else set()
    out = []
    for g in GROUPS:
        path = make_paths(group_desc(g), run_id, root).results_run
        if path.exists():
            out.append(resolve_result(io.read_json(path)))
        elif g in requested:
            out.append(missing_result(g, GROUPS[g].desc, run_id, (manifest.get("errors") or {}).get(g, "")))
    return out


def list_runs(root) -> list[str]:
    """Every run id with a results file or a manifest (a run whose groups all crashed), oldest first (by file time)."""
    results, manifests = Path(root) / "results", Path(root) / RUNS_DIR
    runs = {}
    found = [(p, p.stem.split("__", 1)[1]) for p in results.glob("results_group_*__*.json")] if results.is_dir() else []
    found += [(p, p.stem) for p in manifests.glob("*.json")] if manifests.is_dir() else []
    for p, run_id in found:
        runs[run_id] = min(runs.get(run_id, p.stat().st_mtime), p.stat().st_mtime)
    return sorted(runs, key=runs.get)


def _flatten(r: dict) -> dict:
    h, s, v = r.get("header", {}), r.get("sampling") or {}, r.get("verdict") or {}
    spec = GROUPS.get(str(h.get("group")))
    return {"group": h.get("group"), "description": h.get("description"), "status": r.get("status"),
            "verdict": v, "T": h.get("T"), "sampling": s, "contrast_of": spec.contrast_of if spec else None}


def summary_rows(results: list[dict]) -> list[list]:
    rows = []
    for r in results:
        f = _flatten(r)
        s, v = f["sampling"], f["verdict"]
        rows.append([
            f["group"], f["T"], v.get("status", "-"), v.get("code", "-"),
            f"{s['divergences']}/{s['total_draws']}" if s else "-",
            fmt(s.get("max_rhat_all"), 3) if s else "-", fmt(s.get("min_ess_bulk_all"), 3) if s else "-",
            ", ".join(fmt(b, 2) for b in s.get("ebfmi_per_chain", [])) if s else "-",
            f"{100 * (s.get('max_treedepth_fraction') or 0):.0f}%" if s else "-",
            fmt(s.get("wall_time_s"), 3) if s else "-",
        ])
    return rows


SUMMARY_HEADER = ["group", "T", "verdict", "code", "divergences", "max R-hat", "min bulk ESS", "E-BFMI", "max depth", "sampling s"]


def temporal_series(results: list[dict]) -> list[dict]:
    series = []
    for r in results:
        h, s = r.get("header", {}), r.get("sampling")
        if str(h.get("group", "")).startswith("8") and s:
            series.append({"group": h["group"], "T": h["T"], "divergence_fraction": s.get("divergence_fraction"),
                           "max_rhat": s.get("max_rhat_all"), "min_ess_bulk_per_s": s.get("min_ess_bulk_per_s"),
                           "compile_s": s.get("compile_s"), "wall_time_s": s.get("wall_time_s"), "status": r.get("status")})
    return sorted(series, key=lambda p: p["T"])


def summary_markdown(results: list[dict], run_id: str, book: bool = False, figure: str | None = None,
                     not_run: dict[str, str] | None = None) -> str:
    """The summary page text for one run.

    ``book=True`` links group pages with MyST ``{doc}`` roles (for Jupyter Book)
    instead of links to the report files beside ``report_summary.md``;
    ``figure`` is an optional temporal-scaling plot to embed; ``not_run``: groups asked for but left out, and why
    (the run manifest's ``not_run``).
    """
    flat = [_flatten(r) for r in results]
    verdict = rule_summary(flat)
    lines = [f"# Divergence report summary: run {run_id}\n"]
    failed = [f for f in flat if f["status"] in ("failed", "interrupted")]
    if failed:
        def link(f):
            return f"{{doc}}`groups/{group_desc(f['group'])}`" if book else f"report_{group_desc(f['group'])}__{run_id}.md"

        lines.append("```{error}\n" + "\n".join(
            f"Group {f['group']} ({f['description']}) {'was interrupted' if f['status'] == 'interrupted' else 'crashed'}: "
            f"{f['verdict'].get('interpretation', '')} See {link(f)}." for f in failed) + "\n```\n")
    lines.append(f"**Which group fails first.** {verdict.interpretation}\n")
    given = [r["header"] for r in results if (r["header"].get("parameters") or {}).get("prior")]
    if given:
        used = [h["group"] for h in given if h["parameters"].get("prior_used")]
        files = sorted({h["parameters"]["prior"] for h in given})
        lines.append(f"**Pose prior.** Group{'s' if len(used) != 1 else ''} {', '.join(used) or 'none'} ran with the "
                     f"trained prior {', '.join(f'`{f}`' for f in files)}; the others without it (their models have no "
                     "pose states, or the run did not give one).\n")
    for flagged in dict.fromkeys(filter(None, ((r["header"].get("parameters") or {}).get("calibration_flagged")
                                               for r in results))):
        lines.append(f"**Calibration.** {flagged[0].upper()}{flagged[1:]} Every group ran with them: read their "
                     "findings with that in mind.\n")
    by_group = {f["group"]: f for f in flat}
    for f in flat:
        if f["contrast_of"]:
            cv = rule_contrast(f, by_group.get(f["contrast_of"]))
            lines.append(f"**Contrast.** {cv.interpretation} {cv.next_action}\n")
    series = temporal_series(results)
    if series:
        tv = rule_temporal(series)
        lines.append(f"**Temporal scaling.** {tv.interpretation} {tv.next_action}\n")
    lines += [f"**Not run.** {line}\n" for line in not_run_lines(not_run or {})]
    lines.append("## Groups\n")
    lines.append(md_table(SUMMARY_HEADER, summary_rows(results)) + "\n")
    if series:
        lines.append("## Temporal scaling\n")
        if figure:
            lines.append(f"```{{figure}} {figure}\n:alt: temporal scaling\n:width: 100%\n\n"
                         "Divergence rate, max R-hat, min bulk ESS per second and compile time against T: "
                         "a jump marks the length where the geometry breaks.\n```\n")
        lines.append(md_table(["T", "divergence rate", "max R-hat", "min ESS/s", "compile s", "sampling s"],
                              [[p["T"], f"{100 * (p['divergence_fraction'] or 0):.1f}%", fmt(p["max_rhat"], 3),
                                fmt(p["min_ess_bulk_per_s"], 3), fmt(p["compile_s"], 3), fmt(p["wall_time_s"], 3)] for p in series]) + "\n")
    lines.append("## Next action\n")
    lines.append(verdict.next_action + "\n")
    lines.append("## Reports\n")
    for r in results:
        h = r["header"]
        if book:
            lines.append(f"- Group {h['group']}: {{doc}}`{h['title']} <groups/{group_desc(h['group'])}>`")
        else:
            lines.append(f"- Group {h['group']}: [{h['title']}](report_{group_desc(h['group'])}__{run_id}.md)")
    return "\n".join(lines) + "\n"


def not_run_lines(not_run: dict[str, str]) -> list[str]:
    """``"Groups 8c, 8d, 8e: REASON."``: one line per reason of a run's ``not_run`` (group -> why it was left out)."""
    lines = []
    for reason in dict.fromkeys(not_run.values()):
        left = [g for g, r in not_run.items() if r == reason]
        lines.append(f"Group{'s' if len(left) > 1 else ''} {', '.join(left)}: {reason}.")
    return lines


def run_not_run(root, run_id: str) -> dict[str, str]:
    """The groups a run was asked for but left out, and why (its manifest's ``not_run``)."""
    return (read_manifest(root, run_id) or {}).get("not_run") or {}


def write_summary(root, run_id: str) -> Path:
    """Write ``report_summary.md`` (and ``report_summary__<run_id>.md``) at the diagnostics root."""
    root = Path(root)
    text = summary_markdown(collect_run(root, run_id), run_id, not_run=run_not_run(root, run_id))
    io.save_text(root / f"report_summary__{run_id}.md", text)
    return io.save_text(root / "report_summary.md", text)
