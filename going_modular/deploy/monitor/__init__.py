"""After deployment: what the served model sees and says, and whether that drifts.

    log         PredictionLog (one JSON line per prediction, written off the serving path),
                prediction_record (the one record every mode writes), read_log, log_from_env
    stats       source_info + image_stats (cheap image statistics, never the pixels),
                predict_batch_with_stats
    reference   compute_reference: the test split's statistics, recorded at export
                (`python -m going_modular.deploy.monitor.reference` for a bundle exported without)
    drift       `python -m going_modular.deploy.monitor --log PATH`: the checks, exit 1 on drift

Serving processes import only `log` (standard library) and `stats` (NumPy, Pillow).
"""
