"""span_mean and chunk_mean against dense references, in values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vocabshrink import span_mean
from vocabshrink._core import SpanAligner, offset_chunks
from vocabshrink.aligner import Alignment, AlignmentBuffers, ChunkAlignment
from vocabshrink.losses import chunk_mean


def random_alignment(seed: int, b: int = 4, lt: int = 9, max_length: int | None = 20) -> Alignment:
    rng = np.random.default_rng(seed)
    v = 25
    lens = rng.integers(1, 4, size=v)
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    ids = rng.integers(0, 30, size=int(offsets[-1])).astype(np.int32)
    core = SpanAligner(offsets, ids, 0, 30)
    teacher = rng.integers(0, v, size=(b, lt)).astype(np.int64)
    lengths = rng.integers(0, lt + 1, size=b).astype(np.int64)
    buf = AlignmentBuffers()
    ml = -1 if max_length is None else max_length
    return buf.expand(core, teacher, lengths, None, ml, "mean").copy()


def dense_span_mean(hidden: torch.Tensor, al: Alignment) -> torch.Tensor:
    b, lt, ls = al.shape
    out = torch.zeros(b, lt, hidden.shape[2], dtype=hidden.dtype)
    rows = []
    for r in range(b):
        m = torch.zeros(lt, ls, dtype=hidden.dtype)
        for t in range(lt):
            s, e = int(al.span_start[r, t]), int(al.span_end[r, t])
            if al.teacher_keep[r, t] and e > s:
                m[t, s:e] = 1.0 / (e - s)
        rows.append(m)
    out = torch.bmm(torch.stack(rows), hidden)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_span_mean_equals_dense_in_values_and_gradients(seed):
    al = random_alignment(seed)
    b, lt, ls = al.shape
    torch.manual_seed(seed)
    h1 = torch.randn(b, ls, 5, dtype=torch.float64, requires_grad=True)
    h2 = h1.detach().clone().requires_grad_(True)
    got = span_mean(h1, al)
    want = dense_span_mean(h2, al)
    torch.testing.assert_close(got, want)
    w = torch.randn_like(got)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad)


def test_span_mean_equals_sparse_matrix_product():
    al = random_alignment(11)
    b, lt, ls = al.shape
    h = torch.randn(b, ls, 3)
    via_matrix = (al.span_matrix("mean") @ h.reshape(b * ls, 3)).reshape(b, lt, 3)
    torch.testing.assert_close(span_mean(h, al), via_matrix)
    torch.testing.assert_close(span_mean(h, al.to_torch()), via_matrix)


def test_span_mean_rejects_mismatched_hidden():
    al = random_alignment(3)
    b, lt, ls = al.shape
    with pytest.raises(ValueError, match="alignment expects"):
        span_mean(torch.zeros(b, ls + 1, 4), al)
    with pytest.raises(ValueError, match="alignment expects"):
        span_mean(torch.zeros(b * ls, 4), al)


def test_chunk_mean_pools_both_sides_per_chunk():
    # teacher: [CLS] unbeliev able [SEP] ; student: [CLS] un believ able [SEP] (ends over "unbelievable")
    t_end, t_sp = np.array([0, 8, 12, 0]), np.array([1, 0, 0, 1], dtype=bool)
    s_end, s_sp = np.array([0, 2, 8, 12, 0]), np.array([1, 0, 0, 0, 1], dtype=bool)
    ta, sa = offset_chunks(t_end, t_sp, s_end, s_sp)
    chunks = ChunkAlignment.from_chunk_ends([ta, ta[:2]], [sa, sa[:2]], teacher_len=4, student_len=5).to_torch()
    assert chunks.chunk_mask.tolist() == [[True, True, True, True], [True, True, False, False]]
    h_s = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    pooled = chunk_mean(h_s, chunks, "student")
    torch.testing.assert_close(pooled[0, 1], h_s[0, 1:3].mean(0))  # un + believ
    torch.testing.assert_close(pooled[0, 2], h_s[0, 3])
    torch.testing.assert_close(pooled[1, 2], torch.zeros(2))  # no such chunk in row 1
    h_t = torch.randn(2, 4, 2)
    pooled_t = chunk_mean(h_t, chunks, "teacher")
    torch.testing.assert_close(pooled_t[0, 1], h_t[0, 1])
    with pytest.raises(ValueError, match="side must be"):
        chunk_mean(h_t, chunks, "both")
