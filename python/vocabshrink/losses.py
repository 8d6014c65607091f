"""Distillation losses: span pooling, hidden-state MSE/cosine, MLM, cross-vocabulary KL."""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

from .aligner import Alignment, ChunkAlignment, TorchAlignment

AlignmentLike = Union[Alignment, TorchAlignment]


def _torch_alignment(alignment: AlignmentLike, device: torch.device) -> TorchAlignment:
    if isinstance(alignment, Alignment):
        return alignment.to_torch(device)
    if alignment.indptr.device != device:
        return alignment.to(device)
    return alignment


def segment_mean(hidden: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, rows: int) -> torch.Tensor:
    """Mean of `hidden` [B, L, H] over CSR segments of flat positions; returns [B, rows, H] (zeros for empty ones)."""
    b, _, h = hidden.shape
    pooled = F.embedding_bag(indices, hidden.reshape(-1, h), indptr, mode="mean", include_last_offset=True)
    return pooled.view(b, rows, h)


def chunk_mean(hidden: torch.Tensor, chunks: ChunkAlignment, side: str) -> torch.Tensor:
    """Mean of teacher or student states per common chunk: [B, C, H]; see `chunks.chunk_mask`."""
    if side not in ("teacher", "student"):
        raise ValueError(f"side must be 'teacher' or 'student', got {side!r}")
    indptr = getattr(chunks, f"{side}_indptr")
    indices = getattr(chunks, f"{side}_indices")
    return segment_mean(hidden, indptr.to(hidden.device), indices.to(hidden.device), chunks.chunk_mask.shape[1])


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
    return segment_mean(hidden, a.indptr, a.indices, lt)
