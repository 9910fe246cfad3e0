"""`warm follow`: re-warm what the edge purges, paced like any warm run (issue 15.3).

A purge (an OMERO.web write through the edge, `edge watch`, an operator) leaves the next visitor a
miss. `warm follow` polls the edge's `GET /_edge/purges?after=SEQ` and re-warms the purged objects
with the ordinary commands, so the backend sees the same paced requests (`--jobs`, `--rate`) as any
warm run: images get their default thumbnail (and with `--imgdata` their imgData and iviewer
image_data), plates, datasets, screens and projects their metadata (grids, listings, panels). A purge
of everything is not re-warmed here (that is `warm all`). Its position is kept in `--state`, so a
restart goes on where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

import httpx

from edge.protocol import WARM_HEADER

SCOPED_KINDS = {"plate": "plate", "dataset": "dataset", "screen": "screen", "project": "project"}


class FollowError(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    c = sub.add_parser("follow", help="Re-warm what the edge purges, as it purges it.",
                       description="Poll the edge's purge list (GET /_edge/purges) and re-warm the purged images "
                                   "(default thumbnail; --imgdata adds imgData) and containers (their metadata), "
                                   "paced by --jobs and --rate. Runs until interrupted, or once with --once.")
    common(c)
    c.add_argument("--from", dest="start", default="now", metavar="SEQ|now",
                   help="purge number to start after (default now: only purges made from now on)")
    c.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between polls (default 5)")
    c.add_argument("--once", action="store_true", help="one poll, re-warm what it lists, exit")
    c.add_argument("--state", metavar="FILE",
                   help="where the last re-warmed purge number is kept (default: beside the journal)")


def _state_path(args: argparse.Namespace) -> str:
    if args.state:
        return args.state
    base = os.path.dirname(args.journal) if args.journal else os.path.expanduser("~/.cache/omero-edge")
    return os.path.join(base or ".", "follow.json")


def _load(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(json.load(fh)["after"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(path: str, after: int) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump({"after": after}, fh)
    os.replace(path + ".tmp", path)


def poll(edge: str, token: str, after: int) -> tuple[int, list[dict], bool]:
    """(the edge's newest purge number, the purges after `after`, whether more are waiting)."""
    try:
        resp = httpx.get(f"{edge}/_edge/purges", params={"after": after}, headers={WARM_HEADER: token}, timeout=30)
    except httpx.HTTPError as exc:
        raise FollowError(f"{edge}/_edge/purges: {exc}") from None
    if resp.status_code != 200:
        raise FollowError(f"{edge}/_edge/purges answered {resp.status_code}: {resp.text.strip()[:200]}")
    doc = resp.json()
    return int(doc["seq"]), list(doc["purges"]), bool(doc["more"])


def commands(purges: list[dict], passed: list[str], ids_file: str) -> list[list[str]]:
    """The warm command lines that re-warm `purges` (images through an ids file written here)."""
    images = sorted({int(p["tag"].split(":", 1)[1]) for p in purges if p["tag"].startswith("image:")})
    out = []
    if images:
        with open(ids_file, "w") as fh:
            fh.write("".join(f"{i}\n" for i in images))
        out.append(["images", "--ids", ids_file, *passed])
    for kind in SCOPED_KINDS:
        ids = sorted({p["tag"].split(":", 1)[1] for p in purges if p["tag"].startswith(kind + ":")})
        if ids:
            out.append([kind, *ids, "--only", "metadata", *passed])
    return out


def follow(args: argparse.Namespace, passed: list[str], warm: Callable[[list[str]], int]) -> int:
    """Poll and re-warm until interrupted (or once); `warm` runs one warm command line."""
    state = _state_path(args)
    after = _load(state)
    if after is None:
        after = poll(args.edge, args.token, sys.maxsize)[0] if args.start == "now" else int(args.start)
    worst = 0
    with tempfile.TemporaryDirectory(prefix="warm-follow-") as tmp:
        while True:
            newest, purges, more = poll(args.edge, args.token, after)
            if purges:
                everything = any(p["tag"] == "*" for p in purges)
                if everything:
                    print("warm follow: everything was purged; re-warming everything is `warm all`", file=sys.stderr)
                print(f"warm follow: {len(purges)} purges after {after} (newest {newest})", file=sys.stderr)
                for argv in commands(purges, passed, os.path.join(tmp, "ids.txt")):
                    worst = max(worst, warm(argv))
                after = max(p["seq"] for p in purges)
                _save(state, after)
            if args.once and not more:
                return worst
            if not more:
                time.sleep(args.interval)
