"""DATE arguments (`--since`, `--refresh-before`) and the dates OMERO reports, as Unix seconds."""
from __future__ import annotations

import re
import time
from datetime import datetime

_RELATIVE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadDate(ValueError):
    pass


def parse_date(text: str, now: float | None = None) -> float:
    """ISO 8601 (`2024-05-01`, `2024-05-01T12:00`, with or without zone; naive means local time),
    Unix seconds (`1714521600`), or an age (`90m`, `12h`, `7d`, `2w` ago)."""
    value = text.strip()
    m = _RELATIVE.match(value)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise BadDate(f"{text!r} is not a date: use 2024-05-01, 2024-05-01T12:00Z, Unix seconds or an age "
                      f"like 7d / 12h") from None


def omero_time(value: object) -> float | None:
    """An API v0 AcquisitionDate (milliseconds since the epoch, or ISO text) in seconds; None if unknown."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value / 1000.0
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None
