"""Log-density and gradient checks for any PyMC model.

PyMC builds the joint log-probability as a PyTensor graph; PyTensor compiles
it and differentiates it automatically; NUTS follows that gradient. These
functions evaluate both at a point and look for the first sign of trouble: a
non-finite term, a non-finite or huge gradient component, or an autodiff
gradient that disagrees with central finite differences (CmdStan
``diagnose``-style, on the unconstrained scale with the Jacobian included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pymc as pm
from pymc.blocking import DictToArrayBijection

__all__ = [
    "compile_logp_and_grad",
    "safe_point_logps",
    "flat_index_names",
    "gradient_report",
    "finite_difference_check",
    "perturbation_check",
    "evaluate_at",
    "LogpGrad",
]


@dataclass
class LogpGrad:
    """Compiled log-density and gradient of a model on the flat unconstrained vector."""

    model: pm.Model
    logp_point: object  # PointFunc: dict -> float
    dlogp_point: object  # PointFunc: dict -> flat gradient
    template: object  # RaveledVars describing the flat layout

    def flatten(self, point) -> np.ndarray:
        names = [v.name for v in self.model.value_vars]
        return DictToArrayBijection.map({n: point[n] for n in names}).data.copy()

    def unflatten(self, vector) -> dict:
        return DictToArrayBijection.rmap(type(self.template)(np.asarray(vector), self.template.point_map_info))

    def logp(self, vector) -> float:
        return float(self.logp_point(self.unflatten(vector)))

    def dlogp(self, vector) -> np.ndarray:
        return np.asarray(self.dlogp_point(self.unflatten(vector)), dtype=float)


def compile_logp_and_grad(model: pm.Model, point=None, mode=None) -> LogpGrad:
    """Compile ``model.compile_logp()`` and ``model.compile_dlogp()`` (PyTensor autodiff).

    Parameters
    ----------
    model : pymc.Model
    point : dict, optional
        Any point of the model (default: ``model.initial_point()``), used only
        to fix the layout of the flat unconstrained vector.
    mode : str, optional
        PyTensor compilation mode (default: PyTensor's, numba). ``"FAST_COMPILE"`` skips numba: PyTensor's
        Python implementations (and its C ones where a C compiler is configured), slower calls; a reference to
        compare against.
    """
    point = model.initial_point() if point is None else point
    names = [v.name for v in model.value_vars]
    template = DictToArrayBijection.map({n: point[n] for n in names})
    kwargs = {} if mode is None else {"mode": mode}
    return LogpGrad(model, model.compile_logp(**kwargs), model.compile_dlogp(**kwargs), template)


def safe_point_logps(model: pm.Model, point=None) -> dict:
    """Per-term log densities at a point, never raising on NaN/inf.

    Returns
    -------
    dict
        ``terms`` (name -> float, worst first), ``total`` (float), ``finite``
        (bool) and ``nonfinite_terms`` (names whose value is NaN or -inf).
    """
    point = model.initial_point() if point is None else point
    terms = {k: float(v) for k, v in model.point_logps(point, round_vals=12).items()}
    ordered = dict(sorted(terms.items(), key=lambda kv: (math.isfinite(kv[1]), kv[1])))
    bad = [k for k, v in ordered.items() if not math.isfinite(v)]
    total = float(sum(ordered.values())) if not bad else (float("nan") if any(np.isnan(list(ordered.values()))) else -math.inf)
    return {"terms": ordered, "total": total, "finite": not bad, "nonfinite_terms": bad}


def flat_index_names(checker: LogpGrad) -> list[str]:
    """A readable label (``name[i, j]``) for every entry of the flat vector."""
    labels = []
    for name, shape, _, _ in checker.template.point_map_info:
        if len(shape) == 0:
            labels.append(name)
        else:
            labels.extend(f"{name}[{', '.join(map(str, idx))}]" for idx in np.ndindex(*shape))
    return labels


def _variable_of(label: str) -> str:
    return label.split("[", 1)[0]


def gradient_report(checker: LogpGrad, point=None, top: int = 20) -> dict:
    """Gradient norms, non-finite counts, and the largest components by name and index."""
    point = checker.model.initial_point() if point is None else point
    x = checker.flatten(point)
    grad = checker.dlogp(x)
    labels = flat_index_names(checker)
    finite = np.isfinite(grad)
    order = np.argsort(-np.where(finite, np.abs(grad), np.inf))[:top]
    per_var = {}
    zero = []
    for label, g in zip(labels, grad):
        v = per_var.setdefault(_variable_of(label), {"size": 0, "nan": 0, "inf": 0, "zero": 0, "max_abs": 0.0})
        v["size"] += 1
        v["nan"] += int(np.isnan(g))
        v["inf"] += int(np.isinf(g))
        if g == 0.0:
            v["zero"] += 1
            zero.append(label)
        if np.isfinite(g):
            v["max_abs"] = max(v["max_abs"], float(abs(g)))
    return {
        "n_parameters": int(grad.size),
        "l2_norm": float(np.linalg.norm(grad[finite])) if finite.any() else float("nan"),
        "linf_norm": float(np.max(np.abs(grad[finite]))) if finite.any() else float("nan"),
        "nan_count": int(np.isnan(grad).sum()),
        "inf_count": int(np.isinf(grad).sum()),
        "finite": bool(finite.all()),
        # nutpie scales its initial mass matrix by 1/|gradient|: an exactly zero component is an invalid start
        "zero_components": zero[:top],
        "zero_count": len(zero),
        "top_components": [{"name": labels[i], "value": float(grad[i])} for i in order],
        "per_variable": per_var,
    }


def finite_difference_check(
    checker: LogpGrad,
    point=None,
    epsilon: float = 1e-6,
    error: float = 1e-6,
    max_components: int | None = 200,
    seed: int = 0,
    top: int = 10,
) -> dict:
    """Compare autodiff with central finite differences, CmdStan ``diagnose``-style.

    For each checked component ``i``: ``fd = (f(x + e_i eps) - f(x - e_i eps)) / (2 eps)``,
    and the same with ``10 eps``. A component fails when ``|fd - grad| > error * max(1, |grad|)``
    (CmdStan's absolute tolerance, scaled for the large log densities of big models: finite
    differences of a logp of size ``L`` carry rounding error ~``1e-16 L / eps``) at *both* steps.
    A log density summed from many terms of either sign carries more rounding noise than its
    net size says (the seed's T = 20 model: ~1e-11, 5e-6 off at ``eps = 1e-6``, 2e-7 at ``1e-5``,
    growing as ``eps`` shrinks); a wrong gradient is off at every step.

    Parameters
    ----------
    max_components : int or None
        Check at most this many components (a random subset that always
        contains every scalar variable); ``None`` checks all of them.
    """
    point = checker.model.initial_point() if point is None else point
    x = checker.flatten(point)
    grad = checker.dlogp(x)
    labels = flat_index_names(checker)
    n = x.size
    if max_components is None or max_components >= n:
        idx = np.arange(n)
    else:
        rng = np.random.default_rng(seed)
        sizes = [int(np.prod(s)) for _, s, _, _ in checker.template.point_map_info]
        starts = np.cumsum([0] + sizes[:-1])
        scalars = [int(s) for s, size in zip(starts, sizes) if size == 1]
        rest = np.setdiff1d(np.arange(n), scalars)
        k = max(0, max_components - len(scalars))
        idx = np.sort(np.concatenate([scalars, rng.choice(rest, size=min(k, rest.size), replace=False)])).astype(int)
    f0 = checker.logp(x)
    rows = []
    for i in idx:
        xp, xm = x.copy(), x.copy()
        xp[i] += epsilon
        xm[i] -= epsilon
        fd = (checker.logp(xp) - checker.logp(xm)) / (2 * epsilon)
        xp[i], xm[i] = x[i] + 10 * epsilon, x[i] - 10 * epsilon
        fd_wide = (checker.logp(xp) - checker.logp(xm)) / (20 * epsilon)
        rows.append((int(i), float(grad[i]), float(fd), float(fd_wide)))
    roundoff = 1e-16 * max(1.0, abs(f0)) / epsilon
    results = []
    for i, g, fd, fd_wide in rows:
        err, err_wide = abs(fd - g), abs(fd_wide - g)
        tol = max(error * max(1.0, abs(g)), 10 * roundoff)
        tol_wide = max(error * max(1.0, abs(g)), roundoff)
        ok = bool(err <= tol or err_wide <= tol_wide)
        results.append({"name": labels[i], "grad": g, "finite_diff": fd, "abs_error": err, "tolerance": tol,
                        "finite_diff_10eps": fd_wide, "abs_error_10eps": err_wide, "tolerance_10eps": tol_wide,
                        "ok": ok})

    def excess(r):  # how far past its tolerance a component is at its better step (what decides "ok")
        ratio = np.fmin(r["abs_error"] / r["tolerance"], r["abs_error_10eps"] / r["tolerance_10eps"])
        return float(ratio) if np.isfinite(ratio) else np.inf

    worst = sorted(results, key=lambda r: -excess(r))
    failed = [r for r in results if not r["ok"]]
    return {
        "epsilon": epsilon,
        "error": error,
        "logp": f0,
        "n_checked": len(results),
        "n_parameters": int(n),
        "n_failed": len(failed),
        "passed": not failed,
        "worst": worst[:top],
    }


def perturbation_check(checker: LogpGrad, point=None, n_points: int = 3, scale: float = 0.01, seed: int = 0) -> dict:
    """Evaluate logp and gradient at ``n_points`` small random perturbations of a point.

    Each unconstrained coordinate moves by ``scale * max(1, |x_i|)`` times a
    standard normal draw; both values must stay finite.
    """
    point = checker.model.initial_point() if point is None else point
    x = checker.flatten(point)
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n_points):
        xp = x + scale * np.maximum(1.0, np.abs(x)) * rng.standard_normal(x.size)
        lp = checker.logp(xp)
        g = checker.dlogp(xp)
        out.append(
            {
                "index": j,
                "logp": lp,
                "logp_finite": bool(np.isfinite(lp)),
                "grad_l2": float(np.linalg.norm(g[np.isfinite(g)])),
                "grad_nonfinite": int((~np.isfinite(g)).sum()),
            }
        )
    return {"scale": scale, "points": out, "all_finite": all(p["logp_finite"] and p["grad_nonfinite"] == 0 for p in out)}


def evaluate_at(model: pm.Model, tensor, point=None) -> np.ndarray:
    """Value of any tensor of ``model`` (a Deterministic, a Potential, an intermediate) at a point.

    Random variables in the tensor's graph are replaced by their value
    variables, so ``point`` is a dict keyed like ``model.initial_point()``.
    """
    import pytensor

    point = model.initial_point() if point is None else point
    out = model.replace_rvs_by_values([tensor])[0]
    fn = pytensor.function(model.value_vars, out, on_unused_input="ignore")
    return np.asarray(fn(*[point[v.name] for v in model.value_vars]))
