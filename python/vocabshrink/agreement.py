"""Teacher agreement: how alike two encoders see a set of sentences, whatever their widths.

The metric, defined here once and reused by init-student, distill and evaluate:

1. embed the same held-out sentences with teacher and student, each with its
   own tokenizer, as the mean of the last layer's hidden states over the real
   (non-padding) tokens;
2. take the cosine similarity of every pair of sentences, separately for the
   teacher and for the student;
3. report the Spearman rank correlation between the two sets of similarities.

Only the rankings of similarities inside each model are compared, so the two
embedding spaces may differ in width, rotation and scale. 1.0 means the
student orders every pair as the teacher does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def mean_pool(hidden: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """Mean of `hidden` (B x L x H) over the positions where `mask` (B x L) is non-zero -> B x H."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * weights).sum(dim=1)
    # An all-padding row gives zeros rather than NaN.
    return total / weights.sum(dim=1).clamp(min=1.0)


def embed(
    model: Any,
    tokenizer: Any,
    sentences: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
    device: Any = None,
) -> np.ndarray:
    """Mean-pooled last-layer embeddings (N x H, float32) of `sentences`, in their order.

    `model` is a loaded transformers encoder (a `*Model` or a `*ForMaskedLM`:
    its base model runs); `tokenizer` a `tokenizers.Tokenizer` or a fast
    transformers tokenizer, used with its own special tokens, truncated to
    `max_length` tokens. Nothing is loaded from disk here. Sentences are
    batched by length; the model's train/eval mode is restored afterwards.
    """
    import torch

    from .tokenization import load_tokenizer, special_tokens

    if batch_size < 1 or max_length < 2:
        raise ConfigError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    tok = load_tokenizer(tokenizer)  # a private copy: truncation below must not leak to the caller
    tok.enable_truncation(max_length)
    roles = special_tokens(tok)
    pad_id = roles.get("pad", roles.get("unk", 0))
    base = getattr(model, "base_model", model)
    if device is None:
        device = next(model.parameters()).device
    n = len(sentences)
    encodings = tok.encode_batch(list(sentences)) if n else []
    order = sorted(range(n), key=lambda i: len(encodings[i].ids))
    out: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                width = max(1, max(len(encodings[i].ids) for i in rows))
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    seq = encodings[i].ids
                    ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    mask[r, : len(seq)] = 1
                ids, mask = ids.to(device), mask.to(device)
                hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
                pooled = mean_pool(hidden.float(), mask).cpu().numpy()
                if out is None:
                    out = np.empty((n, pooled.shape[1]), dtype=np.float32)
                out[rows] = pooled
    finally:
        model.train(was_training)
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return out


def pairwise_cosines(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair i < j of rows, flattened (N*(N-1)/2 values, float64)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (sentences x width), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)
    sims = x @ x.T
    i, j = np.triu_indices(x.shape[0], k=1)
    return sims[i, j]


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as scipy.stats.rankdata's default)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # Start of each run of equal values in sorted order.
    new_run = np.concatenate(([True], sorted_v[1:] != sorted_v[:-1]))
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.concatenate((run_start[1:], [v.size]))
    average = (run_start + run_end + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = average[run_id]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long vectors; nan when either is constant."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.size != b.size:
        raise ValueError(f"spearman needs equally long inputs, got {a.size} and {b.size}")
    if a.size < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0:
        return float("nan")
    return float((ra * rb).sum() / denom)


def teacher_agreement(teacher_embeddings: np.ndarray, student_embeddings: np.ndarray) -> float:
    """Spearman correlation between the teacher's and the student's pairwise sentence cosines."""
    t, s = np.asarray(teacher_embeddings), np.asarray(student_embeddings)
    if t.shape[0] != s.shape[0]:
        raise ValueError(f"teacher embeds {t.shape[0]} sentences, student {s.shape[0]}: they must be the same")
    if t.shape[0] < 3:
        raise ValueError(f"teacher agreement needs at least 3 sentences, got {t.shape[0]}")
    return spearman(pairwise_cosines(t), pairwise_cosines(s))


def agreement(
    teacher: Any,
    teacher_tokenizer: Any,
    student: Any,
    student_tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 128,
    device: Any = None,
    teacher_embeddings: np.ndarray | None = None,
) -> float:
    """`teacher_agreement` of two loaded models on `sentences` (pass `teacher_embeddings` to reuse them)."""
    if teacher_embeddings is None:
        teacher_embeddings = embed(teacher, teacher_tokenizer, sentences, batch_size, max_length, device)
    student_embeddings = embed(student, student_tokenizer, sentences, batch_size, max_length, device)
    return teacher_agreement(teacher_embeddings, student_embeddings)
