"""gimbal: the GIMBAL 3D pose model in PyMC, and a divergence diagnostic report book.

Sub-modules: :mod:`gimbal.datasets` (data), :mod:`gimbal.model.build` (the model),
:mod:`gimbal.model.initialization` (initialisation), :mod:`gimbal.model.fitting` (sampling),
:mod:`gimbal.diagnostics` (the generic divergence engine, any PyMC model).
"""

__version__ = "0.3.0"
