"""The generic divergence-diagnostic engine: works on any PyMC model.

It never imports the GIMBAL model nor the seed's study (groups, output tree, schema, report
sections, GIMBAL advice: :mod:`gimbal.divergence`); the study composes the two.
"""

from .chance import RhatExceedances, chance_max_rhat, element_chance, rhat_against_chance, rhat_exceedances
from .checks import (
    compile_logp_and_grad,
    finite_difference_check,
    gradient_report,
    perturbation_check,
    safe_point_logps,
)
from .convergence import ChainRegions, StrandedChains, chain_regions, convergence_localization, stranded_chains
from .diagnose import Diagnosis, diagnose, write_diagnosis
from .funnel import Funnel, funnel_check
from .io import collect_environment, save_text, write_json
from .localization import divergence_localization
from .multimodality import multimodality_check
from .sampling import convergence_table, normalize_sample_stats, sampling_summary

__all__ = [
    "collect_environment",
    "write_json",
    "save_text",
    "safe_point_logps",
    "compile_logp_and_grad",
    "gradient_report",
    "finite_difference_check",
    "perturbation_check",
    "normalize_sample_stats",
    "sampling_summary",
    "convergence_table",
    "chance_max_rhat",
    "rhat_against_chance",
    "rhat_exceedances",
    "RhatExceedances",
    "element_chance",
    "multimodality_check",
    "divergence_localization",
    "convergence_localization",
    "stranded_chains",
    "StrandedChains",
    "chain_regions",
    "ChainRegions",
    "diagnose",
    "Diagnosis",
    "write_diagnosis",
    "funnel_check",
    "Funnel",
]
