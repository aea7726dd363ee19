"""Decision rules of the engine, for any PyMC model: thresholds, verdicts, and the rules that need no model knowledge.

The seed's study adds what each of its groups means (:mod:`gimbal.divergence.rules`); every interpretation
and next action of a report comes from one of the two.

A :class:`Verdict` has a ``status``:

* ``"pass"`` - nothing wrong found;
* ``"finding"`` - the diagnostic found a sampling problem (divergences, no convergence,
  chains in different modes) - a result, not a crash;
* ``"fail"`` - a hard defect: non-finite log density or gradient, gradient mismatch;
* ``"error"`` - the diagnostic run itself crashed before reaching a verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from .chance import RhatExceedances
from .funnel import MAX_Z

__all__ = [
    "Verdict",
    "THRESHOLDS",
    "sampling_problems",
    "rule_build",
    "rule_gradient",
    "rule_convergence",
    "rule_error",
    "rule_divergences",
    "divergence_location",
    "rule_model",
    "PATTERN_VERDICTS",
]

THRESHOLDS = {
    "rhat_max": 1.01,  # Vehtari et al. 2021: use draws only below this
    "rhat_early": 1.1,
    "ess_per_chain": 100,
    "ebfmi_min": 0.3,
    "treedepth_fraction": 0.05,
}


@dataclass
class Verdict:
    """A decision rule's outcome: how bad (``status``), which case (``code``), what it means and what to do."""

    status: Literal["pass", "finding", "fail", "error"]
    code: str
    interpretation: str
    next_action: str
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = list(self.problems)
        return d


def _num(x, default=float("nan")):
    return default if x is None or isinstance(x, str) else float(x)


def sampling_problems(summary: dict, multimodality: dict | None = None) -> list[str]:
    """Codes of everything wrong with a sampling run, most severe first."""
    probs = []
    if summary.get("divergences", 0) > 0:
        probs.append("divergences")
    mm = (multimodality or {}).get("verdict")
    if mm in ("label_switching", "chains_in_different_modes"):
        probs.append(mm)
    if _num(summary.get("max_rhat_all"), 1.0) > THRESHOLDS["rhat_max"]:
        probs.append("rhat")
    if _num(summary.get("min_ess_bulk_all"), 1e9) < THRESHOLDS["ess_per_chain"] * summary.get("chains", 1):
        probs.append("low_ess")
    if _num(summary.get("min_ebfmi"), 1.0) < THRESHOLDS["ebfmi_min"]:
        probs.append("low_ebfmi")
    if _num(summary.get("max_treedepth_fraction"), 0.0) > THRESHOLDS["treedepth_fraction"]:
        probs.append("treedepth")
    return probs


def rule_error(step: str, error: str) -> Verdict:
    return Verdict(
        "error",
        "crashed",
        f"The run stopped at step '{step}' with: {error}. Results up to that step are kept.",
        "Fix the error shown above (the traceback is in the results JSON) and run it again.",
    )


def rule_build(model_checks: dict) -> Verdict:
    """Group 1: any -inf or NaN term at the initial point is an immediate bug or domain issue."""
    bad = model_checks.get("nonfinite_terms", [])
    if bad:
        return Verdict(
            "fail",
            "logp_nonfinite",
            f"The log density is not finite at the initial point: {', '.join(bad)}. This is an implementation or "
            "domain bug (an initial value outside a support, a NaN in the data reaching the likelihood), not a "
            "sampler problem.",
            f"Inspect the terms {', '.join(bad)}: check their initial values and the data they touch "
            "(missing detections must be masked, never multiplied by 0).",
            tuple(bad),
        )
    return Verdict(
        "pass",
        "logp_finite",
        "Every log-density term is finite at the initial point; the model is well defined where sampling starts.",
        "Proceed to the gradient checks.",
    )


