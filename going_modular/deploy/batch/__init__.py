"""Batch scoring: job (the resumable job both engines share), local and ray_engine (the engines),
__main__ (the CLI)."""
