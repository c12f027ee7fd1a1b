"""`python -m train` is `train-model`; also the console script's entry point.

The import of `train.cli` (and with it TensorFlow) waits until `main` runs: `--workers N` spawns worker
processes that re-import the entry point's module, and they must stay free of TensorFlow.
"""


def main() -> None:
    """Run `train-model`."""
    from train.cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
