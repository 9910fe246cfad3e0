"""Benchmark scenarios: each module turns a client's behaviour into timed loads (see bench.measure)."""
