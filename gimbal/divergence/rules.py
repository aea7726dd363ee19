"""The seed's decision rules for GIMBAL's diagnostic groups: what each group's outcome means, and what to do.

The generic parts (thresholds, verdicts, build/gradient/convergence rules) are the engine's
(:mod:`gimbal.diagnostics.rules`); this module adds the group meanings, the GIMBAL-specific advice, the
temporal-scaling rule across T and the run summary.
"""

from __future__ import annotations

from ..diagnostics.rules import Verdict, divergence_location, rule_convergence, sampling_problems

__all__ = ["rule_sampling", "rule_heading", "rule_exact_labels", "rule_temporal", "rule_summary", "rule_contrast",
           "GIMBAL_HINTS"]

GIMBAL_HINTS = {
    "label_switching": "In GIMBAL: state_params='empirical' fits the pose states from data, as the original does.",
    "chains_in_different_modes": "In GIMBAL these are often keypoints whose detections are wrong in several cameras "
                                 "(or absorbed by the outlier component): a skeleton-consistent initialization or a "
                                 "trained pose prior (stronger bone-direction states) at those keypoints.",
    "chains_switching_modes": "In GIMBAL: an occluded keypoint (elbow, knee) with two explanations in the detections; "
                              "a skeleton-consistent initialization or a trained pose prior holds it in one.",
    "slow_elements": "in GIMBAL, often positions with a detection in the outlier mixture's transition zone",
    "slow_mixing": "In GIMBAL, slowly mixing positions often have a detection in the outlier mixture's transition zone.",
}


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
    "6c": ("earlier_port_diverges", "the earlier port's parameterization (per-frame bone directions as free "
           "variables, learned noise scales and pose states) diverges on the same data and model as group 6",
           "Use the default parameterization (group 6): bone directions marginalized into the positions, noise "
           "scales fixed from the detections and pose states fitted from data. Compare the two pages: the "
           "variables named here are the ones the default no longer samples or no longer couples."),
}


def rule_sampling(group: str, summary: dict, multimodality: dict | None = None, reference: dict | None = None,
                  extra_checks_ok: bool = True, rhat_chance: dict | None = None,
                  localization: dict | None = None, divergences: dict | None = None) -> Verdict:
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
        From :func:`gimbal.diagnostics.chance.rhat_against_chance`: whether a
        too-high R-hat is within what chance gives over that many elements.
    localization : dict, optional
        Non-convergence localization (:func:`gimbal.diagnostics.convergence.convergence_localization`, as JSON).
    divergences : dict, optional
        Divergence localization (:func:`gimbal.diagnostics.localization.divergence_localization`): a finding with
        divergences says where they sit.
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
                       f"{div} divergent draws ({100 * frac:.1f}%): {meaning}.{divergence_location(divergences)}",
                       action, tuple(probs))
    # no divergences
    if group in ("4", "5") and ref_div:
        stab = "The mixture" if group == "4" else "The HMM"
        lead = f"No divergences here while the baseline (group 3) had {ref_div}: {stab.lower()[4:]} stabilizes the model."
    elif group == "7":
        lead = "No divergences with frozen latents: the observation model is fine; any divergences come from the latent geometry/parameterization."
    elif group == "6c":
        lead = ("The earlier port's parameterization did not diverge in this run, so this contrast shows no "
                "divergences to localize; a longer run or another seed may.")
    elif group == "6":
        lead = "The truncated full model samples without divergences: if the full-size model fails, the issue is scaling/identifiability, not a hard bug."
    else:
        lead = "No divergences."
    on_pass = ("Nothing to fix for this configuration; move on to the next group." if group != "6"
               else "Run the temporal scaling groups (8a-8e) to test full length.")
    return rule_convergence(summary, multimodality, rhat_chance, lead=lead, hints=GIMBAL_HINTS, on_pass=on_pass,
                            localization=localization)


