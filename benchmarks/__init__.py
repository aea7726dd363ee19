"""Speed, memory and convergence benchmarks of the GIMBAL model (``python -m benchmarks --help``)."""
