"""Benchmarks: the device against the broker round-trip floor and the AWS IoT Device SDK v2.

`python -m bench.run` (or `make bench`) runs them all; see bench/README.md and docs/benchmarks.md.
"""
