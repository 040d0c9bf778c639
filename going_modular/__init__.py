"""FoodVision's reusable code: data, models, training, predictions, utilities.

Each module is importable (`from going_modular import engine`) and `train` runs as a script:
`python -m going_modular.train --help`.

The serving wing (`going_modular.deploy`) never imports the training wing; the training wing plugs
into it here instead: .pth/.pt checkpoints are served by `going_modular.eager` (imported, with
torch, only when a checkpoint is loaded). Any import of `going_modular.deploy...` runs this file
first, so `--model X.pth` works on every serving CLI.
"""
from going_modular.deploy.predictor import register_loader


def _load_eager(path, **kwargs):
    from going_modular.eager import load_eager

    return load_eager(path, **kwargs)


register_loader((".pth", ".pt"), _load_eager)
