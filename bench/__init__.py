"""Benchmarks: each prints a ratio against a limit measured in the same run (`make bench`)."""
