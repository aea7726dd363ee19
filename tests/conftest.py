import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Generate datasets into a fresh cache so the tests exercise generation and caching."""
    if "GIMBAL_TEST_KEEP_CACHE" not in os.environ:
        os.environ["GIMBAL_CACHE_DIR"] = str(tmp_path_factory.mktemp("gimbal-cache"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _generated_source(tmp_path_factory):
    """PyTensor's generated source in one folder of the session's, for the tests and the commands they start, not a
    new file per compiled function in the system temporary folder (as `gimbal` itself does)."""
    from gimbal._generated_source import generated_source_folder

    with generated_source_folder(tmp_path_factory.mktemp("generated-src")):
        yield


@pytest.fixture(scope="session")
def minimal80():
    from gimbal.datasets import load_dataset

    return load_dataset("v0.2.1_L00_minimal", max_T=80)


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def python_mode():
    """PyTensor's Python implementations only: no numba and no C compilation (``cxx`` unset while the test runs).

    For reference graphs that a test compares against: the values are PyTensor's, computed without compiling the
    graph (a numba or C compile of a scan or a parallel-HMM tree costs tens of seconds on a fresh machine).
    """
    import pytensor

    with pytensor.config.change_flags(cxx=""):
        yield "FAST_COMPILE"
