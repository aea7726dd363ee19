"""Data as shared inputs of the model graph (one definition for every model piece)."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.traversal import graph_inputs
from pytensor.tensor.random.type import RandomType

__all__ = ["data_input", "is_data"]


class _PackedInputs:
    """The arrays of fixed size of one model, held in one shared vector per dtype.

    nutpie wraps the compiled model in a function that fetches every shared input of the graph; numba compiles
    that wrapper afresh in every process (it cannot be cached), at about half a second per shared input. Packing
    the model's small fixed arrays (camera matrices, priors, fixed scales, indices) into one vector per dtype
    leaves it a handful of inputs, whatever the options (the seed's model: 4 instead of 19). Each array is a slice
    of its vector at a constant offset, reshaped to its static shape: the offsets follow from the configuration
    and sizes, as the static shapes already do, so one compiled function still serves every recording of the
    same configuration and sizes.
    """

    def __init__(self):
        self._vectors: dict[str, SharedVariable] = {}

    def add(self, value: np.ndarray, name: str):
        dtype = value.dtype.name
        if dtype not in self._vectors:
            self._vectors[dtype] = pytensor.shared(np.empty(0, dtype), name=f"data_{dtype}", shape=(None,))
        vector = self._vectors[dtype]
        held = vector.get_value()
        vector.set_value(np.concatenate([held, value.ravel()]))
        out = vector[held.size:held.size + value.size].reshape(value.shape)
        out.name = name
        return out


def _packed_inputs() -> _PackedInputs | None:
    """The packed inputs of the model being built (the innermost ``pm.Model`` context), or None outside one."""
    try:
        model = pm.modelcontext(None)
    except TypeError:
        return None
    if not hasattr(model, "_gimbal_packed_inputs"):
        model._gimbal_packed_inputs = _PackedInputs()
    return model._gimbal_packed_inputs


def data_input(value, name: str, dtype: str = "float64", per_frame: bool = False):
    """An array taken from the data or the initialization, as a shared input of the graph, not a constant.

    Constants are part of a compiled function's identity: PyTensor's on-disk numba cache would then miss for
    every new recording, truncation or initialization and compile the model again (tens of seconds for the
    logp, as much for its gradient and for the sampler's). As shared inputs, one compiled function serves
    every dataset of the same configuration and sizes; ``per_frame`` arrays (frame first) leave T unfixed, so
    that it serves every T as well, each as a shared variable of its own named ``name``. The other axes keep
    their static lengths (broadcasting needs them). Inside a ``pm.Model`` context, arrays that are not
    ``per_frame`` are slices of one shared vector per dtype (:class:`_PackedInputs`), named ``name``.
    """
    value = np.asarray(value, dtype=dtype)
    packed = None if per_frame else _packed_inputs()
    if packed is not None:
        return packed.add(value, name)
    shape = (None, *value.shape[1:]) if per_frame else value.shape
    return pytensor.shared(value, name=name, shape=shape)


def is_data(value) -> bool:
    """Whether ``value`` is fixed data: a number, an array, or a graph of constants and shared inputs only (a random
    variable's graph has a shared random generator among its inputs: not data)."""
    if not isinstance(value, pytensor.graph.basic.Variable):
        return True
    return all(isinstance(v, Constant) or (isinstance(v, SharedVariable) and not isinstance(v.type, RandomType))
               for v in graph_inputs([value]))
