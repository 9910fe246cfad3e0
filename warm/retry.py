"""Backoff between attempts: exponential with full jitter, so retrying hosts do not move in step."""
from __future__ import annotations

import random

BASE = 0.25  # seconds before the first retry (on average half of it)
CAP = 30.0


def delay(attempt: int) -> float:
    """Seconds to wait before retry number `attempt + 1` (attempt counts from 0)."""
    return random.uniform(0, min(CAP, BASE * 2 ** attempt))
