"""Latency-workload profiler: latency-vs-tokens curves, step detection, per-block prediction.

Modules: `timing` (AOT-compile + robust timing protocol), `steps` (step / flat-stretch
detection), `predict` (per-block additive predictor), `records` (JSON schema, CSV, load/merge),
`plot` (PNG), `runner` (sweeps; `run_profile`). Importing this package imports no matplotlib.
"""