def rule_gradient(gradient: dict, finite_diff: dict | None = None, perturbation: dict | None = None) -> Verdict:
    """Group 2: NaN/inf gradients indicate an implementation/domain problem."""
    if not gradient.get("finite", True):
        bad = [k for k, v in gradient.get("per_variable", {}).items() if v.get("nan") or v.get("inf")]
        return Verdict(
            "fail",
            "gradient_nonfinite",
            f"The gradient has {gradient.get('nan_count', 0)} NaN and {gradient.get('inf_count', 0)} inf components "
            f"(in {', '.join(bad)}). Typical causes: mixture masking that multiplies NaN by 0, a switch whose untaken "
            "branch is non-finite, a custom Op without a valid gradient.",
            f"Differentiate the terms feeding {', '.join(bad)} in isolation; use a double-where guard for masked or "
            "branch-dependent terms.",
            tuple(bad),
        )
    if finite_diff is not None and not finite_diff.get("passed", True):
        worst = ", ".join(r["name"] for r in finite_diff.get("worst", [])[:3])
        return Verdict(
            "fail",
            "gradient_mismatch",
            f"Autodiff disagrees with central finite differences on {finite_diff['n_failed']} of "
            f"{finite_diff['n_checked']} components (worst: {worst}). NUTS would follow a wrong gradient.",
            "Look for a custom Op or a non-differentiable construct in the graph of those variables.",
            ("gradient_mismatch",),
        )
    if perturbation is not None and not perturbation.get("all_finite", True):
        return Verdict(
            "finding",
            "fragile_domain",
            "Logp or gradient turns non-finite a small step away from the initial point: the sampler will hit this "
            "region in its first trajectories.",
            "Check constrained parameters near their boundaries and the projection (points behind a camera).",
            ("fragile_domain",),
        )
    return Verdict(
        "pass",
        "gradient_ok",
        "The gradient is finite, agrees with finite differences, and stays finite under small perturbations.",
        "Proceed to sampling.",
    )


PATTERN_VERDICTS = {
    # pattern of the worst elements -> (verdict code, what it means, what to do)
    "separate_modes": ("chains_in_different_modes",
                       "chains sit in different modes there (their means are several within-chain sds apart)",
                       "More draws will not help: start every chain from one consistent initialization or strengthen "
                       "the prior at those elements."),
    "switching_chains": ("chains_switching_modes",
                         "some chains switch between two explanations there while others stay in one (their "
                         "within-chain spreads differ)",
                         "More draws will not help: the posterior has two explanations at those elements; make the "
                         "initialization and the prior agree on one (or model the ambiguity)."),
    "slow_mixing": ("slow_mixing",
                    "the chains agree in mean and spread there but explore slowly (low ESS)",
                    "Run longer (more tune and draws) or raise target_accept; this is the one pattern more draws fix."),
    "within_chance": ("too_few_draws",
                      "their R-hats are what exactly converged chains that mix as fast (each element's own "
                      "within-chain ESS) show by chance among that many elements",
                      "Too few draws to judge convergence: run more draws (e.g. --profile full) before concluding."),
}


def _localized(localization: dict | None, modes: bool = False):
    """The variable with the highest R-hat among localization results that flagged something, or None.

    With ``modes`` (the chains' means sit apart) only a variable whose elements show that (separate modes or
    switching chains) is taken: a worst element read as chance or slow mixing would hide the modes.
    """
    flagged = [v for v in (localization or {}).values() if v.get("n_flagged") and v.get("pattern")]
    if modes:
        flagged = [v for v in flagged if v["pattern"] in ("separate_modes", "switching_chains")]
    return max(flagged, key=lambda v: v.get("max_rhat") or 0.0) if flagged else None


def _exceedance_text(loc: dict) -> str:
    """The variable's elements above the threshold read against chance (:class:`~.chance.RhatExceedances`), or ''."""
    found = loc.get("exceedances")
    return (" Against chance: " + RhatExceedances(**found).text()) if found else ""


def _where_text(loc: dict) -> str:
    parts = []
    for dim, values in (loc.get("where") or {}).items():
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        parts.append(f"{dim} {shown}")
    return "; ".join(parts)


