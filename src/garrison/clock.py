"""Time is passed in, never read inside domain code: ``Clock`` is any ``() -> float`` (UNIX s)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

system_clock: Clock = time.time
