"""The engine on outside models with known answers (gimbal diag model): the verdicts the literature gives.

- centered eight schools (pymc-examples' divergence case study): divergences, a funnel of theta on tau;
- non-centered eight schools: no funnel, at most rare divergences (which a higher target_accept removes);
- Neal's funnel: a funnel of x on v;
- a centered radon-like hierarchical regression (simulated): a funnel of a on sigma_a;
- a two-component mixture with exchangeable priors: label switching along 'component', no divergences.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gimbal.cli import main
from gimbal.diagnostics.command import load_model_file
from gimbal.diagnostics.diagnose import diagnose, write_diagnosis
from gimbal.diagnostics.funnel import Funnel
from gimbal.diagnostics.rules import rule_divergences

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
SETTINGS = dict(chains=4, tune=600, draws=600, seed=3)


@pytest.fixture(scope="module")
def diagnoses():
    return {f.stem: diagnose(load_model_file(f), name=f.stem, **SETTINGS) for f in sorted(MODELS.glob("*.py"))}


def test_centered_eight_schools_is_a_funnel_on_tau(diagnoses):
    d = diagnoses["eight_schools_centered"]
    assert d.sampling["divergences"] > 0
    assert d.verdict.code == "funnel"
    assert (d.funnels[0].scale, d.funnels[0].variable) == ("tau", "theta")
    assert d.funnels[0].z_divergent < -0.5 and d.funnels[0].correlation > 0.5
    assert "Non-center 'theta' on 'tau'" in d.verdict.next_action


def test_noncentered_eight_schools_has_no_funnel(diagnoses):
    d = diagnoses["eight_schools_noncentered"]
    assert d.funnels == []
    assert d.sampling["divergence_fraction"] < 0.005
    assert d.verdict.code in ("stable", "rare_divergences")
    assert d.sampling["max_rhat_all"] < 1.01


def test_neals_funnel(diagnoses):
    d = diagnoses["neals_funnel"]
    assert d.verdict.code == "funnel"
    assert (d.funnels[0].scale, d.funnels[0].variable) == ("v", "x")
    assert not d.funnels[0].log_scale  # v is unbounded: read as it is, its scale exp(v/2) named in the advice
    assert "scale(v)" in d.verdict.next_action


def test_centered_radon_is_a_funnel_on_sigma_a(diagnoses):
    d = diagnoses["radon_centered"]
    assert d.verdict.code == "funnel"
    assert (d.funnels[0].scale, d.funnels[0].variable) == ("sigma_a", "a")


def test_mixture_label_switching(diagnoses):
    d = diagnoses["mixture_label_switching"]
    assert d.sampling["divergences"] == 0
    assert d.sampling["max_rhat_all"] > 1.1
    assert d.label_dim == "component"
    assert d.verdict.code == "label_switching"


def test_page_and_json_written_and_not_overwritten(diagnoses, tmp_path):
    d = diagnoses["eight_schools_centered"]
    page = write_diagnosis(d, tmp_path)
    text = page.read_text(encoding="utf-8")
    for section in ("## What was run", "## What it shows", "## What it means", "## What to do next"):
        assert section in text
    assert "funnel" in text and (page.parent / "eight_schools_centered.json").is_file()
    assert (page.parent / "divergence_pairs.png").is_file()
    with pytest.raises(FileExistsError):
        write_diagnosis(d, tmp_path)


def test_saved_trace_route(diagnoses, tmp_path, capsys):
    d = diagnoses["radon_centered"]
    trace_file = tmp_path / "radon.nc"
    d.trace.to_netcdf(trace_file)
    rc = main(["diag", "model", "--trace", str(trace_file), "--out", str(tmp_path / "out")])
    assert rc == 0
    assert "funnel" in capsys.readouterr().out
    assert (tmp_path / "out" / "radon" / "radon.md").is_file()


def test_model_file_errors(tmp_path, capsys):
    bad = tmp_path / "nomodel.py"
    bad.write_text("import pymc as pm\nwith pm.Model() as m:\n    pm.Normal('a')\n", encoding="utf-8")
    assert main(["diag", "model", str(bad), "--out", str(tmp_path)]) == 2
    assert "--model-name m" in capsys.readouterr().err
    assert main(["diag", "model", str(tmp_path / "missing.py")]) == 2


def test_rule_divergences_cases():
    summary = {"divergences": 3, "divergence_fraction": 0.003, "total_draws": 1000}
    assert rule_divergences(summary).code == "rare_divergences"
    many = {"divergences": 80, "divergence_fraction": 0.08, "total_draws": 1000}
    assert rule_divergences(many).code == "divergences"
    f = Funnel("tau", "theta", 0.9, -1.0, True)
    v = rule_divergences(many, funnels=[f])
    assert v.code == "funnel" and "theta = loc + tau * theta_raw" in v.next_action


def test_the_model_pages_become_an_html_book(diagnoses, tmp_path, capsys):
    import re

    for d in diagnoses.values():
        write_diagnosis(d, tmp_path)
    assert main(["diag", "model", "--book", "--out", str(tmp_path)]) == 0
    landing = tmp_path / "_build" / "html" / "index.html"
    assert f"book built: {landing}" in capsys.readouterr().out
    index = landing.read_text(encoding="utf-8")
    for name, d in diagnoses.items():  # the overview lists every model with its verdict, and links its page
        assert f"models/{name}/{name}.html" in index and d.verdict.code in index
        page = (tmp_path / "_build" / "html" / "models" / name / f"{name}.html").read_text(encoding="utf-8")
        assert "What to do next" in page
        images = re.findall(r'<img[^>]+src="([^"]+)"', page)
        assert images and all((landing.parent / "models" / name / src).resolve().is_file() for src in images), name


def test_the_model_command_without_work_is_a_usage_error(tmp_path, capsys):
    assert main(["diag", "model", "--out", str(tmp_path)]) == 2
    assert "--book" in capsys.readouterr().err
    assert main(["diag", "model", "--book", "--out", str(tmp_path)]) == 2  # no pages there yet
    assert "no diagnosis pages" in capsys.readouterr().err
