"""The engine as a product: diagnose any PyMC model (or a saved trace) and write its report page.

:func:`diagnose` runs the generic checks in order - log density and gradient at the start point, finite
differences, NUTS sampling (nutpie), the sampling summary, divergence localization and the funnel check,
chains-in-modes and label switching, non-convergence localization with a pattern per element - and returns a
typed :class:`Diagnosis` whose verdict comes from :func:`gimbal.diagnostics.rules.rule_model`.
:func:`write_diagnosis` writes its JSON, plots and a Markdown (MyST) page that says what was run, what it shows,
what it means and what to do next. ``gimbal diag model FILE.py`` is the command-line route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import chance, checks, convergence, localization, multimodality, plots, rules, sampling
from .funnel import Funnel, funnel_check
from .io import write_json, save_text, to_jsonable
from .report import chance_column_note, fmt, md_table

__all__ = ["Diagnosis", "diagnose", "write_diagnosis", "render_page", "label_dims"]


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` found about one model, and its verdict."""

    name: str
    settings: dict
    verdict: rules.Verdict
    model_checks: dict | None = None
    gradient: dict | None = None
    finite_difference: dict | None = None
    sampling: dict | None = None
    multimodality: dict | None = None
    label_dim: str | None = None
    divergence_localization: dict | None = None
    funnels: list[Funnel] = field(default_factory=list)
    rhat_chance: dict | None = None
    convergence: dict[str, convergence.VariableConvergence] = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    trace: object = field(default=None, repr=False)

    def to_json(self) -> dict:
        return to_jsonable({
            "name": self.name, "settings": self.settings, "verdict": self.verdict.as_dict(),
            "model_checks": self.model_checks, "gradient": self.gradient, "finite_difference": self.finite_difference,
            "sampling": self.sampling, "multimodality": self.multimodality, "label_dim": self.label_dim,
            "divergence_localization": self.divergence_localization,
            "funnels": [f.to_json() for f in self.funnels], "rhat_chance": self.rhat_chance,
            "convergence_localization": {k: v.to_json() for k, v in self.convergence.items()},
            "seconds": self.seconds,
        })


def label_dims(trace, max_size: int = 6) -> list[str]:
    """Dimensions that could hold exchangeable labels (mixture components, states): 2 to ``max_size`` long."""
    post = sampling._group(trace, "posterior")
    return sorted({d for da in post.data_vars.values() for d in da.dims
                   if d not in ("chain", "draw") and 2 <= da.sizes[d] <= max_size})


def _multimodality(trace) -> tuple[dict, str | None]:
    """The chains-in-modes check, trying every candidate label dimension; label switching wins where found."""
    first = None
    for dim in label_dims(trace) or [None]:
        mm = multimodality.multimodality_check(trace, state_dim=dim or "\0")
        if mm["verdict"] == "label_switching":
            return mm, dim
        first = first or mm
    return first, None


def _sample(model, chains, tune, draws, seed, target_accept, maxdepth, progress):
    import nutpie

    compiled = nutpie.compile_pymc_model(model)
    return nutpie.sample(compiled, chains=chains, tune=tune, draws=draws, seed=seed, target_accept=target_accept,
                         maxdepth=maxdepth, progress_bar=progress)


