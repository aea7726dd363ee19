"""Skeleton files: a small YAML, the DANNCE skeleton ``.mat``, anipose's ``constraints``, a SLEAP ``.slp``.

GIMBAL needs a rooted tree in topological order (:class:`gimbal.model.skeleton.Skeleton`).
Files give either names with parents, or an edge list (which may contain cycles,
as DANNCE's does: ears and snout form a triangle). An edge list becomes a tree by
breadth-first search from a chosen root (default: the graph's centre, the keypoint
with the fewest hops to the farthest one); edges that would close a cycle are dropped
and named in a warning.

YAML forms::

    keypoints: [Trunk, Head, Nose]       # root first
    parents: [null, Trunk, Head]         # names or indices; null/-1 for the root

    edges: [[Trunk, Head], [Head, Nose]]
    root: Trunk                          # optional
"""

from __future__ import annotations

import tomllib
import warnings
from collections import deque
from pathlib import Path

import numpy as np

from ..model.skeleton import Skeleton
from ._files import reader_for

__all__ = ["SkeletonFileError", "load_skeleton", "tree_from_edges", "tree_from_parents"]


class SkeletonFileError(ValueError):
    """A skeleton file is missing, unreadable or does not describe a connected tree."""


def tree_from_edges(names, edges, root: str | None = None, source: str = "skeleton") -> Skeleton:
    """A rooted tree (breadth-first from ``root``) over ``names`` from undirected ``edges``.

    Parameters
    ----------
    names : sequence of str
        Every keypoint of the skeleton.
    edges : sequence of (str, str)
    root : str, optional
        Default: the centre of the graph (ties broken by file order).
    """
    names = [str(n) for n in names]
    unknown = sorted({str(n) for e in edges for n in e} - set(names))
    if unknown:
        raise SkeletonFileError(f"{source}: edges name keypoints {unknown} that are not in its keypoint list {names}.")
    adj = {n: [] for n in names}
    for a, b in edges:
        a, b = str(a), str(b)
        if a == b:
            raise SkeletonFileError(f"{source}: edge ({a}, {a}) joins a keypoint to itself.")
        adj[a].append(b)
        adj[b].append(a)

    def bfs(start):
        depth, parent, order = {start: 0}, {start: None}, [start]
        queue = deque([start])
        while queue:
            n = queue.popleft()
            for m in adj[n]:
                if m not in depth:
                    depth[m], parent[m] = depth[n] + 1, n
                    order.append(m)
                    queue.append(m)
        return depth, parent, order

    if root is None:
        ecc = {n: max(bfs(n)[0].values()) for n in names}
        root = min(names, key=lambda n: ecc[n])  # min keeps the first of ties (file order)
    elif str(root) not in adj:
        raise SkeletonFileError(f"{source}: root {root!r} is not one of its keypoints {names}.")
    root = str(root)
    _, parent, order = bfs(root)
    unreached = [n for n in names if n not in parent]
    if unreached:
        raise SkeletonFileError(
            f"{source}: keypoints {unreached} are not connected to the root {root!r}; add an edge from each to the "
            "skeleton (GIMBAL needs one connected tree)."
        )
    tree = {frozenset((n, p)) for n, p in parent.items() if p is not None}
    dropped = [(str(a), str(b)) for a, b in edges if frozenset((str(a), str(b))) not in tree]
    if dropped:
        warnings.warn(f"{source}: edges {dropped} close cycles and were left out of the tree rooted at {root!r}.",
                      stacklevel=2)
    index = {n: i for i, n in enumerate(order)}
    parents = [-1 if parent[n] is None else index[parent[n]] for n in order]
    return Skeleton(tuple(order), tuple(parents))


