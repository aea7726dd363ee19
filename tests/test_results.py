"""A group's results as typed objects: the schema is derived from them, and the run is a declared list of steps."""

import json

import jsonschema
import pytest

from gimbal.diagnostics.dataschema import dataclass_schema
from gimbal.diagnostics.rules import Verdict
from gimbal.divergence import schema
from gimbal.divergence.groups import GROUPS, STEPS, GroupFailed, run_group
from gimbal.divergence.paths import make_paths
from gimbal.divergence.results import GroupResult, Header, results_schema, shipped_schema


def _result(**kw) -> GroupResult:
    header = Header(group="3", description="d", title="t", run_id="r", timestamp="now", config={}, dataset="x",
                    T=10, K=4, C=3, seed=1, profile="quick", samples=True,
                    environment={"python": "3.12", "platform": "p", "packages": {}})
    return GroupResult(schema_version="1.2", header=header, status="ok", steps=[],
                       verdict=Verdict("pass", "stable", "i", "n", ("a",)), **kw)


def test_the_shipped_schema_is_the_one_derived_from_the_dataclasses():
    assert shipped_schema() == results_schema(GROUPS), "rewrite it: gimbal.divergence.results.write_schema()"


def test_a_result_round_trips_through_json_and_validates():
    r = _result(sampling={"divergences": 0, "divergence_fraction": float("nan"), "total_draws": 200,
                          "mean_step_size": 0.3, "max_treedepth_fraction": 0.0, "ebfmi_per_chain": [1.0],
                          "max_rhat_all": float("inf"), "min_ess_bulk_all": 80.0})
    data = json.loads(json.dumps(r.to_json()))
    schema.validate_results(data)
    assert data["sampling"]["max_rhat_all"] == "Infinity"
    back = GroupResult.from_json(data)
    assert back.header == r.header and back.verdict == r.verdict and back.verdict.problems == ("a",)


@pytest.mark.parametrize("breakage", [
    lambda d: d["header"].update(group="9"),  # not a group of the study
    lambda d: d.update(status="done"),
    lambda d: d["verdict"].update(status="ok"),
    lambda d: d.update(sampling={"divergences": 0}),  # the summary keys every reader relies on
    lambda d: d["header"].pop("environment"),
    lambda d: d["steps"].append({"name": "x", "status": "skipped"}),
])
def test_the_derived_schema_rejects_what_readers_cannot_use(breakage):
    data = _result().to_json()
    breakage(data)
    with pytest.raises(jsonschema.ValidationError):
        schema.validate_results(data)


def test_dataclass_schema_maps_annotations():
    from dataclasses import dataclass, field
    from typing import Literal

    @dataclass
    class Inner:
        n: int

    @dataclass
    class Outer:
        kind: Literal["a", "b"]
        inner: Inner | None
        values: list[float]
        name: str = field(default="", metadata={"schema": {"pattern": "^x"}})

    s = dataclass_schema(Outer)
    assert s["required"] == ["kind", "inner", "values"]
    assert s["properties"]["kind"] == {"enum": ["a", "b"]}
    assert s["properties"]["inner"]["type"] == ["object", "null"] and s["properties"]["inner"]["required"] == ["n"]
    assert s["properties"]["values"]["type"] == "array" and s["properties"]["name"] == {"type": "string", "pattern": "^x"}


def test_the_run_is_a_declared_list_of_steps_and_a_failure_names_its_step(tmp_path):
    names = [s.name for s in STEPS]
    assert len(names) == len(set(names)) and names[0] == "load_data" and names[-1] == "verdict"
    with pytest.raises(GroupFailed, match="step 'build_model'"):
        run_group("1", "boom", max_T=5, root=tmp_path, fail_at="build_model")
    data = json.loads(make_paths("group_1_build_only_sanity", "boom", tmp_path).results_run.read_text())
    assert [(s["name"], s["status"]) for s in data["steps"]] == [("load_data", "ok"), ("build_model", "failed")]
    assert data["status"] == "failed" and data["error"]["step"] == "build_model"
    assert data["verdict"]["status"] == "error" and "build_model" in data["verdict"]["interpretation"]
    schema.validate_results(data)
