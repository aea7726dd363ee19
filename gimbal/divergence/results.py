"""A group's results as typed objects: what :func:`~gimbal.divergence.groups.run_group` builds and writes.

:class:`GroupResult` (with :class:`Header`, :class:`StepRecord`, :class:`GroupError` and the engine's
:class:`~gimbal.diagnostics.rules.Verdict`) is the one definition of a results file: ``to_json`` writes it,
``from_json`` reads it back, and the shipped JSON schema (``schemas/results.schema.json``) is derived from it by
:func:`results_schema` (a test keeps the two equal; :func:`write_schema` rewrites the file after a change).
The checks' own outputs (``model_checks``, ``sampling``, ...) stay the engine's JSON dicts; the schema names the
keys every reader relies on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from ..diagnostics.dataschema import dataclass_schema
from ..diagnostics.io import to_jsonable
from ..diagnostics.rules import Verdict

__all__ = ["SCHEMA_VERSION", "Header", "StepRecord", "GroupError", "GroupResult", "results_schema", "SCHEMA_FILE",
           "excluded_of", "dataset_label", "prior_row", "calibration_row", "parameter_rows"]

SCHEMA_VERSION = "1.4"  # 1.1 added the "long" profile; 1.2 the contrast group 6c, the process and convergence keys;
# 1.3 the chain_regions key; 1.4 the heading key
SCHEMA_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")
SCHEMA_FILE = "schemas/results.schema.json"
Status = Literal["running", "ok", "failed", "interrupted"]


def _keys(*required: str) -> dict:
    return {"schema": {"required": list(required)}}


@dataclass
class Header:
    """What was run: the group, the data, the model configuration, the sampler and the environment."""

    group: str
    description: str
    title: str
    run_id: str
    timestamp: str
    config: dict
    dataset: str
    T: int | None
    K: int | None
    C: int | None
    seed: int
    profile: Literal["quick", "full", "long"]
    samples: bool
    environment: dict = field(metadata=_keys("python", "platform", "packages"))
    purpose: str = ""
    sampling_settings: dict | None = None
    parameters: dict = field(default_factory=dict)
    frozen_at: str | None = None  # group 7: where the latents were frozen (truth, truth where known, init)


def excluded_of(header: dict) -> list[str]:
    """The detections a group's run left out (``header["parameters"]["exclude"]``; none in runs before it existed)."""
    return list((header.get("parameters") or {}).get("exclude") or [])


def prior_row(header: dict) -> list[tuple[str, str]]:
    """The header's ``("pose prior", ...)`` row where the run was given a trained prior (``--prior``), else none."""
    p = header.get("parameters") or {}
    if not p.get("prior"):
        return []
    return [("pose prior", p["prior"] if p.get("prior_used") else
             f"not used: this group's model has no pose states ({p['prior']} was given to the run)")]


def calibration_row(header: dict) -> list[tuple[str, str]]:
    """The header's ``("calibration", ...)`` row where the dataset's import flagged cameras, else none."""
    flagged = (header.get("parameters") or {}).get("calibration_flagged")
    return [("calibration", flagged)] if flagged else []


def parameter_rows(header: dict) -> list[tuple[str, str]]:
    """The rows a group's header adds for what the run was given: the trained prior and a flagged calibration."""
    return prior_row(header) + calibration_row(header)


def dataset_label(header: dict) -> str:
    """The dataset as the pages name it: ``NAME``, or ``NAME without CAMERA:KEYPOINT, ...``."""
    left_out = excluded_of(header)
    return header["dataset"] + (f" without {', '.join(left_out)}" if left_out else "")


@dataclass
class StepRecord:
    """One step of a group's run, as it ended."""

    name: str
    status: Literal["ok", "failed"]
    seconds: float | None = None


@dataclass
class GroupError:
    """The step that failed, with the exception and its traceback."""

    step: str
    type: str
    message: str
    traceback: str


@dataclass
class GroupResult:
    """One group's results file. Every field but ``header``/``status``/``steps``/``verdict`` may still be empty
    (``None``) while the group runs or after it failed."""

    schema_version: Literal[SCHEMA_VERSIONS]  # type: ignore[valid-type]
    header: Header
    status: Status
    steps: list[StepRecord]
    verdict: Verdict | None
    model_checks: dict | None = field(default=None, metadata=_keys("total", "finite", "nonfinite_terms", "worst_terms"))
    gradient_checks: dict | None = field(default=None, metadata=_keys("at_initial_point"))
    sampling: dict | None = field(default=None, metadata=_keys(
        "divergences", "divergence_fraction", "total_draws", "mean_step_size", "max_treedepth_fraction",
        "ebfmi_per_chain", "max_rhat_all", "min_ess_bulk_all"))
    multimodality: dict | None = None
    localization: dict | None = None
    position_error: dict | None = None
    rhat_chance: dict | None = None
    convergence_localization: dict | None = None
    chain_regions: dict | None = None  # chains in separate regions of the globals (gimbal.model.regions), else None
    heading: dict | None = None  # with a trained prior: frames whose body frame is ill-defined (groups.heading_check)
    plots: dict = field(default_factory=dict)
    error: GroupError | None = None
    process: dict = field(default_factory=dict)  # who writes the file: a running result whose process is gone is interrupted

    def to_json(self) -> dict:
        """The strict-JSON form (non-finite numbers as strings), as written to the results file."""
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> GroupResult:
        """Read a results file's content back (unknown keys of older files are dropped)."""
        def build(kind, value):
            if value is None:
                return None
            names = {f.name for f in dataclasses.fields(kind)}
            out = kind(**{k: v for k, v in value.items() if k in names})
            if kind is Verdict:
                out.problems = tuple(out.problems)
            return out

        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["header"] = build(Header, data["header"])
        kwargs["steps"] = [build(StepRecord, s) for s in data.get("steps", [])]
        kwargs["verdict"] = build(Verdict, data.get("verdict"))
        kwargs["error"] = build(GroupError, data.get("error"))
        return cls(**kwargs)


def results_schema(group_ids) -> dict:
    """The JSON schema of :class:`GroupResult`, with the header's group restricted to ``group_ids``."""
    schema = dataclass_schema(GroupResult, title="gimbal divergence-diagnostic group results",
                              description="One group's run, as gimbal.divergence.results.GroupResult writes it. "
                                          "Non-finite floats are stored as the strings NaN, Infinity, -Infinity. "
                                          f"Version {SCHEMA_VERSION}; generated from the dataclasses, not by hand.")
    schema["properties"]["header"]["properties"]["group"]["enum"] = list(group_ids)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://gimbal.invalid/schemas/results-{SCHEMA_VERSION}.json", **schema}


def shipped_schema() -> dict:
    return json.loads(resources.files("gimbal.divergence").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def write_schema() -> Path:
    """Rewrite the shipped schema from the dataclasses (run after changing them)."""
    from .groups import GROUPS

    path = Path(__file__).resolve().parent / SCHEMA_FILE
    path.write_text(json.dumps(results_schema(GROUPS), indent=2) + "\n", encoding="utf-8")
    return path