def tree_from_parents(names, parents, source: str = "skeleton") -> Skeleton:
    """A tree from names and parents (names or indices; ``None``/``-1`` for the root), reordered topologically."""
    names = [str(n) for n in names]
    if len(parents) != len(names):
        raise SkeletonFileError(f"{source}: {len(names)} keypoints but {len(parents)} parents.")
    edges, roots = [], []
    for n, p in zip(names, parents):
        if p is None or (isinstance(p, (int, np.integer)) and p < 0):
            roots.append(n)
            continue
        pname = names[int(p)] if isinstance(p, (int, np.integer)) else str(p)
        if pname not in names:
            raise SkeletonFileError(f"{source}: parent {pname!r} of {n!r} is not a keypoint.")
        edges.append((pname, n))
    if len(roots) != 1:
        raise SkeletonFileError(f"{source}: exactly one keypoint needs parent null (the root); found {roots}.")
    if len(edges) != len(names) - 1:
        raise SkeletonFileError(f"{source}: the parents do not form a tree.")
    return tree_from_edges(names, edges, root=roots[0], source=source)


def _yaml(path: Path, root) -> Skeleton:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SkeletonFileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SkeletonFileError(f"{path}: expected a mapping with 'keypoints' and 'parents', or 'edges'.")
    if "edges" in data:
        edges = [tuple(e) for e in data["edges"]]
        names = data.get("keypoints") or list(dict.fromkeys(n for e in edges for n in e))
        return tree_from_edges(names, edges, root=root or data.get("root"), source=str(path))
    if "keypoints" in data and "parents" in data:
        parents = data["parents"]
        if isinstance(parents, dict):
            parents = [parents.get(n) for n in data["keypoints"]]
        skel = tree_from_parents(data["keypoints"], parents, source=str(path))
        if root and root != skel.names[0]:
            edges = [(skel.names[p], n) for n, p in zip(skel.names, skel.parents) if p >= 0]
            skel = tree_from_edges(skel.names, edges, root=root, source=str(path))
        return skel
    raise SkeletonFileError(f"{path}: expected 'keypoints' with 'parents', or 'edges' (and optionally 'root').")


def _dannce_mat(path: Path, root) -> Skeleton:
    from scipy.io import loadmat

    mat = loadmat(path, simplify_cells=True)
    if "joint_names" not in mat or "joints_idx" not in mat:
        raise SkeletonFileError(f"{path}: a DANNCE skeleton has 'joint_names' and 'joints_idx'; found {sorted(mat)}.")
    names = [str(n) for n in np.atleast_1d(mat["joint_names"])]
    idx = np.asarray(mat["joints_idx"], int).reshape(-1, 2) - 1  # MATLAB indices are 1-based
    return tree_from_edges(names, [(names[a], names[b]) for a, b in idx], root=root, source=str(path))


def _anipose_config(path: Path, root) -> Skeleton:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    tri = data.get("triangulation", {})
    edges = [tuple(e) for e in tri.get("constraints", [])]
    if not edges:
        raise SkeletonFileError(f"{path}: no [triangulation] constraints to build a skeleton from.")
    names = list(dict.fromkeys(n for e in edges for n in e))
    return tree_from_edges(names, edges, root=root, source=str(path))


def _slp(path: Path, root) -> Skeleton:
    from .detections import load_slp

    skel = load_slp(path).skeletons[0]
    names = list(skel.node_names)
    return tree_from_edges(names, [(names[a], names[b]) for a, b in skel.edge_inds], root=root, source=str(path))


READERS = {".yaml": _yaml, ".yml": _yaml, ".mat": _dannce_mat, ".toml": _anipose_config, ".slp": _slp}


def load_skeleton(path, root: str | None = None) -> Skeleton:
    """Read a skeleton file (YAML, DANNCE ``.mat``, anipose ``config.toml`` or SLEAP ``.slp``) as a rooted tree.

    Parameters
    ----------
    path : path-like
    root : str, optional
        The root keypoint; default: the file's root (YAML with parents) or the graph's centre.
    """
    path, reader = reader_for(path, READERS, SkeletonFileError, "skeleton",
                              "use a .yaml (keypoints + parents, or edges), a DANNCE skeleton .mat, an anipose "
                              "config.toml with constraints, or a SLEAP .slp")
    return reader(path, root)
