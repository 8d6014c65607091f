"""Distillation losses: span pooling, hidden-state MSE/cosine, MLM, cross-vocabulary KL."""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

from .aligner import Alignment, TorchAlignment

AlignmentLike = Union[Alignment, TorchAlignment]


def _torch_alignment(alignment: AlignmentLike, device: torch.device) -> TorchAlignment:
    if isinstance(alignment, Alignment):
        return alignment.to_torch(device)
    if alignment.indptr.device != device:
        return alignment.to(device)
    return alignment


def span_mean(hidden: torch.Tensor, alignment: AlignmentLike) -> torch.Tensor:
    """Mean of student hidden states over each teacher position's span.

    hidden: [B, Ls, H] student states; returns [B, Lt, H], zeros where the
    teacher position was dropped (`teacher_keep` false). Differentiable; a
    segment reduction (`embedding_bag`), never a dense Lt x Ls matmul.
    """
    a = _torch_alignment(alignment, hidden.device)
    b, lt, ls = a.shape
    if hidden.dim() != 3 or hidden.shape[0] != b or hidden.shape[1] != ls:
        raise ValueError(f"hidden has shape {tuple(hidden.shape)}, the alignment expects ({b}, {ls}, H)")
    flat = hidden.reshape(b * ls, hidden.shape[2])
    pooled = F.embedding_bag(a.indices, flat, a.indptr, mode="mean", include_last_offset=True)
    return pooled.view(b, lt, hidden.shape[2])
