"""A trained pose prior on real labelled mice: train on one animal's 3D labels, test on another's.

The DANNCE markerless mice (``../shared/data/dannce_markerless_mouse``: 6 cameras, 22 keypoints, manual 3D labels
on sparse frames) are the ground truth. The prior is fitted on mouse 1's 3D labels; mouse 2's 2D labels (exact
reprojections of its 3D labels) get detector-like errors - Gaussian noise, missing detections, outliers anywhere
in the image and left/right swaps (confident wrong detections) - and are then reconstructed by

* robust triangulation (consensus over camera pairs, the initialization),
* the default model with pose states estimated from the test data itself (``prior=None``), and
* the model with the trained prior (body-frame pose states, bone scales), with one state and with ``n_states``;
* a reference, not a method: the model with the ``n_states`` prior on the detections the errors left intact
  (:func:`benchmarks.common.oracle_detections`), what it reaches when it knows every outlier.

Frames are sparse, so there is no temporal term. The 3D errors of the posterior means against the labels are
written to ``benchmarks/results/prior_transfer.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .common import (INIT_ROW, REFERENCE_ROWS, TRUE_INLIERS, machine, position_errors_3d as _errors, row_data,
                     write_result, wrong_in_cameras)

SHARED = Path(os.environ.get("GIMBAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DANNCE = SHARED / "dannce_markerless_mouse"
HEADING = ("SpineM", "Snout")  # long on the floor even when the mouse rears (SpineM -> SpineF is not: see fit_prior)


def detector_errors(ds, *, seed: int = 0, noise_px: float = 5.0, missing: float = 0.05, outliers: float = 0.10,
                    swaps: float = 0.05, occluded: float = 0.15, guess_px: float = 40.0):
    """``ds`` with detector-like errors added to its (undistorted) 2D observations; ``is_outlier`` marks them.

    A swap exchanges a left and a right keypoint (``...L`` / ``...R``) in one camera and frame, as a detector
    confusing the sides does. An occluded keypoint (probability ``occluded`` per frame and keypoint) is seen right
    by one camera only; in every other camera it is missing or (half the time) a confident guess ``guess_px`` off,
    so that it is wrong in several cameras at once, as an elbow or a paw under the body is.
    """
    rng = np.random.default_rng(seed)
    obs = ds["observations"].values.copy()
    T, C, K, _ = obs.shape
    names = [str(k) for k in ds["keypoint"].values]
    obs += rng.normal(0.0, noise_px, obs.shape)
    bad = np.zeros((T, C, K), bool)
    pairs = [(names.index(n), names.index(n[:-1] + "R")) for n in names if n.endswith("L") and n[:-1] + "R" in names]
    for t in range(T):
        for c in range(C):
            for a, b in pairs:
                if rng.random() < swaps:
                    obs[t, c, [a, b]] = obs[t, c, [b, a]]
                    bad[t, c, [a, b]] = True
    for t, k in zip(*np.nonzero(rng.random((T, K)) < occluded)):
        others = np.setdiff1d(np.arange(C), rng.integers(C))
        guess = rng.random(others.size) < 0.5
        obs[t, others[guess], k] += rng.normal(0.0, guess_px, (int(guess.sum()), 2))
        obs[t, others[~guess], k] = np.nan
        bad[t, others, k] = True
    size = ds["image_size"].values  # (C, 2)
    wild = rng.random((T, C, K)) < outliers
    obs[wild] = rng.random((int(wild.sum()), 2)) * size[np.nonzero(wild)[1]]
    bad |= wild
    obs[rng.random((T, C, K)) < missing] = np.nan
    out = ds.copy()
    out["observations"] = (("frame", "camera", "keypoint", "uv"), obs)
    out["is_outlier"] = (("frame", "camera", "keypoint"), bad & np.isfinite(obs).all(-1))
    return out


def run(*, n_states: int = 4, chains: int = 4, tune: int = 1000, draws: int = 1000, seed: int = 0,
        quick: bool = False, out: bool = True) -> dict:
    """Train on mouse 1, test on mouse 2 (see the module docstring); returns (and writes) the result."""
    from gimbal.io.label3d import load_label3d
    from gimbal.model.build import build_model
    from gimbal.model.fitting import sample_model
    from gimbal.model.initialization import triangulate_sequence
    from gimbal.model.prior import fit_prior
    from gimbal.model.support import unconverged_support
    from arviz_stats import rhat

    skeleton = DANNCE / "mouse22_skeleton.mat"
    train = load_label3d(DANNCE / "markerless_mouse_1" / "label3d_dannce.mat", skeleton)
    test = load_label3d(DANNCE / "markerless_mouse_2" / "label3d_dannce.mat", skeleton)
    if quick:
        test = test.isel(frame=slice(0, 12))
        chains, tune, draws = 2, 150, 100
    names = [str(k) for k in train["keypoint"].values]
    priors = {S: fit_prior(train["positions_true"].values, train["parents"].values,
                           [names.index(h) for h in HEADING], n_states=S, keypoint_names=names, consecutive=False,
                           seed=seed, source="markerless_mouse_1 3D labels") for S in sorted({1, n_states})}
    noisy = detector_errors(test, seed=seed)
    truth = noisy["positions_true"].values
    occluded = wrong_in_cameras(noisy)
    rows = {}
    # the baseline is plain robust triangulation (consensus, no refinement); the model starts from the initialization
    plain = triangulate_sequence(noisy, skeleton_consistent=False, refine=False, normalize=True)
    for label, tri in (("triangulation", plain), (INIT_ROW, triangulate_sequence(noisy))):
        rows[label] = {"errors": _errors(tri, truth), "errors_wrong_in_3_cameras": _errors(tri[occluded], truth[occluded])}
    variants = {"data states (no prior)": dict(prior=None, n_states=1)}
    variants.update({f"trained prior ({S} state{'s' * (S > 1)})": dict(prior=p) for S, p in priors.items()})
    # a reference, not a method: the richest prior on the detections the simulated errors left intact
    variants[f"{list(variants)[-1]}, {REFERENCE_ROWS[TRUE_INLIERS]}"] = dict(prior=priors[max(priors)],
                                                                          detections=TRUE_INLIERS)
    for label, options in variants.items():
        t0 = time.perf_counter()
        data, model_options = row_data(noisy, options)
        model = build_model(data, use_directional_hmm=False, temporal=False, **model_options)
        fit = sample_model(model, chains=chains, tune=tune, draws=draws, seed=seed, progress=False)
        post = fit.trace.posterior
        x = post["x"].mean(dim=("chain", "draw")).values
        r = rhat(post["x"]).values if chains > 1 else None
        rows[label] = {
            "errors": _errors(x, truth),
            "errors_wrong_in_3_cameras": _errors(x[occluded], truth[occluded]),
            "divergences": int(fit.trace.sample_stats["diverging"].sum()),
            "max_rhat_x": float(r.max()) if r is not None else None,
            "fraction_x_rhat_above_1.01": float(np.mean(r > 1.01)) if r is not None else None,
            "unconverged_by_support": None if r is None else unconverged_support(
                fit.trace, data, float(model.gimbal_init.values["obs_sigma"]), rhat_x=r).to_json(),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        print(label, rows[label], flush=True)
    result = {"benchmark": "prior_transfer", "dataset": "dannce_markerless_mouse", "train": "markerless_mouse_1", "test": "markerless_mouse_2", "frames_test": int(noisy.sizes["frame"]),
              "noise": "5 px Gaussian, 5% missing, 10% uniform outliers, 5% left/right swaps per pair and camera, 15% of "
                       "keypoints occluded (seen by one camera; missing or a guess 40 px off in the others)",
              "chains": chains, "tune": tune, "draws": draws, "n_states": n_states, "heading": list(HEADING), "seed": seed,
              "rows": rows,
              "machine": machine(), "quick": quick}
    if out:
        write_result("prior_transfer" + ("_quick" if quick else ""), result)
    return result
