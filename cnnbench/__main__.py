"""`python -m cnnbench ...` (and `torchrun ... -m cnnbench train ...`)."""

from cnnbench.cli import main

main()
