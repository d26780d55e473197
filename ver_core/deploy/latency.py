"""Per-stage latency bookkeeping (p50 / p99 / mean in milliseconds)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["LatencyStats"]


class LatencyStats:
    """Collects durations per named stage; ``summary()`` gives percentiles in ms.

    warmup: the first ``warmup`` samples of each stage are not kept (first inferences include
    one-time allocation and graph optimization).
    """

    def __init__(self, warmup: int = 0) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.warmup = warmup
        self._seen: dict[str, int] = defaultdict(int)
        self._samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, seconds: float) -> None:
        if not np.isfinite(seconds):
            raise ValueError(f"latency sample for {stage!r} is not finite: {seconds}")
        self._seen[stage] += 1
        if self._seen[stage] > self.warmup:
            self._samples[stage].append(float(seconds))

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def stages(self) -> list[str]:
        return list(self._samples)

    def count(self, stage: str) -> int:
        return len(self._samples.get(stage, ()))

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, values in self._samples.items():
            ms = np.asarray(values) * 1e3
            out[stage] = {
                "n": int(ms.size),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "mean_ms": float(ms.mean()),
                "max_ms": float(ms.max()),
            }
        return out
