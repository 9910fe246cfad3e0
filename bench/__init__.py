"""Benchmarks for omero-edge: the simulated OMERO backend and browser-like load scenarios."""