def diagnose(model=None, *, trace=None, name: str = "model", chains: int = 4, tune: int = 1000, draws: int = 1000,
             seed: int = 0, target_accept: float = 0.8, maxdepth: int = 10, progress: bool = False) -> Diagnosis:
    """Diagnose a PyMC model by sampling it, or an existing trace.

    Parameters
    ----------
    model : pymc.Model, optional
        Checked at its initial point, then sampled with nutpie.
    trace : xarray.DataTree, optional
        A NUTS trace (nutpie or PyMC, with ``sample_stats``) to diagnose instead of sampling; with ``model`` as
        well, the model's free variables are the funnel candidates.
    name : str
        Used in the page title and file names.
    chains, tune, draws, seed, target_accept, maxdepth
        NUTS settings (ignored with ``trace``).
    progress : bool
        Show nutpie's progress bar.
    """
    if model is None and trace is None:
        raise ValueError("diagnose needs a model, a trace, or both.")
    settings = {"chains": chains, "tune": tune, "draws": draws, "seed": seed, "target_accept": target_accept,
                "maxdepth": maxdepth, "source": "trace" if trace is not None else "sampled"}
    d = Diagnosis(name=name, settings=settings, verdict=rules.Verdict("error", "not_run", "", ""))
    t0 = time.perf_counter()
    if model is not None:
        point = model.initial_point()
        d.model_checks = checks.safe_point_logps(model, point)
        checker = checks.compile_logp_and_grad(model, point)
        d.gradient = checks.gradient_report(checker, point)
        d.finite_difference = checks.finite_difference_check(checker, point, max_components=200, seed=seed)
        d.seconds["checks"] = time.perf_counter() - t0
        build = rules.rule_build({**d.model_checks, "worst_terms": []})
        grad = rules.rule_gradient(d.gradient, d.finite_difference)
        for v in (build, grad):
            if v.status == "fail":  # sampling a broken density explains nothing
                d.verdict = v
                return d
    if trace is None:
        t1 = time.perf_counter()
        trace = _sample(model, chains, tune, draws, seed, target_accept, maxdepth, progress)
        d.seconds["sampling"] = time.perf_counter() - t1
    d.trace = trace
    t2 = time.perf_counter()
    d.sampling = sampling.sampling_summary(trace, [], max_treedepth=maxdepth, wall_time_s=d.seconds.get("sampling"))
    d.multimodality, d.label_dim = _multimodality(trace)
    d.divergence_localization = localization.divergence_localization(trace)
    free = [v.name for v in model.free_RVs] if model is not None else None
    d.funnels = funnel_check(trace, free)
    if "rhat" in rules.sampling_problems(d.sampling, d.multimodality):
        d.rhat_chance = chance.rhat_against_chance(d.sampling, seed=seed)
        d.convergence = convergence.localize_flagged(trace, d.sampling, rhat_threshold=rules.THRESHOLDS["rhat_max"])
    if not d.funnels:  # no funnel at the divergences: one that NUTS adapted around shows as a slowly mixing scale
        bad = [v for v, row in (d.sampling.get("per_variable") or {}).items()
               if (row.get("rhat") or 0.0) > rules.THRESHOLDS["rhat_max"]
               or (row.get("ess_bulk") or np.inf) < rules.THRESHOLDS["ess_per_chain"] * d.sampling["chains"]]
        d.funnels = funnel_check(trace, free, scales=bad) if bad else []
    d.verdict = rules.rule_model(d.sampling, d.multimodality, d.rhat_chance,
                                 divergence_localization=d.divergence_localization, funnels=d.funnels,
                                 convergence={k: v.to_json() for k, v in d.convergence.items()})
    d.seconds["diagnostics"] = time.perf_counter() - t2
    return d


def _plots(d: Diagnosis, folder: Path) -> dict[str, tuple[Path, str]]:
    out, trace = {}, d.trace
    if trace is None:
        return out
    names = list(sampling._group(trace, "posterior").data_vars)
    wanted = [f.scale for f in d.funnels[:1]] + [f.variable for f in d.funnels[:1]] or names
    jobs = {"trace": (plots.plot_trace_selected, (trace, names[:4], folder / "trace.png"),
                      "Trace and marginal density per chain."),
            "energy": (plots.plot_energy, (trace, folder / "energy.png", (d.sampling or {}).get("ebfmi_per_chain")),
                       "Energy: E-BFMI below 0.3 flags poor exploration.")}
    if (d.sampling or {}).get("divergences"):
        jobs["divergence_pairs"] = (plots.plot_divergence_pairs, (trace, wanted[:2] if d.funnels else names[:3],
                                                                  folder / "divergence_pairs.png"),
                                    "Pairs with the divergent draws marked: a funnel's neck shows as their cluster.")
    for name, c in d.convergence.items():
        if c.n_flagged and c.rhat.ndim:
            jobs[f"rhat_map_{name}"] = (plots.plot_rhat_map, (c, folder / f"rhat_map_{name}.png"),
                                        f"Per-element R-hat of '{name}'.")
    for kind, (fn, args, caption) in jobs.items():
        try:
            out[kind] = (fn(*args), caption)
        except Exception as exc:  # a plot that cannot be drawn is noted on the page, never fatal
            out[kind] = (None, f"not drawn: {type(exc).__name__}: {exc}")
    return out