def rule_convergence(summary: dict, multimodality: dict | None = None, rhat_chance: dict | None = None, *,
                     lead: str = "No divergences.", hints: dict | None = None,
                     on_pass: str = "Nothing to fix for this configuration.",
                     localization: dict | None = None) -> Verdict:
    """Verdict of a run without divergences: converged, label switching, separate modes, not converged, inefficient.

    Parameters
    ----------
    summary, multimodality, rhat_chance : dict
        From :func:`~gimbal.diagnostics.sampling.sampling_summary`, :func:`~gimbal.diagnostics.multimodality.
        multimodality_check` and :func:`~gimbal.diagnostics.chance.rhat_against_chance`.
    lead : str
        What the absence of divergences means in the caller's setting (first sentence of the interpretation).
    hints : dict, optional
        Model-specific advice appended to a next action, by problem code (``"label_switching"``,
        ``"chains_in_different_modes"``, ``"slow_elements"``): the engine knows no model, its caller does.
    on_pass : str
        The next action when everything is within thresholds.
    localization : dict, optional
        ``{variable: VariableConvergence.to_json()}`` from
        :func:`~gimbal.diagnostics.convergence.convergence_localization`: the worst variable's dominant pattern
        decides the verdict and its next action, and the interpretation says where (which elements) it sits.
    """
    hints = hints or {}
    probs = sampling_problems(summary, multimodality)
    if not probs:
        return Verdict("pass", "stable", lead + " R-hat, ESS, E-BFMI and tree depth are within thresholds.", on_pass)
    if "label_switching" in probs:
        return Verdict("finding", "label_switching",
                       lead + " But chains disagree only up to a relabelling of exchangeable components (states, mixture labels): the posterior is "
                       "label-symmetric, which inflates R-hat without any divergence.",
                       "Fix or order the label-symmetric parameters." + _hint(hints, "label_switching"), tuple(probs))
    loc = (_localized(localization, modes="chains_in_different_modes" in probs)
           if ("rhat" in probs or "chains_in_different_modes" in probs) else None)
    if loc is not None:
        code, meaning, action = PATTERN_VERDICTS[loc["pattern"]]
        chains = len(summary.get("ebfmi_per_chain") or []) or 1
        per_chain = (summary.get("total_draws") or 0) / chains
        stuck = bool(rhat_chance) and rhat_chance.get("verdict") == "cannot_judge"
        if stuck:
            meaning += (f"; the median element has {rhat_chance['median_ess_per_chain']:.1f} effective draws per "
                        "chain, so the chains barely move and their R-hat cannot be read as chance")
        elif loc["pattern"] in ("slow_mixing", "within_chance") and per_chain < 2 * THRESHOLDS["ess_per_chain"]:
            code = "too_few_draws"
            meaning += (f"; with {per_chain:.0f} draws per chain an ESS above {THRESHOLDS['ess_per_chain']} per chain "
                        "is out of reach, so these draws are too few to judge convergence")
            action = ("Too few draws to judge convergence: run with more draws (--profile full or long) before "
                      "concluding; no chain sits in a separate mode.")
        counts = ", ".join(f"{n} {p.replace('_', ' ')}" for p, n in sorted(loc["patterns"].items(), key=lambda kv: -kv[1]))
        hint_key = {"separate_modes": "chains_in_different_modes", "switching_chains": "chains_switching_modes",
                    "slow_mixing": "slow_mixing"}.get(loc["pattern"]) if code != "too_few_draws" else None
        return Verdict(
            "finding", code,
            lead + f" But {loc['n_flagged']} of {loc['n_elements']} elements of '{loc['variable']}' have R-hat above "
            f"{loc['rhat_threshold']} (max {_num(loc.get('max_rhat')):.3f}, min bulk ESS "
            f"{_num(loc.get('min_ess_bulk')):.0f}), at {_where_text(loc)}: {meaning}. Worst {len(loc['worst'])}: "
            f"{counts}." + _exceedance_text(loc),
            action + (_hint(hints, hint_key) if hint_key else ""), tuple(probs) + (loc["pattern"],))
    if "chains_in_different_modes" in probs:
        return Verdict("finding", "chains_in_different_modes",
                       lead + " But chains settled in different modes (their means differ by more than "
                       f"{(multimodality or {}).get('threshold', 3)} within-chain sds), which divergences alone do not show.",
                       "Start chains from a better initialization and check the flagged variables."
                       + _hint(hints, "chains_in_different_modes"), tuple(probs))
    if "rhat" in probs or "low_ess" in probs:
        chance_text, action = "", ("Run longer (more tune and draws) before trusting the posterior; if R-hat stays high, "
                                   "look for multimodality.")
        if rhat_chance and "rhat" in probs:
            c = rhat_chance
            where = (f" Exactly converged chains reach a max R-hat of {c['chance_max_rhat']:.4f} by chance over the "
                     f"{c['n_elements']} elements of '{c['variable']}' at their median bulk ESS "
                     f"({c['median_ess_bulk']:.0f}); the measured {c['max_rhat']:.4f} is ")
            if c["verdict"] == "cannot_judge":
                chance_text = (f" The median element of '{c['variable']}' has {c['median_ess_per_chain']:.1f} effective "
                               "draws per chain: the chains barely move, so chance cannot be told from non-convergence.")
                action = ("Do not read this as too few draws: chains this stuck need a look at step size and tree "
                          "depth (raise target_accept, or reparameterize) and a run with more tuning.")
            elif c["verdict"] == "beyond":
                slowest = (f" (its slowest element's bulk ESS is {c['min_ess_bulk']:.0f})"
                           if c.get("min_ess_bulk") is not None else "")
                chance_text = (where + "more than twice as far from 1: some elements really mix more slowly than the "
                               f"rest{slowest}.")
                action = (f"Find the elements of '{c['variable']}' with the highest R-hat and lowest ESS"
                          + _hint(hints, "slow_elements", " ({})") + ", then run longer or raise target_accept; more "
                          "draws alone shrink only the chance part.")
            elif c["verdict"] == "near":
                chance_text = where + ("above it but within twice its distance from 1, the spread of chance maxima: "
                                       "one run cannot tell chance from slow mixing.")
                action = ("Repeat with another seed or more draws: a chance maximum moves, a slowly mixing element "
                          "stays the worst.")
            else:
                chance_text = where + "within that: the excess is what a maximum over so many elements gives by chance."
                action = ("More draws (or a higher ESS per draw) lower the chance maximum; no sign of a model or "
                          "mixing problem in R-hat itself.")
            if "low_ess" in probs:
                action = "Run longer (more tune and draws): the minimum bulk ESS is too low. " + action
        return Verdict("finding", "not_converged",
                       lead + f" But max R-hat {_num(summary.get('max_rhat_all')):.3f} / min bulk ESS "
                       f"{_num(summary.get('min_ess_bulk_all')):.0f} miss the thresholds (R-hat < 1.01, ESS > 100 per chain)."
                       + chance_text, action, tuple(probs))
    return Verdict("finding", "inefficient",
                   lead + " Sampling is inefficient (low E-BFMI or many max-depth trees) but not biased.",
                   "Consider a better mass matrix (nutpie adaptation='low_rank') or rescaling the parameters.", tuple(probs))


