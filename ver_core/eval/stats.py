"""Statistics of a closed-loop evaluation: success rate with a Wilson interval, lengths, latency."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["wilson_interval", "fisher_exact_greater", "describe", "success_summary"]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (z = 1.96: 95 %).

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0/n and n/n,
    the usual outcomes of a small robot evaluation. Returns (low, high).
    """
    if trials < 0 or successes < 0:
        raise ValueError(f"counts must be >= 0, got {successes}/{trials}")
    if successes > trials:
        raise ValueError(f"more successes than trials: {successes}/{trials}")
    if z <= 0:
        raise ValueError(f"z must be > 0, got {z}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher_exact_greater(s1: int, n1: int, s2: int, n2: int) -> float:
    """One-sided Fisher exact p-value that arm 1's success rate exceeds arm 2's.

    The probability, with both arms' total successes fixed, of arm 1 taking ``s1`` or more of them
    if the two rates were equal (hypergeometric tail): small when ``s1 / n1`` is convincingly
    above ``s2 / n2``. Exact at any count, which the usual robot evaluation (tens of episodes,
    rates near 0 or 1) needs."""
    for s, n in ((s1, n1), (s2, n2)):
        if n < 0 or s < 0 or s > n:
            raise ValueError(f"need 0 <= successes <= trials, got {s}/{n}")
    total = s1 + s2
    denom = math.comb(n1 + n2, total)
    tail = sum(math.comb(n1, x) * math.comb(n2, total - x) for x in range(s1, min(n1, total) + 1))
    return min(1.0, tail / denom)


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, mean, std, min, p50, max of a sample (empty sample -> n = 0 only)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    if not np.all(np.isfinite(v)):
        raise ValueError("sample contains non-finite values")
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "p50": float(np.median(v)),
        "max": float(v.max()),
    }


def success_summary(successes: Sequence[bool], z: float = 1.96) -> dict[str, float]:
    """Success count, rate and its Wilson interval (keys ``ci95_low``/``ci95_high`` at z=1.96)."""
    n = len(successes)
    k = int(sum(bool(s) for s in successes))
    lo, hi = wilson_interval(k, n, z)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci95_low": lo,
        "ci95_high": hi,
    }
