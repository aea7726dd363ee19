"""Chains in different regions of a GIMBAL posterior, read as detections believed or not (gimbal.model.regions)."""

import numpy as np
import pytest
import xarray as xr

from gimbal.model.regions import explain_regions


def _fit_like(rng, flip: bool = True) -> xr.DataTree:
    """4 chains x 500 draws shaped like a GIMBAL fit (2 cameras, 2 keypoints, 3 frames). With ``flip``, chains 2
    and 3 treat camera c1's detections of keypoint k1 as outliers (log-odds -4, noise 3 px) where chains 0 and 1
    believe them (log-odds 5, noise 10 px), and put k1 0.7 mm further along x, with a log density 20 lower."""
    n_chains, n_draws = 4, 500
    logodds = 5.0 + 0.2 * rng.normal(size=(n_chains, n_draws, 2, 2))
    noise = 3.0 + 0.05 * rng.normal(size=(n_chains, n_draws, 2, 2))
    noise[:, :, 1, 1] += 7.0
    x = 0.05 * rng.normal(size=(n_chains, n_draws, 3, 2, 3))
    lp = rng.normal(-500.0, 10.0, (n_chains, n_draws))
    if flip:
        logodds[2:, :, 1, 1] -= 9.0
        noise[2:, :, 1, 1] -= 7.0
        x[2:, :, :, 1, 0] += 0.7
        lp[2:] -= 20.0
    dims = ("chain", "draw", "camera", "keypoint")
    coords = {"camera": ["c0", "c1"], "keypoint": ["k0", "k1"]}
    post = xr.Dataset({"logodds_inlier_ck": (dims, logodds), "obs_sigma_ck": (dims, noise),
                       "x": (("chain", "draw", "frame", "keypoint", "xyz"), x)}, coords=coords)
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": xr.Dataset({"logp": (("chain", "draw"), lp)})})


def test_a_pair_believed_in_some_chains_and_not_in_others_is_named():
    rng = np.random.default_rng(11)
    found = explain_regions(_fit_like(rng), xr.Dataset(attrs={"units": "mm"}))
    assert found.regions == [[0, 1], [2, 3]]
    assert [(p["camera"], p["keypoint"]) for p in found.pairs] == [("c1", "k1")]
    believed, doubted = found.pairs[0]["inlier_probability"]
    assert believed > 0.99 and doubted < 0.02
    assert found.pairs[0]["noise_px"] == pytest.approx([10.0, 3.0], abs=0.05)
    assert found.position_shift["k1"] == pytest.approx(0.7, abs=0.02) and found.position_shift["k0"] < 0.02
    assert all(r < 1.01 for r in found.within_rhat)  # each region alone is converged
    text = found.text()
    assert "camera c1's detections of k1" in text and "--exclude CAMERA:KEYPOINT" in text
    assert "up to 0.70 mm (k1" in text and "2.0 within-chain sds lower" in text
    assert "fit with them (the default where the dataset has them" in text  # no confidence_slope in this fit
    assert found.to_json()["text"] == text


def test_chains_that_agree_give_no_report():
    rng = np.random.default_rng(12)
    assert explain_regions(_fit_like(rng, flip=False), xr.Dataset()) is None


def test_a_group_page_says_which_regions_the_chains_sampled(tmp_path):
    """The diagnostic group's results carry the regions (``chain_regions``) and its page shows them in section 4."""
    from gimbal.divergence.report import render_report

    rng = np.random.default_rng(13)
    regions = explain_regions(_fit_like(rng), xr.Dataset(attrs={"units": "mm"})).to_json()
    sampling = {"divergences": 0, "divergence_fraction": 0.0, "total_draws": 2000, "mean_step_size": 0.1,
                "max_treedepth_fraction": 0.0, "ebfmi_per_chain": [1.0] * 4, "max_rhat_all": 1.5,
                "min_ess_bulk_all": 7.0}
    header = {"group": "6", "title": "t", "run_id": "r", "timestamp": "now", "dataset": "mouse", "T": 3, "K": 2,
              "C": 2, "seed": 0, "samples": True}
    page = render_report({"header": header, "status": "ok", "sampling": sampling, "chain_regions": regions},
                         tmp_path / "page.md", tmp_path / "r.json", {})
    section = page.split("## 4. Sampling summary")[1].split("## 5.")[0]
    assert "**Chains in separate regions.** the chains sampled 2 separate regions" in section
    assert "camera c1's detections of k1" in section


def test_the_shared_model_names_every_cameras_detections_and_scores_change_the_advice():
    rng = np.random.default_rng(14)
    trace = _fit_like(rng)
    post = trace["posterior"].to_dataset()
    shared = post.drop_vars(["logodds_inlier_ck", "obs_sigma_ck"]).assign(
        logodds_inlier=post["logodds_inlier_ck"].isel(camera=1).drop_vars("camera"),
        confidence_slope=(("chain", "draw"), 1.0 + 0.1 * rng.normal(size=(4, 500))))
    found = explain_regions(xr.DataTree.from_dict({"posterior": shared, "sample_stats": trace["sample_stats"].to_dataset()}),
                            xr.Dataset(attrs={"units": "mm"}))
    assert [(p["camera"], p["keypoint"]) for p in found.pairs] == [("*", "k1")] and found.scores_used
    text = found.text()
    assert "every camera's detections of k1: inlier probability 0.99 in chains 0, 1, 0.02 in chains 2, 3" in text
    assert "fit with them" not in text  # the scores were used already


def test_chain_findings_say_the_split_or_else_the_stranded_chains():
    """``chain_findings`` (what `gimbal fit` prints and writes, for the whole recording or per window): the regions'
    explanation when the chains split; else the chains stranded below the rest, with the positions' R-hat without
    them; else nothing."""
    from gimbal.model.regions import chain_findings

    rng = np.random.default_rng(15)
    split = chain_findings(_fit_like(rng), xr.Dataset(attrs={"units": "mm"}))
    assert split.regions["regions"] == [[0, 1], [2, 3]] and split.text() == split.regions["text"]
    assert split.stranded["chains"] == []  # 20 below with a within-chain sd of 10: not stranded

    agree = _fit_like(rng, flip=False)
    found = chain_findings(agree, xr.Dataset())
    assert found.regions is None and found.stranded["chains"] == [] and found.text() is None

    lp = agree["sample_stats"]["logp"].values.copy()
    lp[3] -= 60.0  # chain 3 six within-chain sds below the others, its globals the same
    low = xr.DataTree.from_dict({"posterior": agree["posterior"].to_dataset(),
                                 "sample_stats": xr.Dataset({"logp": (("chain", "draw"), lp)})})
    found = chain_findings(low, xr.Dataset())
    assert found.regions is None and found.stranded["chains"] == [3]
    assert found.stranded["without_them"]["chains"] == [0, 1, 2]
    assert found.stranded["without_them"]["positions_rhat_above_1.01"] == 0
    assert found.text().startswith("chain 3 (mean log density") and "Without it, the positions' max R-hat is" in found.text()
