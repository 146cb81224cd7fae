"""Runs the whole stack as local processes: `make up`, and the test harness."""
