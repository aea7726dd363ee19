"""Shared helpers: datasets of any length, peak memory, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

# the speed and convergence benchmarks on the seed's synthetic data track the seed's model over time
from gimbal.divergence.groups import SEED_MODEL

RESULTS = Path(__file__).resolve().parent / "results"


def dataset_of_length(name: str, T: int):
    """A registered synthetic dataset with exactly ``T`` frames (regenerated when longer than the stored one)."""
    from gimbal.datasets import load_dataset
    from gimbal.datasets.synthetic import SYNTHETIC, generate

    stored = SYNTHETIC[name].T
    if T <= stored:
        return load_dataset(name, max_T=T)
    return generate(replace(SYNTHETIC[name], T=T))


def logp_grad_callable(compiled, model):
    """nutpie's logp + gradient function, and the model's initial point flattened in that function's order.

    Parameters
    ----------
    compiled : nutpie's compiled model (numba or JAX backend)
    model : pymc.Model
        The model it was compiled from.

    Returns
    -------
    f : callable
        ``f(x) -> (logp, gradient)``, the function the sampler calls.
    x0 : numpy.ndarray
        The initial point (no jitter).
    names : list of str
        Value variables in the order they are stacked in ``x0`` and the gradient.
    """
    from functools import partial

    import numpy as np

    point = model.initial_point()
    if hasattr(compiled, "logp_func"):  # numba backend: value variables in the model's order
        f, names = compiled.logp_func, [v.name for v in model.value_vars]
    else:  # JAX backend: nutpie's PyFuncModel keeps its function and variable order private
        f = partial(compiled._make_logp_func(), **compiled._shared_data)
        names = [v.name for v in compiled._variables if v.name in point]
    x0 = np.concatenate([np.ravel(point[n]).astype(float) for n in names])
    return f, x0, names


def logp_grad_times(f, x0, n_evals: int, max_s: float | None = None) -> list[float]:
    """Seconds per call of ``f(x0)`` (logp + gradient), ``n_evals`` calls after one warm-up call.

    With ``max_s``, stops early once that many seconds were spent (at least 5 calls): slow variants stay affordable.
    """
    import time

    f(x0)
    times = []
    for _ in range(n_evals):
        t0 = time.perf_counter()
        f(x0)
        times.append(time.perf_counter() - t0)
        if max_s is not None and len(times) >= 5 and sum(times) > max_s:
            break
    return times


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB (Linux/macOS: getrusage; Windows: peak working set)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if sys.platform != "darwin" else peak / 2**20
    except ImportError:
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20


def machine() -> dict:
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count()}


INIT_ROW = "skeleton-consistent least-squares triangulation (the initialization)"


def write_result(name: str, payload: dict, out_dir: Path = RESULTS) -> Path:
    from gimbal.diagnostics.io import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    return write_json(out_dir / f"{name}.json", payload)


def read_results(out_dir: Path = RESULTS) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))} if out_dir.is_dir() else {}


def earlier_rows(name: str, settings: dict, out_dir: Path = RESULTS):
    """The rows of result ``name`` written earlier with the same ``settings`` (their keys and values), else None.

    A run of some variants only adds its rows to these instead of dropping the other variants' measurements.
    """
    earlier = read_results(out_dir).get(name)
    if not earlier or any(earlier.get(k) != v for k, v in settings.items()):
        return None
    return earlier.get("rows")


def position_errors_3d(estimate, truth) -> dict:
    """Mean / median / p90 of the 3D error (the fits' own statistics) and how many positions were scored."""
    import numpy as np

    from gimbal.model.fitting import _error_stats

    err = np.linalg.norm(estimate - truth, axis=-1)
    return {**_error_stats(err), "n": int(np.isfinite(err).sum())}


def wrong_in_cameras(dataset, n: int = 3):
    """``(T, K)`` mask: (frame, keypoint) pairs whose detection is an outlier or missing in at least ``n`` cameras."""
    import numpy as np

    bad = dataset["is_outlier"].values.sum(axis=1) + (~np.isfinite(dataset["observations"].values).all(-1)).sum(axis=1)
    return bad >= n


# the reference rows' data (a reference, not a method): a row's ``detections`` option names one
TRUE_INLIERS, NO_OFFSETS = "true inliers", "true inliers, offsets removed"
REFERENCE_ROWS = {  # the text each reference row's label ends with
    TRUE_INLIERS: "on the true inliers (knows every outlier: a reference, not a method)",
    NO_OFFSETS: "on the true inliers without their systematic offsets (knows every outlier and offset: a reference, "
                "not a method)",
}


def oracle_detections(dataset, *, offsets: bool = True):
    """``dataset`` with only the detections the simulated errors left intact (those ``is_outlier`` marks NaN); with
    ``offsets=False`` each pair's systematic pixel offset (``offset_true``) is also taken off them. The data of the
    reference rows: what a model reaches when it knows every outlier (and offset)."""
    kept = dataset["observations"].where(~dataset["is_outlier"])
    return dataset.assign(observations=kept if offsets else kept - dataset["offset_true"])


def row_data(dataset, options: dict):
    """A row's data and model options: the dataset, or for a reference row (``options["detections"]``, a key of
    :data:`REFERENCE_ROWS`) its :func:`oracle_detections`; the options without ``detections``."""
    detections = options.get("detections")
    data = dataset if detections is None else oracle_detections(dataset, offsets=detections != NO_OFFSETS)
    return data, {k: v for k, v in options.items() if k != "detections"}