def render_page(d: Diagnosis, figures: dict | None = None) -> str:
    """The page of one diagnosis (MyST Markdown): what was run, what it shows, what it means, what to do next."""
    s, v = d.sampling or {}, d.verdict
    st = d.settings
    lines = [f"# {d.name}\n", "## What was run\n"]
    if st["source"] == "sampled":
        lines.append(f"nutpie NUTS, {st['chains']} chains x ({st['tune']} tune + {st['draws']} draws), seed {st['seed']}, "
                     f"target_accept {st['target_accept']}, maxdepth {st['maxdepth']}.\n")
    else:
        lines.append("A saved trace (no sampling here).\n")
    if d.model_checks is not None:
        lines.append("## Checks at the initial point\n")
        lines.append(md_table(["check", "result"], [
            ("log density", f"{fmt(d.model_checks['total'])} ({'finite' if d.model_checks['finite'] else 'NON-FINITE: ' + ', '.join(d.model_checks['nonfinite_terms'])})"),
            ("gradient L2 norm / non-finite", f"{fmt(d.gradient['l2_norm'])} / {d.gradient['nan_count'] + d.gradient['inf_count']}"),
            ("finite differences", f"{d.finite_difference['n_checked']} components, {d.finite_difference['n_failed']} failed"),
        ]) + "\n")
    if s:
        mm = d.multimodality or {}
        lines.append("## What it shows\n")
        lines.append(md_table(["quantity", "value"], [
            ("divergences", f"{s['divergences']} / {s['total_draws']} ({100 * (s['divergence_fraction'] or 0):.2f}%)"),
            ("max R-hat", f"{fmt(s.get('max_rhat_all'))} [{s.get('max_rhat_all_var')}]"),
            ("min bulk / tail ESS", f"{fmt(s.get('min_ess_bulk_all'))} / {fmt(s.get('min_ess_tail_all'))}"),
            ("E-BFMI per chain", ", ".join(fmt(b, 3) for b in s.get("ebfmi_per_chain", [])) or "n/a"),
            ("draws at max tree depth", f"{100 * (s.get('max_treedepth_fraction') or 0):.1f}%"),
            ("chains (means)", mm.get("verdict", "n/a") + (f" along '{d.label_dim}'" if d.label_dim else "")),
            ("funnel", ", ".join(f"'{f.variable}' on '{f.scale}' (r={f.correlation:.2f}, z={f.z_divergent:.2f})"
                                 for f in d.funnels) or "none"),
        ]) + "\n")
        for name, c in d.convergence.items():
            if not c.worst:
                continue
            lines.append(f"Worst elements of `{name}` ({c.n_flagged} of {c.rhat.size} above R-hat {c.rhat_threshold}; "
                         f"{chance_column_note(c.rhat.size)}):\n")
            if c.exceedances is not None:
                lines.append("Against chance: " + c.exceedances.text() + "\n")
            lines.append(md_table(["element", "R-hat", "bulk ESS", "chain means", "chain sds", "chance", "pattern"], [
                [", ".join(f"{k}={x}" for k, x in e.index.items()) or name, fmt(e.rhat, 4), fmt(e.ess_bulk, 3),
                 " / ".join(fmt(m, 3) for m in e.chain_means), " / ".join(fmt(x, 3) for x in e.chain_sds),
                 fmt(e.p_chance, 2), e.pattern.replace("_", " ")] for e in c.worst[:10]]) + "\n")
    for kind, (path, caption) in (figures or {}).items():
        if path is None:
            lines.append(f"*{kind}: {caption}*\n")
        else:
            lines.append(f"```{{figure}} {Path(path).name}\n:alt: {kind}\n:width: 90%\n\n{caption}\n```\n")
    lines.append("## What it means\n")
    lines.append(f"**{v.status} ({v.code}).** {v.interpretation}\n")
    lines.append("## What to do next\n")
    lines.append(v.next_action + "\n")
    return "\n".join(lines)


def write_diagnosis(d: Diagnosis, folder, overwrite: bool = False) -> Path:
    """Write ``NAME.json``, the plots and ``NAME.md`` into ``folder/NAME/``; returns the page's path."""
    folder = Path(folder) / d.name
    page = folder / f"{d.name}.md"
    if page.exists() and not overwrite:
        raise FileExistsError(f"{page} exists; pass overwrite=True (--overwrite) to replace it.")
    folder.mkdir(parents=True, exist_ok=True)
    figures = _plots(d, folder)
    write_json(folder / f"{d.name}.json", d.to_json())
    save_text(page, render_page(d, figures))
    if d.trace is not None and d.settings["source"] == "sampled":
        d.trace.to_netcdf(folder / "trace.nc")
    return page
