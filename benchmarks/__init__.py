"""Measurements of cnnbench run from the top of the checkout; the GPU check is a package of its own,
run as ``python -m benchmarks.gpu_check``."""
