"""Simulated scans for tests and benchmarks."""
