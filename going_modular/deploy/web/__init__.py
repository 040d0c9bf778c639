"""The web service (FastAPI + uvicorn): schema (the contract), settings, guards (limits below the app),
batching (micro-batching, admission control), app (the FastAPI app), __main__ (the CLI)."""
