"""The serving wing: everything a deployed FoodVision model runs, with ONNX Runtime, NumPy and Pillow.

    bundle       the deployable artifact's format (one self-describing ONNX file)
    image        `load_image`: every input a user may send, decoded safely
    predictor    `OnnxPredictor` / `load_predictor`: the predictor every mode shares
    gradio_app   what the Gradio demos share
    serve        the web service (FastAPI)
    batch_predict, stream   batch scoring and streaming
    monitor      after deployment: the prediction log, the reference, the drift monitor

Nothing here imports torch or the training wing (`going_modular.train`, `export`, ...): the two
meet only in the bundle that `python -m going_modular.export` writes.
"""
