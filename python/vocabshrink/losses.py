"""Distillation losses: span pooling, hidden-state MSE/cosine, MLM, cross-vocabulary KL."""

from __future__ import annotations

from typing import Any, Union

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
    """Mean of `hidden` [B, L, H] over CSR segments of flat positions; returns [B, rows, H] (zeros for empty ones).

    Built on `embedding_bag(mode="mean")`, whose backward scatters each segment's gradient back to its rows.
    """
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


# --- per-position losses ------------------------------------------------------------------------------------------
#
# Every loss below takes `reduction="mean" | "sum"`. The training loop asks for sums and divides by a count that it
# sums over gradient-accumulation micro-batches and ranks first, so that one process and many processes with the same
# global batch compute the same token-weighted loss (a mean of per-rank means would weight short batches up).


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        return per_item.sum() / max(per_item.numel(), 1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _select(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Rows of x [..., H] where mask [...] is true, flattened to [N, H]."""
    if mask is None:
        return x.reshape(-1, x.shape[-1])
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:-1])}")
    return x[mask.bool()]


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """Squared error averaged over the hidden size, per position where `mask` is true; [..., H] inputs."""
    if student.shape != teacher.shape:
        raise ValueError(f"student states {tuple(student.shape)} and teacher states {tuple(teacher.shape)} differ; "
                         "project the student to the teacher's width first")
    s, t = _select(student.float(), mask), _select(teacher.float(), mask)
    return _reduce((s - t).pow(2).mean(dim=-1), reduction)


def hidden_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """1 - cosine similarity per position where `mask` is true; [..., H] inputs."""
    if student.shape != teacher.shape:
        raise ValueError(f"student states {tuple(student.shape)} and teacher states {tuple(teacher.shape)} differ; "
                         "project the student to the teacher's width first")
    s, t = _select(student.float(), mask), _select(teacher.float(), mask)
    return _reduce(1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8), reduction)


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    """Squared difference of the in-batch cosine-similarity matrices of sentence embeddings, over pairs i != j.

    `student` [B, H_s] and `teacher` [B, H_t] may differ in width: only each side's own similarities are
    compared, which is what STS and retrieval measure. `mask` [B] keeps the rows that hold a sentence.
    """
    if student.shape[0] != teacher.shape[0] or student.dim() != 2 or teacher.dim() != 2:
        raise ValueError(f"need [B, H] embeddings with the same B, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if mask is not None:
        student, teacher = student[mask.bool()], teacher[mask.bool()]
    s = F.normalize(student.float(), dim=-1, eps=1e-8)
    t = F.normalize(teacher.float(), dim=-1, eps=1e-8)
    diff = (s @ s.T - t @ t.T).pow(2)
    off_diagonal = ~torch.eye(diff.shape[0], dtype=torch.bool, device=diff.device)
    return _reduce(diff[off_diagonal], reduction)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of [..., V] logits against labels (-100 = not masked, ignored)."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=-100, reduction="sum")
    if reduction == "sum":
        return loss
    if reduction == "mean":
        return loss / (labels != -100).sum().clamp(min=1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def kl_with_temperature(student_logp: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                        reduction: str = "mean") -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || student) per row; `student_logp` already holds log-probabilities at T.

    The T^2 factor keeps the gradient scale independent of T (Hinton et al. 2015).
    """
    if student_logp.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logp.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    t_logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_row = (t_logp.exp() * (t_logp - student_logp.float())).sum(dim=-1)
    return _reduce(per_row * temperature**2, reduction)


# --- cross-vocabulary KL (Kolesnikova et al. 2022) ----------------------------------------------------------------


class ReduceMap(torch.nn.Module):
    """Maps student scores over V_S to teacher scores over V_T through the split table.

    Teacher token t splits into student pieces `ids[offsets[t]:offsets[t+1]]`.
    `sum_probs=False`: the score of t is the sum of the student's logits of its
    pieces (the reduce map as a V_S x V_T matrix, a piece counted as often as it
    occurs). `sum_probs=True`: the score of t is log of the summed student
    probabilities of its pieces (a logsumexp of log-probabilities). Either way
    the result is renormalised with a log-softmax over V_T.
    """

    def __init__(self, offsets: torch.Tensor | Any, ids: torch.Tensor | Any) -> None:
        super().__init__()
        offsets = torch.as_tensor(offsets, dtype=torch.int64)
        ids = torch.as_tensor(ids, dtype=torch.int64)
        if offsets.dim() != 1 or offsets.numel() < 2 or int(offsets[-1]) != ids.numel():
            raise ValueError("offsets must be [V_teacher + 1] with offsets[-1] == len(ids)")
        lengths = offsets[1:] - offsets[:-1]
        if bool((lengths <= 0).any()):
            bad = int(torch.nonzero(lengths <= 0)[0])
            raise ValueError(f"teacher id {bad} has an empty split; every teacher token needs at least one piece")
        self.teacher_vocab_size = offsets.numel() - 1
        self.register_buffer("piece_ids", ids, persistent=False)
        # teacher id of each piece: the segment each CSR entry belongs to
        self.register_buffer("piece_owner", torch.repeat_interleave(torch.arange(self.teacher_vocab_size), lengths),
                             persistent=False)

    def forward(self, student_logits: torch.Tensor, temperature: float = 1.0, sum_probs: bool = False) -> torch.Tensor:
        """[N, V_S] student logits -> [N, V_T] log-probabilities over the teacher's vocabulary."""
        z = student_logits.float() / temperature
        n = z.shape[0]
        if sum_probs:
            logp = F.log_softmax(z, dim=-1).index_select(1, self.piece_ids)  # [N, nnz]
            owner = self.piece_owner.expand(n, -1)
            # segment logsumexp: subtract each segment's max so that small probabilities do not underflow to 0
            seg_max = torch.full((n, self.teacher_vocab_size), float("-inf"), device=z.device)
            seg_max = seg_max.scatter_reduce(1, owner, logp, reduce="amax", include_self=True).detach()
            summed = torch.zeros_like(seg_max).scatter_add(1, owner, (logp - seg_max.gather(1, owner)).exp())
            scores = summed.log() + seg_max
        else:
            pieces = z.index_select(1, self.piece_ids)
            scores = torch.zeros(n, self.teacher_vocab_size, device=z.device, dtype=z.dtype)
            scores = scores.index_add(1, self.piece_owner, pieces)
        return F.log_softmax(scores, dim=-1)


def reduce_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduce_map: ReduceMap,
              temperature: float = 1.0, sum_probs: bool = False, reduction: str = "mean") -> torch.Tensor:
    """The paper's reduce KL: T^2 KL(teacher || student mapped to V_T), rows of [N, V_S] and [N, V_T]."""
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(f"{student_logits.shape[0]} student rows but {teacher_logits.shape[0]} teacher rows")
    if teacher_logits.shape[-1] != reduce_map.teacher_vocab_size:
        raise ValueError(f"teacher logits cover {teacher_logits.shape[-1]} tokens, the split table "
                         f"{reduce_map.teacher_vocab_size}: the table was made for another teacher tokenizer")
    mapped = reduce_map(student_logits, temperature, sum_probs)
    return kl_with_temperature(mapped, teacher_logits, temperature, reduction)


def shared_vocabulary(offsets: Any, ids: Any, student_unk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher ids, student ids) of the tokens both vocabularies share.

    A teacher token is shared when it splits into exactly one student piece
    (same surface, same word-start flag) that is not the student's unknown
    token; where several teacher tokens map to one piece, the first is kept so
    that the map is one to one.
    """
    offsets = torch.as_tensor(offsets, dtype=torch.int64)
    ids = torch.as_tensor(ids, dtype=torch.int64)
    single = (offsets[1:] - offsets[:-1]) == 1
    teacher = torch.nonzero(single).flatten()
    student = ids[offsets[teacher]]
    if student_unk is not None:
        keep = student != student_unk
        teacher, student = teacher[keep], student[keep]
    # first teacher id per student id: unique() sorts, so pick the minimum teacher id of each student id
    uniq, inverse = torch.unique(student, return_inverse=True)
    first = torch.full((uniq.numel(),), torch.iinfo(torch.int64).max).scatter_reduce(0, inverse, teacher, "amin")
    return first, uniq


def match_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, shared_teacher: torch.Tensor,
             shared_student: torch.Tensor, temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """The paper's match KL: both distributions restricted to the shared vocabulary, rows of [N, V_S] and [N, V_T].

    Only meaningful at positions that both tokenizers tokenized identically
    (the caller selects them).
    """
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(f"{student_logits.shape[0]} student rows but {teacher_logits.shape[0]} teacher rows")
    s = student_logits.float().index_select(1, shared_student.to(student_logits.device))
    t = teacher_logits.float().index_select(1, shared_teacher.to(teacher_logits.device))
    return kl_with_temperature(F.log_softmax(s / temperature, dim=-1), t, temperature, reduction)


class HiddenProjection(torch.nn.Module):
    """Learned linear maps from the student's hidden width to the teacher's, one per layer pair.

    Trained with the student; exported beside it (`projection.safetensors`) so
    that student embeddings can be mapped into the teacher's space.
    """

    def __init__(self, student_width: int, teacher_width: int, layer_map: list[tuple[int, int]]) -> None:
        super().__init__()
        self.student_width, self.teacher_width = student_width, teacher_width
        self.layer_map = [tuple(p) for p in layer_map]
        self.maps = torch.nn.ModuleDict({self.key(s, t): torch.nn.Linear(student_width, teacher_width)
                                         for s, t in self.layer_map})

    @staticmethod
    def key(student_layer: int, teacher_layer: int) -> str:
        return f"s{student_layer}_t{teacher_layer}"

    def forward(self, hidden: torch.Tensor, student_layer: int, teacher_layer: int) -> torch.Tensor:
        return self.maps[self.key(student_layer, teacher_layer)](hidden)