def rule_heading(verdict: Verdict, heading: dict | None) -> Verdict:
    """A sampling finding traced to the trained prior's body frame, where it sits at frames whose heading is ill-defined.

    With a trained prior the pose states live in a body frame that turns with the heading (two keypoints, seen
    from above); where their floor-plane distance is short, a small move turns the frame by many degrees and the
    posterior is sharply curved. The finding is traced there when the heading check traces the unconverged frames
    to such frames (:func:`gimbal.model.prior.heading_check`), or when the divergent draws peak at one.

    Parameters
    ----------
    verdict : Verdict
        From :func:`rule_sampling`; only findings are refined.
    heading : dict, optional
        The group's ``heading`` result (``gimbal.divergence.groups``' heading check); None without a prior.
    """
    from ..model.prior import HEADING_FIX, heading_text

    if verdict.status != "finding" or not heading or not heading["short_frames"]:
        return verdict
    peak = heading["divergence_peak_frame"]
    by_divergences = peak is not None and peak in heading["short_frames"]
    if not (heading["traced"] or by_divergences):
        return verdict
    causes = [heading_text(heading)] if heading["traced"] else []
    if by_divergences:
        base, tip = heading["keypoints"]
        causes.append(f"The divergent draws peak at frame {peak}, where the heading baseline ({base} -> {tip}) is "
                      f"shorter than {heading['short_fraction']:.0%} of its median seen from above: the trained "
                      "prior's body frame turns by many degrees there for a small move.")
    return Verdict("finding", "heading_ill_defined",
                   f"{verdict.interpretation} Traced to the trained prior: {' '.join(causes)}",
                   f"{HEADING_FIX} Then run again; if the finding stays: {verdict.next_action}",
                   tuple(verdict.problems) + ("heading",))


def rule_exact_labels(verdict: Verdict, residual_px: float | None) -> Verdict:
    """A sampling finding on 2D points that are exact reprojections of 3D points: labels, not detections.

    ``residual_px``: the start's median triangulation residual (the group header's
    ``parameters["triangulation_residual_px"]``; None in runs before it was recorded). Only findings are refined.
    """
    from ..model.initialization import EXACT_FIX, exact_reprojection_text

    text = None if residual_px is None else exact_reprojection_text(residual_px)
    if verdict.status != "finding" or text is None:
        return verdict
    return Verdict("finding", "exact_reprojections", f"{verdict.interpretation} {text}",
                   f"{EXACT_FIX} If the finding stays on a detector's output: {verdict.next_action}",
                   tuple(verdict.problems) + ("exact_reprojections",))


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


def rule_contrast(contrast: dict, default: dict | None) -> Verdict:
    """A contrast run (e.g. group 6c, the earlier port's parameterization) set against its default group.

    Both are summary rows (``group``, ``description``, ``status``, ``verdict``, ``sampling``); ``default`` is None
    when the default group did not run. The contrast is shown, never counted as the study's first failure.
    """
    g, s = contrast["group"], contrast.get("sampling") or {}
    if contrast.get("status") in ("failed", "interrupted") or not s:
        return Verdict("error", "contrast_failed", f"The contrast run (group {g}) produced no sampling results.",
                       "Open its page for the failing step.")
    ds = (default or {}).get("sampling") or {}
    vs = contrast.get("verdict") or {}
    head = (f"The contrast run (group {g}, {contrast.get('description', '')}), {s['divergences']} of "
            f"{s['total_draws']} draws divergent: {vs.get('interpretation', '')}")
    if not ds:
        against = f" Its default (group {contrast.get('contrast_of')}) did not run, so there is nothing to set it against."
    else:
        against = (f" The default parameterization on the same data (group {default['group']}) had "
                   f"{ds['divergences']} of {ds['total_draws']} draws divergent")
    if s["divergences"] and ds and not ds["divergences"]:
        return Verdict("finding", "contrast_default_removes_divergences", head + against + ": the default removes them.",
                       vs.get("next_action", ""))
    return Verdict("finding", "contrast_inconclusive", head + against + ("." if ds else ""),
                   "Nothing to conclude about the default from this contrast; read the group pages.")


def rule_summary(results: list[dict]) -> Verdict:
    """Which group fails first, in the seed's order, and what it implies (never success without results).

    Contrast runs (rows with a ``contrast_of``) are left out: :func:`rule_contrast` reads them.
    """
    results = [r for r in results if not r.get("contrast_of")]
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
    few = [r for r in findings if r["verdict"].get("code") == "too_few_draws"]
    if findings and len(few) == len(findings):
        groups = ", ".join(str(r["group"]) for r in few)
        return Verdict("finding", "too_few_draws",
                       f"No group diverges or fails. The sampling groups ({groups}) have too few draws to judge "
                       "convergence: their chains show no separate modes, but R-hat and ESS cannot reach the "
                       "thresholds with this many draws.",
                       "Run the sampling groups with more draws (`--profile full`, or `--profile long` for 4 x "
                       "(1000 + 1000)) before concluding that the model converges.")
    if findings:
        r = findings[0]
        return Verdict("finding", f"first_finding_group_{r['group']}",
                       f"No group diverges or fails. The first finding is in group {r['group']} "
                       f"({r['verdict'].get('code')}): {r['verdict']['interpretation']}",
                       r["verdict"]["next_action"])
    return Verdict("pass", "all_clear", "Every group passed: no divergences, finite gradients, converged chains.",
                   "The model is ready for production-length runs.")
