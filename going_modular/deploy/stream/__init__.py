"""Streaming: classify frames as they arrive (mjpeg: the MJPEG splitter; runtime: source, queue,
model loop; __main__: the CLI)."""
