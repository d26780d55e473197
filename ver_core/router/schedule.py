"""Curriculum Top-K Annealing (CTA): how many experts each token uses at a training step."""

from __future__ import annotations

import math


def annealed_top_k(step: int, total: int, num_experts: int, k_min: int) -> int:
    """K(s) = max(K_min, floor(L + 1 - (L + 1 - K_min) * s / S)), with K = L at s = 0.

    With L = 6 experts and K_min = 2 over S steps, K goes 6 -> 5 -> 4 -> 3 -> 2, each value held
    for S / 5 steps; after S steps K stays at K_min. ``total`` <= 0 disables annealing (K_min).
    """
    if not 1 <= k_min <= num_experts:
        raise ValueError(f"k_min must be in [1, num_experts={num_experts}], got {k_min}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total <= 0:
        return k_min
    if step == 0:
        return num_experts
    stages = num_experts + 1 - k_min
    k = math.floor(num_experts + 1 - stages * step / total)
    return max(k_min, min(num_experts, k))