def _hint(hints: dict, code: str, form: str = " {}") -> str:
    return form.format(hints[code]) if hints.get(code) else ""


def _scale_label(f) -> str:
    return f"log '{f.scale}'" if f.log_scale else f"'{f.scale}'"


def _noncenter(f) -> str:
    """The non-centered rewrite of a funnel's variable on its scale (the start of the next action)."""
    factor = f.scale if f.log_scale else f"scale({f.scale})"
    return (f"Non-center '{f.variable}' on '{f.scale}': write {f.variable} = loc + {factor} * {f.variable}_raw with "
            f"{f.variable}_raw ~ Normal(0, 1)")


def divergence_location(localization: dict | None) -> str:
    """Where the divergent draws sit, in one sentence (empty when nothing was localized).

    The three most displaced variables (their worst element and its ``z``) and each profile's peak, from
    :func:`~gimbal.diagnostics.localization.divergence_localization`.
    """
    if not localization or not localization.get("variables"):
        return ""
    top = localization["variables"][:3]
    where = " The divergent draws are most displaced in " + ", ".join(
        f"'{v['name']}'{'[' + ', '.join(map(str, v['index'])) + ']' if v['index'] else ''} (z={v['z']:.2f})"
        for v in top) + "."
    peaks = "; ".join(f"{d} {p['peak']}" for d, p in (localization.get("profiles") or {}).items())
    return where + (f" Peaks: {peaks}." if peaks else "")


