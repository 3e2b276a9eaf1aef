"""cnnbench: plain vs residual CNNs on CIFAR, reproducibly."""

__version__ = "0.1.0"
