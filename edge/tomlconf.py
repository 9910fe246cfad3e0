"""The sample TOML config (`edge config --toml`, deploy/edge.toml): every setting, its doc and its default.

Written from `Settings` itself, like the README's table, so the sample can never name a setting
that does not exist or show a default that is not the one in force (tests/test_deploy_files.py
keeps deploy/edge.toml equal to this output). Every setting is commented out: a copied file pins
nothing, and a line uncommented is exactly the default, ready to change.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import fields
from typing import Any

from .settings import Settings

HEADER = """\
# omero-edge settings: every one with its meaning and its default (commented out).
# Written by `edge config --toml`; copy it to /etc/omero-edge/edge.toml, uncomment and change
# what your site needs, then check the site with `edge doctor` before starting the edge.
# Later sources win: defaults < this file (--config or EDGE_CONFIG) < EDGE_* variables < options.
# Keep tokens (purge_token, warm_token) out of this file: put EDGE_PURGE_TOKEN and EDGE_WARM_TOKEN
# in a root-only environment file (deploy/systemd/ reads /etc/omero-edge/secrets.env).
"""


def toml_value(value: Any) -> str:
    """A setting's value as TOML: JSON's strings, numbers and arrays of strings are valid TOML too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def sample_toml(settings: Settings) -> str:
    """The commented sample: per setting its doc (wrapped), then `# name = value`."""
    blocks = [HEADER]
    for f in fields(settings):
        doc = textwrap.wrap(f.metadata["doc"], width=98, break_on_hyphens=False)
        blocks.append("".join(f"# {line}\n" for line in doc) + f"# {f.name} = {toml_value(getattr(settings, f.name))}\n")
    return "\n".join(blocks)
