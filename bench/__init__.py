"""Benchmarks: what `inforeg-bench` runs, kept out of the library packages."""
