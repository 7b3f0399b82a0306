"""Timing helpers shared by the benchmarks: bounded loops, best of N, printed as a table."""

from __future__ import annotations

import time
from collections.abc import Callable

NS = 1_000_000_000


def per_op_us(
    fn: Callable[[], object], *, seconds: float = 0.7, repeats: int = 3, max_ops: int = 2_000_000
) -> float:
    """Microseconds per call: the best of ``repeats`` loops of about ``seconds`` each.

    The loop size is calibrated first (doubling until a loop takes 50 ms), then capped by
    ``max_ops``, so every loop is bounded by count and by time.
    """
    n = 1
    while True:
        elapsed = _loop(fn, n)
        if elapsed >= 0.05 * NS or n >= max_ops:
            break
        n *= 2
    n = max(1, min(max_ops, int(n * seconds * NS / max(elapsed, 1))))
    return min(_loop(fn, n) for _ in range(repeats)) / n / 1000


def _loop(fn: Callable[[], object], n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return time.perf_counter_ns() - start


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
