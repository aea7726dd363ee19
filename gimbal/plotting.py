"""Figures of a dataset and of a posterior against ground truth (matplotlib; saved to files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from .model.cameras import triangulate_robust
from .datasets import skeleton_of
from .diagnostics.plots import save_figure  # its import selects a headless backend outside Jupyter

__all__ = ["plot_skeleton_3d", "plot_detections", "plot_position_errors", "video_frame"]


def plot_skeleton_3d(dataset: xr.Dataset, path, frame: int = 0) -> Path:
    """The skeleton at one frame in 3D (ground truth if known, else robust triangulation)."""
    skel = skeleton_of(dataset)
    if "positions_true" in dataset:
        x, source = dataset["positions_true"].values[frame], "ground truth"
    else:
        obs = np.moveaxis(dataset["observations"].values[frame], 0, 1)
        x, source = triangulate_robust(obs, dataset["camera_matrix"].values), "robust triangulation"
    fig = plt.figure(figsize=(5.5, 5))
    ax = fig.add_subplot(projection="3d")
    for c, p in zip(skel.bones, skel.bone_parents):
        ax.plot(*np.stack([x[p], x[c]]).T, color="tab:blue", lw=2)
    ax.scatter(*x.T, color="tab:red", s=18)
    for k, name in enumerate(skel.names):
        ax.text(*x[k], f" {name}", fontsize=7)
    u = dataset.attrs.get("units", "")
    center, half = x.mean(axis=0), 0.55 * np.ptp(x, axis=0).max()
    ax.set(xlim=(center[0] - half, center[0] + half), ylim=(center[1] - half, center[1] + half),
           zlim=(center[2] - half, center[2] + half))  # equal scale on all axes: bones keep their true proportions
    ax.set_box_aspect((1, 1, 1))
    ax.set(xlabel=f"x ({u})", ylabel=f"y ({u})", zlabel=f"z ({u})", title=f"Skeleton at frame {frame} ({source})")
    return save_figure(fig, path)


def video_frame(dataset: xr.Dataset, camera: str, frame: int) -> np.ndarray | None:
    """The image of ``frame`` from the camera's video recorded at import (``attrs['videos']``), or None."""
    import json

    videos = json.loads(dataset.attrs.get("videos", "{}") or "{}")
    path = videos.get(str(camera))
    if not path or not Path(path).is_file():
        return None
    import sleap_io

    video = sleap_io.load_video(path)
    try:
        return np.asarray(video[int(frame)])
    except Exception:  # a frame beyond the video's end, or a codec the reader lacks
        return None
    finally:
        video.close()


def plot_detections(dataset: xr.Dataset, path, frame: int = 0) -> Path:
    """One frame's 2D detections in every camera; over the camera's video frame when the dataset names a video.

    Detections are drawn in raw pixels (``observations_raw``, as the detector wrote them) when the
    dataset has them, so they sit on the video image; outliers (when known) and missing points are marked.
    """
    C = dataset.sizes["camera"]
    cols = min(C, 3)
    rows = int(np.ceil(C / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    raw = "observations_raw" in dataset
    obs = dataset["observations_raw" if raw else "observations"].values[frame]  # (C, K, 2)
    out = dataset["is_outlier"].values[frame] if "is_outlier" in dataset else np.zeros(obs.shape[:2], bool)
    size = dataset["image_size"].values
    names = [str(k) for k in dataset["keypoint"].values]
    frame_label = dataset["frame"].values[frame]
    on_video = 0
    for c, ax in enumerate(axes.ravel()):
        if c >= C:
            ax.axis("off")
            continue
        w, h = size[c]
        image = video_frame(dataset, dataset["camera"].values[c], frame_label)
        if image is not None:
            ax.imshow(image, cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            on_video += 1
        ax.add_patch(plt.Rectangle((0, 0), w, h, fill=False, color="black"))
        seen = np.isfinite(obs[c]).all(-1)
        inl = seen & ~out[c]
        ax.scatter(obs[c, inl, 0], obs[c, inl, 1], s=14, color="tab:cyan" if image is not None else "tab:blue",
                   edgecolors="black", linewidths=0.3, label="detection")
        if "is_outlier" in dataset:
            ax.scatter(obs[c, seen & out[c], 0], obs[c, seen & out[c], 1], s=30, marker="x", color="tab:red",
                       label="outlier (true)")
        missing = [names[k] for k in np.flatnonzero(~seen)]
        ax.set(xlim=(-0.02 * w, 1.02 * w), ylim=(1.02 * h, -0.02 * h), title=f"{dataset['camera'].values[c]}: {int(seen.sum())} seen, {len(missing)} missing",
               xlabel="u (px)", ylabel="v (px)")
        ax.set_aspect("equal")
        if missing:
            ax.text(0.01, 0.02, "missing: " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""), transform=ax.transAxes, fontsize=7, color="tab:gray")
    axes.ravel()[0].legend(fontsize=7, loc="upper right")
    where = f"over {on_video} camera video frame(s)" if on_video else "over each camera's image frame"
    fig.suptitle(f"2D detections ({'raw pixels' if raw else 'pixels'}) at frame {frame_label} {where}")
    return save_figure(fig, path)


def plot_position_errors(dataset: xr.Dataset, posterior_mean: np.ndarray | None, path, reference: str = "positions_true") -> Path:
    """3D error over time and per keypoint: robust triangulation vs posterior mean."""
    truth = dataset[reference].values
    T = truth.shape[0]
    tri = triangulate_robust(np.moveaxis(dataset["observations"].values, 1, 2), dataset["camera_matrix"].values)
    tri_err = np.linalg.norm(tri - truth, axis=-1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    frames = np.arange(T)
    axes[0].plot(frames, np.nanmedian(tri_err, axis=1), label="robust triangulation", color="tab:gray")
    names = [str(k) for k in dataset["keypoint"].values]
    xs = np.arange(len(names))
    axes[1].bar(xs - 0.2, np.nanmean(tri_err, axis=0), width=0.4, label="robust triangulation", color="tab:gray")
    if posterior_mean is not None:
        post_err = np.linalg.norm(posterior_mean - truth[: posterior_mean.shape[0]], axis=-1)
        axes[0].plot(frames[: post_err.shape[0]], np.median(post_err, axis=1), label="posterior mean", color="tab:blue")
        axes[1].bar(xs + 0.2, post_err.mean(axis=0), width=0.4, label="posterior mean", color="tab:blue")
    u = dataset.attrs.get("units", "")
    axes[0].set(title="Median 3D error per frame", xlabel="frame", ylabel=f"error ({u})")
    axes[1].set(title="Mean 3D error per keypoint", ylabel=f"error ({u})")
    axes[1].set_xticks(xs, names, rotation=60, fontsize=7)
    for ax in axes:
        ax.legend(fontsize=7)
    return save_figure(fig, path)
