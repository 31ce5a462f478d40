"""The largest values the command line and the engine accept: beyond them a number is a typing
slip, and would hang or crash a run instead of training. No PyTorch here, so that the command
line can check them before it loads anything."""

MAX_EPOCHS = 100_000  # beyond any run that ends
MAX_BATCH = 50_000  # the training set: a larger batch holds no more images
MAX_LR = 1000.0  # far above any recipe's (1.5 at most); 1e39 is not even a float32
MAX_BUDGET = 10_080.0  # minutes: a week
