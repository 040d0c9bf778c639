"""Benchmarks: `python -m benchmarks.<name> --help`; each prints a table."""