def rule_divergences(summary: dict, localization: dict | None = None, funnels: list | None = None,
                     min_divergent: int = 5, rare_fraction: float = 0.005) -> Verdict:
    """Verdict of a run with divergences, for any model: a funnel, localized divergences, or too few to place.

    Parameters
    ----------
    summary : dict
        From :func:`~gimbal.diagnostics.sampling.sampling_summary` (``divergences`` > 0).
    localization : dict, optional
        From :func:`~gimbal.diagnostics.localization.divergence_localization`.
    funnels : list of Funnel, optional
        From :func:`~gimbal.diagnostics.funnel.funnel_check`, most pronounced first.
    min_divergent, rare_fraction : int, float
        Fewer divergent draws than ``min_divergent``, or a smaller fraction than ``rare_fraction``, with no funnel,
        are reported as rare (a higher target_accept removes them), not localized.
    """
    div, frac = summary.get("divergences", 0), summary.get("divergence_fraction") or 0.0
    head = f"{div} of {summary.get('total_draws')} draws diverged ({100 * frac:.2f}%)"
    probs = ("divergences",)
    if funnels:
        f = funnels[0]
        scale = _scale_label(f)
        return Verdict(
            "finding", "funnel",
            f"{head}. They sit where '{f.scale}' is small (divergent draws {abs(f.z_divergent):.2f} sds below the "
            f"others on {scale}), and across draws the spread of '{f.variable}' shrinks with it (correlation "
            f"{f.correlation:.2f} between {scale} and the log spread of '{f.variable}'): a funnel, whose narrow neck "
            "no single step size fits. The draws there are biased, not just slow.",
            _noncenter(f) + f" (a Deterministic for '{f.variable}'"
            + ("" if f.log_scale else f"; scale({f.scale}) is the scale '{f.scale}' gives it, e.g. exp({f.scale} / 2)")
            + "). A higher target_accept only "
            "shrinks the step and hides part of the divergences; it leaves the neck unexplored.",
            probs + ("funnel",))
    if div < min_divergent or frac < rare_fraction:
        return Verdict(
            "finding", "rare_divergences",
            f"{head}: rare (fewer than {min_divergent}, or under {100 * rare_fraction:.1f}% of the draws), and no "
            "funnel shows in the draws.",
            "Raise target_accept (0.9, then 0.95) and rerun: rare divergences of a well-posed geometry go away; "
            "if they stay, rerun with more draws so that they can be localized.", probs)
    where = divergence_location(localization)
    return Verdict(
        "finding", "divergences",
        f"{head}, with no funnel among the variables.{where}",
        "Look at the named variables' geometry (a pair plot with the divergent draws marked): a constraint "
        "boundary, a heavy tail or a strong curvature there needs a reparameterization or a better-scaled prior; "
        "raising target_accept is a stopgap.", probs)


def rule_model(summary: dict, multimodality: dict | None = None, rhat_chance: dict | None = None, *,
               divergence_localization: dict | None = None, funnels: list | None = None,
               convergence: dict | None = None, hints: dict | None = None) -> Verdict:
    """The verdict of one sampled model (the engine's entry :func:`~gimbal.diagnostics.diagnose.diagnose`):
    divergences first (:func:`rule_divergences`), else convergence (:func:`rule_convergence`)."""
    div = summary.get("divergences", 0)
    at_neck = bool(funnels) and funnels[0].z_divergent <= MAX_Z  # divergent draws at the scale's low end
    if div > 0 and (at_neck or not funnels):
        return rule_divergences(summary, divergence_localization, funnels)
    if funnels and (multimodality or {}).get("verdict") != "label_switching":
        f = funnels[0]
        lead = (f"{div} of {summary.get('total_draws')} draws diverged (too few to place)" if div else "No divergences")
        row = (summary.get("per_variable") or {}).get(f.scale) or {}
        scale = _scale_label(f)
        return Verdict(
            "finding", "funnel",
            f"{lead}, but '{f.scale}' mixes badly (R-hat {_num(row.get('rhat')):.3f}, bulk ESS "
            f"{_num(row.get('ess_bulk')):.0f}) and across draws the spread of '{f.variable}' shrinks with it "
            f"(correlation {f.correlation:.2f} between {scale} and the log spread of '{f.variable}'): a funnel whose "
            "neck the sampler adapted around instead of exploring; the small values of "
            f"'{f.scale}' are under-represented.",
            _noncenter(f) + ". More draws do not fix a funnel.", ("rhat", "funnel"))
    return rule_convergence(summary, multimodality, rhat_chance, hints=hints, localization=convergence,
                            on_pass="Nothing to fix: the draws can be used.")
