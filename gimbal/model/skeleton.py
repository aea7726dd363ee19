"""Keypoint trees: names, parents, bones.

A skeleton is a rooted tree of ``K`` keypoints stored in *topological order*:
keypoint 0 is the root (``parents[0] == -1``) and every other keypoint's parent
comes before it (``0 <= parents[k] < k``).  That ordering is what lets the model
compose positions bone by bone and lets ``max_K`` truncation keep a valid tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Skeleton", "validate_parents", "in_step_frames"]


def validate_parents(parents) -> np.ndarray:
    """Check that ``parents`` describes a tree in topological order.

    Parameters
    ----------
    parents : sequence of int
        ``parents[k]`` is the index of keypoint ``k``'s parent; ``-1`` marks the root.

    Returns
    -------
    numpy.ndarray
        The parents as an ``int64`` array.

    Raises
    ------
    ValueError
        If the root is not first, a keypoint has no valid parent, or a parent
        does not precede its child (which also rules out cycles).
    """
    arr = np.asarray(parents)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"parents must be a non-empty 1-D sequence of ints, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"parents must be integers, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr[0] != -1:
        raise ValueError(
            f"parents[0] must be -1 (the root comes first), got {arr[0]}. "
            "Reorder the keypoints so the root is first and parents precede children."
        )
    roots = np.flatnonzero(arr == -1)
    if roots.size > 1:
        raise ValueError(
            f"parents is not a tree: keypoints {roots.tolist()} all have parent -1. "
            "A skeleton needs exactly one root; attach the others to it."
        )
    for k in range(1, arr.size):
        if not 0 <= arr[k] < k:
            raise ValueError(
                f"parents is not a tree in topological order: keypoint {k} has parent {arr[k]}, "
                f"which must be in [0, {k - 1}]. Reorder keypoints so every parent precedes its children."
            )
    return arr


@dataclass(frozen=True)
class Skeleton:
    """A rooted keypoint tree.

    Parameters
    ----------
    names : tuple of str
        Keypoint names, root first.
    parents : tuple of int
        Parent index per keypoint (``-1`` for the root), in topological order.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]

    def __post_init__(self):
        parents = validate_parents(self.parents)
        object.__setattr__(self, "parents", tuple(int(p) for p in parents))
        names = tuple(str(n) for n in self.names)
        if len(names) != len(parents):
            raise ValueError(f"{len(names)} keypoint names for {len(parents)} parents; give one name per keypoint.")
        if len(set(names)) != len(names):
            raise ValueError(f"keypoint names must be unique, got {list(names)}.")
        object.__setattr__(self, "names", names)

    @classmethod
    def from_parents(cls, parents, names=None) -> "Skeleton":
        """Build a skeleton, naming keypoints ``kp0, kp1, ...`` when no names are given."""
        parents = validate_parents(parents)
        if names is None:
            names = [f"kp{k}" for k in range(parents.size)]
        return cls(tuple(names), tuple(parents.tolist()))

    @property
    def n_keypoints(self) -> int:
        return len(self.parents)

    @property
    def bones(self) -> np.ndarray:
        """Child keypoint index of every bone (all keypoints but the root)."""
        return np.arange(1, self.n_keypoints)

    @property
    def bone_parents(self) -> np.ndarray:
        """Parent keypoint index of every bone, aligned with :attr:`bones`."""
        return np.asarray(self.parents[1:], dtype=np.int64)

    @property
    def bone_names(self) -> list[str]:
        return [f"{self.names[p]}->{self.names[c]}" for c, p in zip(self.bones, self.bone_parents)]

    def truncate(self, max_K: int) -> "Skeleton":
        """Keep the first ``max_K`` keypoints; a prefix of a topological order is still a tree."""
        if max_K < 1:
            raise ValueError(f"max_K must be >= 1, got {max_K}.")
        if max_K > self.n_keypoints:
            raise ValueError(f"max_K={max_K} is larger than the skeleton's {self.n_keypoints} keypoints.")
        return Skeleton(self.names[:max_K], self.parents[:max_K])

    def bone_vectors(self, positions: np.ndarray) -> np.ndarray:
        """Child minus parent position for every bone: ``(..., K, 3) -> (..., K-1, 3)``."""
        positions = np.asarray(positions)
        return positions[..., self.bones, :] - positions[..., self.bone_parents, :]


def in_step_frames(x, parents, relative):
    """Positions ``(..., K, 3)`` in each keypoint's step frame: less its parent's position where ``relative`` ``(K,)``
    is set (never the root), as they are elsewhere."""
    relative = np.asarray(relative, bool)
    parents = np.asarray(parents)
    if relative.shape != parents.shape or (relative & (parents < 0)).any():
        raise ValueError("relative must be one flag per keypoint, False at the root.")
    if not relative.any():
        return x
    return x - x[..., np.maximum(parents, 0), :] * relative.astype(float)[:, None]
