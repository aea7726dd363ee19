"""Data as shared inputs of the model graph (one definition for every model piece)."""

from __future__ import annotations

import numpy as np
import pytensor

__all__ = ["data_input"]


def data_input(value, name: str, dtype: str = "float64", per_frame: bool = False):
    """An array taken from the data or the initialization, as a shared input of the graph, not a constant.

    Constants are part of a compiled function's identity: PyTensor's on-disk numba cache would then miss for
    every new recording, truncation or initialization and compile the model again (tens of seconds for the
    logp, as much for its gradient and for the sampler's). As shared inputs, one compiled function serves
    every dataset of the same configuration and sizes; ``per_frame`` arrays (frame first) leave T unfixed, so
    that it serves every T as well. The other axes keep their static lengths (broadcasting needs them).
    """
    value = np.asarray(value, dtype=dtype)
    shape = (None, *value.shape[1:]) if per_frame else value.shape
    return pytensor.shared(value, name=name, shape=shape)
