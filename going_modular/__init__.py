"""FoodVision's reusable code: data, models, training, predictions, utilities.

Each module is importable (`from going_modular import engine`) and `train` runs as a script:
`python -m going_modular.train --help`.
"""
