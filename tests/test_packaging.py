"""The installed package, not the checkout: a wheel runs a group and builds the book from an empty folder;
a notebook runs top to bottom as a user runs it (plain nbclient, default parameters) with inline figures intact."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_runs_group_1_and_builds_the_book_from_an_empty_folder(tmp_path):
    import shutil

    dist, src = tmp_path / "dist", tmp_path / "src"  # build from a copy: setuptools leaves build/ in the source
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "_build", "build", "*.egg-info", "tests",
                                                             "__pycache__", "results", ".pytest_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(dist.glob("gimbal-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("gimbal/notebooks/") for n in names if n.startswith("gimbal/notebooks/") and n.endswith(".ipynb")}
    assert shipped == {p.name for p in (REPO / "gimbal" / "notebooks").glob("*.ipynb")} and len(shipped) == 9
    assert {"gimbal/divergence/book_template/_config.yml", "gimbal/divergence/book_template/_toc.yml",
            "gimbal/divergence/schemas/results.schema.json"} <= set(names)
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    empty = tmp_path / "work"
    empty.mkdir()
    # the installed copy shadows the checkout (dependencies come from this environment)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def gimbal(*args):
        return subprocess.run([sys.executable, "-m", "gimbal.cli", *args], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=900)

    where = subprocess.run([sys.executable, "-c", "import gimbal; print(gimbal.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(site)), where
    run = gimbal("diag", "run", "--groups", "1", "--run-id", "wheel")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    book = gimbal("diag", "book")
    assert book.returncode == 0, book.stderr[-3000:]
    assert (empty / "_build" / "html" / "book" / "generated" / "report_summary.html").is_file()
    summary = (empty / "tests" / "diagnostics" / "v0_2_1_divergence" / "report_summary.md").read_text()
    assert "wheel" in summary and "crashed" not in summary


@pytest.mark.slow
def test_a_group_notebook_runs_top_to_bottom_as_a_user_runs_it(tmp_path):
    from nbclient import NotebookClient

    from gimbal.divergence.runner import copy_notebooks

    from gimbal.divergence.runner import NOTEBOOK_DIR

    paths = copy_notebooks(tmp_path)
    assert sorted(p.name for p in paths) == sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) and len(paths) == 9
    with pytest.raises(FileExistsError, match="--overwrite"):
        copy_notebooks(tmp_path)
    nb = nbformat.read(tmp_path / "group_1_build_only_sanity.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import matplotlib, matplotlib.pyplot as plt\nprint('backend', matplotlib.get_backend())\nplt.plot([0, 1]); plt.show()"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    last = nb.cells[-1]["outputs"]
    assert any("backend" in o.get("text", "") and "inline" in o.get("text", "") for o in last)
    assert any("image/png" in o.get("data", {}) for o in last)  # the user's own figure shows inline
    assert (tmp_path / "tests" / "diagnostics" / "v0_2_1_divergence" / "results").is_dir()
