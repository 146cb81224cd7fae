"""Benchmarks: scripts that print measured figures as JSON (`make bench`), never assertions."""
