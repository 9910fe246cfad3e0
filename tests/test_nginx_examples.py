"""The example configs in nginx/ are what `edge nginx-conf` renders today: each command listed in
nginx/README.md runs again and must write its file byte for byte, so the examples never drift
from the templates or the route table (`make nginx-examples` re-renders them)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from edge.cli import main
from tests.helpers import ROOT

EXAMPLES = ROOT / "nginx"
COMMANDS = [shlex.split(line) for line in (EXAMPLES / "README.md").read_text().splitlines()
            if line.startswith("edge nginx-conf ")]


def test_every_example_has_its_command() -> None:
    assert all(argv[-2] == "-o" for argv in COMMANDS), COMMANDS
    assert sorted(argv[-1] for argv in COMMANDS) == sorted(f"nginx/{p.name}" for p in EXAMPLES.glob("*.conf"))


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: Path(argv[-1]).name)
def test_example_is_what_its_command_renders(argv: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.conf"
    assert main([*argv[1:-1], str(out)]) == 0
    assert out.read_text() == (ROOT / argv[-1]).read_text(), f"{argv[-1]} is stale: run `make nginx-examples`"
