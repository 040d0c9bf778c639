"""The web service as tests use it: benchmarks.support.serve_in_subprocess (shared with the benchmarks)."""
from benchmarks.support import serve_in_subprocess  # noqa: F401
