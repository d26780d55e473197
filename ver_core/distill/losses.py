"""Distillation losses as pure functions (the model returns router probabilities; losses live here).

Shapes: B batch, T teacher tokens, C teacher channels, N student tokens, E experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

COSINE_WEIGHT = 0.9
SMOOTH_L1_WEIGHT = 0.1
MI_WEIGHT = 5e-4


def feature_loss(
    pred: Tensor,
    target: Tensor,
    cosine_weight: float = COSINE_WEIGHT,
    l1_weight: float = SMOOTH_L1_WEIGHT,
) -> Tensor:
    """Theia's loss for one teacher: pred, target (B, T, C) (target already z-normalized).

    cosine_weight * (1 - cos) with one cosine per image over the flattened feature map, plus
    l1_weight * smooth-L1 averaged over all elements.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    target = target.to(pred.dtype)
    cos = F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1)  # (B,)
    return cosine_weight * (1.0 - cos).mean() + l1_weight * F.smooth_l1_loss(pred, target)


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy (nats) of distributions along ``dim``."""
    return -(p * p.clamp_min(1e-12).log()).sum(dim)


def mutual_information_loss(probs_per_teacher: Sequence[Tensor]) -> Tensor:
    """-(H(E) - H(E | teacher)) for one MoE layer, teachers equally likely.

    Args:
        probs_per_teacher: one (B, N, E) router softmax per teacher (its own router's output).
    Returns:
        scalar; minimizing it makes each teacher's router specialize (low H(E|t)) while the
        library stays used as a whole (high H(E)).
    """
    if not probs_per_teacher:
        raise ValueError("mutual_information_loss needs at least one teacher")
    p_e_given_t = torch.stack([p.float().mean(dim=(0, 1)) for p in probs_per_teacher])  # (T, E)
    h_e = entropy(p_e_given_t.mean(0))  # H(E): the marginal over teachers
    h_e_given_t = entropy(p_e_given_t).mean()  # H(E | teacher)
    return -(h_e - h_e_given_t)


def distillation_objective(
    preds: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    layer_probs: Sequence[Sequence[Tensor]],
    mi_weight: float = MI_WEIGHT,
    cosine_weight: float = COSINE_WEIGHT,
    l1_weight: float = SMOOTH_L1_WEIGHT,
) -> dict[str, Tensor]:
    """Total loss = mean over teachers of the feature loss + mi_weight * sum over layers of L_MI.

    preds / targets: teacher key -> (B, T, C). layer_probs[l][t]: (B, N, E) of teacher t at MoE
    layer l. Returns a dict with ``loss``, ``distill``, ``mi`` and ``teacher/<key>`` entries.
    """
    per_teacher = {k: feature_loss(preds[k], targets[k], cosine_weight, l1_weight) for k in preds}
    distill = torch.stack(list(per_teacher.values())).mean()
    if len(preds) > 1 and layer_probs:
        mi = torch.stack([mutual_information_loss(lp) for lp in layer_probs]).sum()
    else:
        mi = distill.new_zeros(())  # one teacher: I(teacher; expert) = 0
    out = {"loss": distill + mi_weight * mi, "distill": distill, "mi": mi}
    out.update({f"teacher/{k}": v for k, v in per_teacher.items()})
    return out
