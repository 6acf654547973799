"""The comparison runner `bench/compare` and its helpers (see docs/BENCHMARKS.md)."""
