"""Chains in different regions of a GIMBAL posterior, read as which detections each region believes.

:func:`gimbal.diagnostics.chain_regions` groups chains by the global variables they sampled. On real recordings
the usual cause of a split is a (camera, keypoint) pair whose detections are systematically off (a calibration
error of that camera, or a detector that marks another spot): over many frames its detections fit either as
inliers with a large noise or as outliers, two explanations that each pull the keypoint's track and the camera's
noise factor their own way, and no chain crosses from one to the other. On the SLEAP + Anipose mouse (120 frames,
4 cameras, without the detector's scores) camera ``back``'s detections of ``Tail_0`` were inliers (noise 11 px) in
two chains and outliers in the other two, and the keypoints' positions differed by up to 1.2 mm between the regions
(2.9 mm in a run where one chain also believed ``back``'s ``Tail_2`` and ``Haunch_right``). Leaving those pairs out,
or weighing each detection by its score (the default where a dataset has scores), removed the split.

:func:`explain_regions` names such pairs, how far apart the regions put the positions, and R-hat within each
region, so that a split reads as a statement about the data rather than as "run longer".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

__all__ = ["RegionReport", "explain_regions", "ChainFindings", "chain_findings", "BELIEF_CHANGE"]

BELIEF_CHANGE = 0.5  # a pair's inlier probability differing by more than this between regions: believed or not
EVERY_CAMERA = "*"  # the camera of a pair in the shared observation model (one outlier rate per keypoint)


@dataclass(frozen=True)
class RegionReport:
    """Regions of chains (:func:`gimbal.diagnostics.chain_regions`) in terms of the GIMBAL model."""

    regions: list  # chain indices per region, highest mean log density first
    mean_lp: list | None
    sd_lp: float | None
    pairs: list  # dicts: camera, keypoint, inlier probability and noise (px) per region
    position_shift: dict  # keypoint -> largest distance between two regions' posterior means over frames
    position_shift_median: float | None  # median over positions of that distance
    within_rhat: list  # per region: the positions' max R-hat over its chains (None for a one-chain region)
    differences: list  # the generic engine's separating elements (variable, index, region means, separation)
    units: str = ""
    scores_used: bool = False  # whether the fitted model weighed detections by the detector's scores

    def to_json(self) -> dict:
        return {**asdict(self), "text": self.text()}

    def text(self) -> str:
        """What the split is, what it means, what to do."""
        names = [_chains(r) for r in self.regions]
        lp = ""
        if self.mean_lp is not None:
            gaps = [(self.mean_lp[0] - m) / self.sd_lp if self.sd_lp else float("nan") for m in self.mean_lp]
            lp = " (mean log density " + "; ".join(
                f"{m:,.0f}" + ("" if i == 0 else f", {g:.1f} within-chain sds lower")
                for i, (m, g) in enumerate(zip(self.mean_lp, gaps))) + ")"
        out = (f"the chains sampled {len(self.regions)} separate regions of the global variables: "
               + "; ".join(names) + lp + ". No chain crossed from one to another, so R-hat over all chains measures "
               "their disagreement: more draws will not lower it.")
        if self.pairs:
            said = []
            for p in self.pairs[:4]:
                per = ", ".join(f"{q:.2f} in {n} (noise {s:.1f} px)" if s is not None else f"{q:.2f} in {n}"
                                for q, s, n in zip(p["inlier_probability"], p["noise_px"], names))
                who = "every camera's" if p["camera"] == EVERY_CAMERA else f"camera {p['camera']}'s"
                said.append(f"{who} detections of {p['keypoint']}: inlier probability {per}")
            out += (" They disagree about which detections to believe: " + "; ".join(said)
                    + (f" (and {len(self.pairs) - 4} more pairs)" if len(self.pairs) > 4 else "") + ".")
        elif self.differences:
            d = self.differences[0]
            where = ", ".join(f"{k}={v}" for k, v in d["index"].items())
            out += (f" They differ most in {d['variable']}[{where}]: "
                    + ", ".join(f"{m:.3g}" for m in d["means"]) + f" ({d['separation']:.0f} within-chain sds apart).")
        if self.position_shift:
            worst = max(self.position_shift, key=self.position_shift.get)
            out += (f" The positions' posterior means differ between regions by up to "
                    f"{self.position_shift[worst]:.2f} {self.units} ({worst}; median over positions "
                    f"{self.position_shift_median:.2f} {self.units}).")
        within = [f"{r:.3f} ({n})" for r, n in zip(self.within_rhat, names) if r is not None]
        if within:
            out += " Within regions, the positions' max R-hat is " + ", ".join(within) + "."
        if self.pairs:
            out += (" A pair whose detections fit both as inliers with a large noise and as outliers is usually "
                    "systematically off: look at them (video, labels, that camera's reprojection error in the "
                    "calibration). Leave them out (gimbal fit --exclude CAMERA:KEYPOINT) or relabel them and "
                    "refit; if they are right, report both regions' positions, which differ by the distances above.")
            if not self.scores_used:
                out += (" If the detections carry the detector's scores, fit with them (the default where the dataset "
                        "has them, --confidence): weighed by its own score, each detection is believed or not on its "
                        "own rather than all frames of a pair at once.")
        else:
            out += (" Compare the regions' values above; re-run with another seed and another start (--start) to see "
                    "which regions recur.")
        return out


def _chains(region) -> str:
    return ("chain " if len(region) == 1 else "chains ") + ", ".join(str(c) for c in region)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def explain_regions(trace, dataset: xr.Dataset, *, regions=None) -> RegionReport | None:
    """The chains' regions of a GIMBAL fit, with the detections they disagree about; None when all agree.

    Parameters
    ----------
    trace : xarray.DataTree
        A fit's trace (posterior with ``x`` and the observation model's globals).
    dataset : xarray.Dataset
        The fitted dataset (for units and names).
    regions : gimbal.diagnostics.ChainRegions, optional
        Already computed; by default :func:`gimbal.diagnostics.chain_regions` of the trace's globals: every posterior
        variable without a ``frame`` dimension (per-frame latents are compared through the globals they move).
    """
    from arviz_stats import rhat

    from ..diagnostics import chain_regions

    post = trace["posterior"]
    if regions is None:
        names = [str(v) for v in post.data_vars if "frame" not in post[v].dims]
        regions = chain_regions(trace, names) if names else None
    found = regions
    if found is None or not found.split:
        return None
    groups = found.regions

    def region_mean(da):
        return np.stack([da.isel(chain=g).mean(("chain", "draw")).values for g in groups])

    pairs = []
    name = "logodds_inlier_ck" if "logodds_inlier_ck" in post else "logodds_inlier" if "logodds_inlier" in post else None
    if name is not None:
        prob = region_mean(_sigmoid(post[name]))  # (region, [camera,] keypoint)
        noise = region_mean(post["obs_sigma_ck"]) if "obs_sigma_ck" in post else None
        if prob.ndim == 2:  # one rate per keypoint: every camera
            prob = prob[:, None, :]
        change = prob.max(axis=0) - prob.min(axis=0)
        cams = list(post[name]["camera"].values) if "camera" in post[name].dims else [EVERY_CAMERA]
        kps = list(post[name]["keypoint"].values)
        for c, k in sorted(zip(*np.nonzero(change > BELIEF_CHANGE)), key=lambda ck: -change[ck]):
            pairs.append({"camera": str(cams[c]), "keypoint": str(kps[k]),
                          "inlier_probability": [float(v) for v in prob[:, c, k]],
                          "noise_px": [float(v) for v in noise[:, c, k]] if noise is not None and len(cams) > 1
                          else [None] * len(groups)})
    shift, median, within = {}, None, []
    if "x" in post:
        means = region_mean(post["x"])  # (region, T, K, 3)
        dist = np.zeros(means.shape[1:3])
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                dist = np.fmax(dist, np.linalg.norm(means[i] - means[j], axis=-1))
        shift = {str(k): float(np.nanmax(dist[:, i])) for i, k in enumerate(post["x"]["keypoint"].values)}
        median = float(np.nanmedian(dist))
        for g in groups:
            within.append(float(np.nanmax(rhat(post["x"].isel(chain=g)).values)) if len(g) > 1 else None)
    return RegionReport(regions=groups, mean_lp=found.mean_lp, sd_lp=found.sd_lp, pairs=pairs, position_shift=shift,
                        position_shift_median=median, within_rhat=within,
                        differences=[asdict(d) for d in found.differences],
                        units=str(dataset.attrs.get("units", "")), scores_used="confidence_slope" in post)


@dataclass(frozen=True)
class ChainFindings:
    """What a fit's chains say about themselves: separate regions of the globals, and chains stranded below the rest.

    ``regions`` is :meth:`RegionReport.to_json` (None when every chain sampled one region); ``stranded`` is
    :meth:`gimbal.diagnostics.StrandedChains.to_json` with its ``text`` and, where chains are stranded and at least two
    are not, the positions' R-hat over the others (``without_them``); None with one chain or no log density.
    """

    regions: dict | None
    stranded: dict | None

    def text(self) -> str | None:
        """The regions' explanation if the chains split, else the stranded chains' if any, else None."""
        if self.regions:
            return self.regions["text"]
        if self.stranded and self.stranded["chains"]:
            return self.stranded["text"]
        return None


def chain_findings(trace, dataset: xr.Dataset) -> ChainFindings:
    """:func:`explain_regions` and :func:`gimbal.diagnostics.stranded_chains` of one fit (a whole recording or one
    window of it), as JSON-ready dicts.

    Parameters
    ----------
    trace : xarray.DataTree
        The fit's trace.
    dataset : xarray.Dataset
        The fitted frames (for a window: the window's own slice of the recording).
    """
    from arviz_stats import rhat

    from ..diagnostics import stranded_chains

    found = explain_regions(trace, dataset)
    stranded = stranded_chains(trace)
    out = None
    if stranded is not None:
        out = {**stranded.to_json(), "text": stranded.text()}
        post = trace["posterior"]
        rest = [c for c in range(post.sizes["chain"]) if c not in stranded.chains]
        if stranded.chains and len(rest) >= 2 and "x" in post:
            r = rhat(post["x"].isel(chain=rest)).values
            out["without_them"] = {"chains": rest, "max_rhat_x": float(np.nanmax(r)),
                                   "positions_rhat_above_1.01": int((np.nanmax(r, axis=-1) > 1.01).sum())}
            out["text"] += (f" Without {'it' if len(stranded.chains) == 1 else 'them'}, the positions' max R-hat is "
                            f"{out['without_them']['max_rhat_x']:.3f} "
                            f"({out['without_them']['positions_rhat_above_1.01']} positions above 1.01).")
    return ChainFindings(regions=found.to_json() if found else None, stranded=out)
