"""The GIMBAL model: geometry (skeleton, cameras), its PyMC pieces and kernels, initialization and sampling.

* :mod:`.skeleton`, :mod:`.cameras` - keypoint trees; projection, DLT and robust triangulation (numpy);
* :mod:`.distributions` - vMF normalizer, marginal bone density, HMM forward algorithms (PyTensor);
* :mod:`.kernels` - the same hot spots as fused numba kernels (PyTensor Ops with their Jacobians);
* :mod:`.whitening` - the coordinates the sampler moves the tracks in (an O(T) numba solve as a transform);
* :mod:`.build` - :func:`~gimbal.model.build.build_model`, composed from small named pieces;
* :mod:`.initialization` - robust starting points from the detections, and the start gate;
* :mod:`.fitting` - NUTS (nutpie or PyMC), traces on disk, 3D errors;
* :mod:`.windowed` - overlapping windows for long recordings (optionally fanned out with Dask).

Import from the sub-modules (``from gimbal.model.build import build_model``); this package imports nothing itself,
so the datasets can use the geometry without loading PyMC.
"""
