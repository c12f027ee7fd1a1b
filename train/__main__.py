"""`python -m train` is `train-model`."""

from train.cli import main

main()
