"""Hand-run benchmarks (never part of the test suite). See ``bench/README.md``."""
