import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's benchmarks/ package

from benchmarks.common import earlier_rows, write_result  # noqa: E402


def test_a_run_of_some_variants_finds_the_rows_measured_with_the_same_settings(tmp_path):
    """`--variants` runs add their rows to the earlier result; other settings (or no result) give None."""
    settings = {"T": 100, "chains": 4, "tune": 1000, "draws": 1000}
    write_result("observation_models", {**settings, "rows": {"a": {"x": 1}, "b": {"x": 2}}}, out_dir=tmp_path)
    assert json.loads((tmp_path / "observation_models.json").read_text())["rows"]["b"] == {"x": 2}
    assert earlier_rows("observation_models", settings, out_dir=tmp_path) == {"a": {"x": 1}, "b": {"x": 2}}
    assert earlier_rows("observation_models", {**settings, "draws": 500}, out_dir=tmp_path) is None
    assert earlier_rows("ablation_x", settings, out_dir=tmp_path) is None
