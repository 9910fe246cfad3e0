"""The `bench` command. Each subcommand lives in its own module with a `register(subparsers)` that
adds its parser and sets `run`; adding one is a new module plus one line in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
from typing import Callable

from bench import commands as bench_commands
from bench.sim import cli as sim_cli

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    sim_cli.register,
    bench_commands.register,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description="omero-edge benchmarks and the simulated OMERO backend")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)
