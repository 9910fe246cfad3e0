"""Shared test helpers (no tests here): real processes on loopback (`procs`), the simulated OMERO and
edges with the launcher that stops them (`launch`), the warm CLI (`warm`) and a test-driven clock (`clock`).
Tests import from `tests.helpers` (the warm tests also from `tests.helpers.warm`); fixtures stay in
tests/conftest.py."""
from tests.helpers.clock import FakeTime
from tests.helpers.launch import EdgeProc, Launcher, Sim, decode, plate, sim_fixtures, start_sim
from tests.helpers.procs import ROOT, Proc, RedisCluster, RedisServer, StartError, find_binary, free_port, script, wait_until

__all__ = ["EdgeProc", "FakeTime", "Launcher", "Proc", "ROOT", "RedisCluster", "RedisServer", "Sim", "StartError", "decode",
           "find_binary", "free_port", "plate", "script", "sim_fixtures", "start_sim", "wait_until"]
