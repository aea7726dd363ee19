"""The seed's decision rules, as code: every interpretation and next action comes from here.

A :class:`Verdict` has a ``status``:

* ``"pass"`` - nothing wrong found;
* ``"finding"`` - the diagnostic found a sampling problem (divergences, no convergence,
  chains in different modes) - a result, not a crash;
* ``"fail"`` - a hard defect: non-finite log density or gradient, gradient mismatch;
* ``"error"`` - the group itself crashed before reaching a verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "Verdict",
    "THRESHOLDS",
    "sampling_problems",
    "rule_build",
    "rule_gradient",
    "rule_sampling",
    "rule_temporal",
    "rule_summary",
    "rule_error",
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
    status: str
    code: str
    interpretation: str
    next_action: str
    problems: tuple = ()

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
        f"The group stopped at step '{step}' with: {error}. Results up to that step are kept.",
        "Fix the error shown above (the traceback is in the results JSON) and re-run this group.",
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
        "Proceed to the gradient checks (group 2).",
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
        "Proceed to the sampling groups (3-6).",
    )


_GROUP_MEANING = {
    "3": ("core_ill_conditioned", "the core kinematics/likelihood parameterization is already ill-conditioned",
          "Inspect the divergence localization: reparameterize the variables it names (positions relative to "
          "parents, fixed or better-scaled noise parameters) before adding the mixture or the HMM."),
    "4": ("mixture_math", "the mixture math, masking or probability parameterization is the problem",
          "Check the log-sum-exp of inlier/outlier terms, the masking of missing detections and the logodds prior."),
    "5": ("hmm_gradients", "the HMM Op gradients or transition parameterization are the problem",
          "Check the forward algorithm's gradient (micro check) and the transition prior; consider fixing the "
          "pose states from data."),
    "6": ("full_truncated_diverges", "the combination of mixture and HMM is unstable even when truncated",
          "Compare with groups 4 and 5 to see which component the divergences follow."),
    "7": ("observation_model_culprit", "the observation model itself is the culprit (latents are frozen)",
          "Rework the observation noise / mixture parameterization; the latent geometry is not involved."),
}


def rule_sampling(group: str, summary: dict, multimodality: dict | None = None, reference: dict | None = None,
                  extra_checks_ok: bool = True, rhat_chance: dict | None = None) -> Verdict:
    """Groups 3-8: what the divergences (or their absence) imply for this group.

    Parameters
    ----------
    group : str
        "3".."7" or "8a".."8e".
    summary : dict
        From :func:`gimbal.diagnostics.sampling.sampling_summary`.
    multimodality : dict, optional
        From :func:`gimbal.diagnostics.multimodality.multimodality_check`.
    reference : dict, optional
        The baseline's sampling summary (group 3's for groups 4 and 5).
    extra_checks_ok : bool
        The group's own extra checks (mixture checks, HMM micro gradient) passed.
    rhat_chance : dict, optional
        From :func:`gimbal.diagnostics.sampling.rhat_against_chance`: whether a
        too-high R-hat is within what chance gives over that many elements.
    """
    probs = sampling_problems(summary, multimodality)
    div = summary.get("divergences", 0)
    frac = summary.get("divergence_fraction") or 0.0
    ref_div = None if reference is None else reference.get("divergences")
    if not extra_checks_ok:
        return Verdict("fail", "extra_check_failed",
                       "One of this group's component checks failed (see its section): a defect in that component.",
                       "Fix the component check first; sampling results are not trustworthy until it passes.",
                       tuple(probs) + ("extra_check",))
    if div > 0:
        if group.startswith("8"):
            code, meaning, action = ("temporal_divergences", "divergences appear at this sequence length",
                                     "Compare across T in the summary: a sudden onset points at identifiability "
                                     "or compute limits, a gradual rise at accumulated numerical error.")
        elif group in ("4", "5") and ref_div is not None and ref_div > 0:
            code = "inherits_baseline"
            meaning = "the baseline (group 3) already diverges, so these divergences are inherited, not caused by this component"
            action = "Fix the baseline first (group 3's next action)."
        else:
            code, meaning, action = _GROUP_MEANING.get(group, ("diverges", "the model diverges", "Localize and reparameterize."))
        return Verdict("finding", code,
                       f"{div} divergent draws ({100 * frac:.1f}%): {meaning}.", action, tuple(probs))
    # no divergences
    if group in ("4", "5") and ref_div:
        stab = "The mixture" if group == "4" else "The HMM"
        lead = f"No divergences here while the baseline (group 3) had {ref_div}: {stab.lower()[4:]} stabilizes the model."
    elif group == "7":
        lead = "No divergences with frozen latents: the observation model is fine; any divergences come from the latent geometry/parameterization."
    elif group == "6":
        lead = "The truncated full model samples without divergences: if the full-size model fails, the issue is scaling/identifiability, not a hard bug."
    else:
        lead = "No divergences."
    if not probs:
        return Verdict("pass", "stable", lead + " R-hat, ESS, E-BFMI and tree depth are within thresholds.",
                       "Nothing to fix for this configuration; move on to the next group." if group != "6"
                       else "Run the temporal scaling groups (8a-8e) to test full length.")
    if "label_switching" in probs:
        return Verdict("finding", "label_switching",
                       lead + " But chains disagree only up to a relabelling of pose states: the posterior is "
                       "label-symmetric, which inflates R-hat without any divergence.",
                       "Fix or order the pose-state parameters (state_params='empirical' fits them from data).", tuple(probs))
    if "chains_in_different_modes" in probs:
        return Verdict("finding", "chains_in_different_modes",
                       lead + " But chains settled in different modes (their means differ by more than "
                       f"{(multimodality or {}).get('threshold', 3)} within-chain sds), which divergences alone do not show.",
                       "Start chains from a better initialization and check the flagged variables (often keypoints "
                       "whose detections the outlier component absorbed).", tuple(probs))
    if "rhat" in probs or "low_ess" in probs:
        chance_text, action = "", ("Run longer (more tune and draws) before trusting the posterior; if R-hat stays high, "
                                   "look for multimodality.")
        if rhat_chance and "rhat" in probs:
            c = rhat_chance
            where = (f" Exactly converged chains reach a max R-hat of {c['chance_max_rhat']:.4f} by chance over the "
                     f"{c['n_elements']} elements of '{c['variable']}' at their median bulk ESS "
                     f"({c['median_ess_bulk']:.0f}); the measured {c['max_rhat']:.4f} is ")
            if c["verdict"] == "beyond":
                slowest = (f" (its slowest element's bulk ESS is {c['min_ess_bulk']:.0f})"
                           if c.get("min_ess_bulk") is not None else "")
                chance_text = (where + "more than twice as far from 1: some elements really mix more slowly than the "
                               f"rest{slowest}.")
                action = (f"Find the elements of '{c['variable']}' with the highest R-hat and lowest ESS (in GIMBAL, "
                          "often positions with a detection in the outlier mixture's transition zone), then run longer or "
                          "raise target_accept; more draws alone shrink only the chance part.")
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


def rule_temporal(series: list[dict]) -> Verdict:
    """Group 8 across T: threshold, shape of the onset, and whether the longest T is stable.

    ``series`` items: ``{"T": int, "divergence_fraction": float, "status": str}``, any order.
    """
    pts = sorted((s for s in series if s.get("divergence_fraction") is not None), key=lambda s: s["T"])
    if not pts:
        return Verdict("error", "no_temporal_results", "No temporal-scaling group produced sampling results.",
                       "Run groups 8a-8e.")
    failing = [p for p in pts if p["divergence_fraction"] > 0]
    longest = pts[-1]
    if not failing:
        return Verdict("pass", "temporal_stable",
                       f"No divergences at any T up to {longest['T']}: full-sequence sampling scales.",
                       "If a longer production run still fails, the issue is elsewhere (priors, initialization, "
                       "sampling configuration).")
    first = failing[0]
    before = [p for p in pts if p["T"] < first["T"]]
    fr = [p["divergence_fraction"] for p in pts if p["T"] >= first["T"]]
    sudden = first["divergence_fraction"] >= 0.1 or (len(fr) > 1 and max(fr) - min(fr) < 0.5 * max(fr))
    shape = ("appear suddenly at a threshold: identifiability collapse or memory/compute limits" if sudden
             else "grow gradually with T: accumulated numerical error")
    last_ok = before[-1]["T"] if before else None
    return Verdict("finding", "temporal_threshold",
                   f"Divergences start between T={last_ok} and T={first['T']} and {shape}.",
                   "Localize the divergences in time (per-frame profile) at the first failing T and fix that region's "
                   "geometry; consider windowed inference only if the geometry cannot be fixed.",
                   ("temporal_threshold",))


def rule_summary(results: list[dict]) -> Verdict:
    """Which group fails first, in the seed's order, and what it implies (never success without results)."""
    if not results:
        return Verdict("error", "no_results", "No group produced results, so nothing can be concluded.",
                       "Run the groups (`gimbal diag run`) and read the runner's output for why they wrote nothing.")
    for r in results:
        v = r.get("verdict") or {}
        if v.get("status") in ("fail", "error") or (v.get("status") == "finding" and "divergences" in v.get("problems", [])):
            return Verdict(v["status"], f"first_failure_group_{r['group']}",
                           f"Group {r['group']} ({r.get('description', '')}) is the first to fail: {v.get('interpretation', '')}",
                           v.get("next_action", ""))
    findings = [r for r in results if (r.get("verdict") or {}).get("status") == "finding"]
    if findings:
        r = findings[0]
        return Verdict("finding", f"first_finding_group_{r['group']}",
                       f"No group diverges or fails. The first finding is in group {r['group']} "
                       f"({r['verdict'].get('code')}): {r['verdict']['interpretation']}",
                       r["verdict"]["next_action"])
    return Verdict("pass", "all_clear", "Every group passed: no divergences, finite gradients, converged chains.",
                   "The model is ready for production-length runs.")
