"""Benchmark harness: our Ray Serve stack against a one-process FastAPI + uvicorn baseline.

`python -m benchmarks --help` (or `make bench`); see benchmarks/README.md.
"""
