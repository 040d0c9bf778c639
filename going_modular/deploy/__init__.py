"""The serving wing: everything a deployed FoodVision model runs, with ONNX Runtime, NumPy and Pillow.

The core, which every mode imports:
    bundle       the deployable artifact's format (one self-describing ONNX file)
    image        `load_image`: every input a user may send, decoded safely
    predictor    the `Predictor` protocol, `OnnxPredictor`, `load_predictor` (one loader, every mode)
    errors       `UserError`, the base of every error a user can act on
    files        `write_atomic`, `sha256sum`
    scoring      many images where any may be unreadable (batch and the event stream share it)
    cli          one command-line convention (`cli.run` maps UserError to one line, exit status 2)
One package per mode, each importing only the core:
    web/         the web service (FastAPI): `python -m going_modular.deploy.web` (alias `.serve`)
    batch/       batch scoring, local or on Ray: `python -m going_modular.deploy.batch` (alias `.batch_predict`)
    stream/      streaming: `python -m going_modular.deploy.stream`
    monitor/     after deployment: the prediction log, the reference, the drift monitor
and gradio_app, what the Gradio demos share.

Nothing here imports torch or the training wing (`going_modular.train`, `export`, `eager`, ...): the
two meet in the bundle that `python -m going_modular.export` writes, and the training wing plugs its
eager reference in through `predictor.register_loader` (see going_modular/__init__.py).
"""
