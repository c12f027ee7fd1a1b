"""`python -m train` is `train-model` (see `train.entry_points`)."""

from train.entry_points import train_model

if __name__ == "__main__":
    train_model()
