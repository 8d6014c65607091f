"""Aligner and Alignment: the Python face of the C++ core."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from tokenizers import Tokenizer

from . import _core
from .errors import TokenizerError
from .tokenization import (
    ROLE_FALLBACK,
    UNUSED_SLOT,
    TokenizerLike,
    TokenScheme,
    detect_scheme,
    load_tokenizer,
    read_config,
    special_ids,
    special_tokens,
    vocab_list,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


FERTILITY_BUCKETS = ("1", "2", "3", "4", "5", "6+")


def fertility_histogram(pieces: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Share of teacher tokens split into 1, 2, ..., 6+ student pieces.

    `pieces`: student pieces per teacher token (or per vocabulary entry, with `weights` its counts).
    """
    pieces = np.asarray(pieces, dtype=np.int64)
    w = np.ones(len(pieces)) if weights is None else np.asarray(weights, dtype=np.float64)
    hist = np.bincount(np.minimum(pieces, 6), weights=w, minlength=7)[1:7] / max(float(w.sum()), 1.0)
    return {k: float(v) for k, v in zip(FERTILITY_BUCKETS, hist)}


class SplitTable(NamedTuple):
    """Teacher id i splits into student ids `ids[offsets[i]:offsets[i+1]]`."""

    offsets: np.ndarray  # int64 [V_teacher + 1]
    ids: np.ndarray  # int32 [nnz]


@dataclass
class Alignment:
    """Span data for a batch of teacher sequences (numpy; see DESIGN.md, "Span data")."""

    student_ids: np.ndarray  # int32 [B, Ls]
    student_mask: np.ndarray  # bool [B, Ls]
    segment_ids: np.ndarray  # int32 [B, Ls], teacher position of each student position, -1 for padding
    span_start: np.ndarray  # int32 [B, Lt]
    span_end: np.ndarray  # int32 [B, Lt]
    teacher_keep: np.ndarray  # bool [B, Lt], whole span fits in max_length
    indptr: np.ndarray  # int32 [B*Lt + 1], CSR rows = flat teacher positions
    indices: np.ndarray  # int32 [nnz], CSR columns = flat student positions b*Ls + s
    values: np.ndarray  # float32 [nnz], 1/len (mean) or 1 (sum)
    reduce: str = "mean"

    @property
    def shape(self) -> tuple[int, int, int]:
        """(batch, teacher length, student length)."""
        b, lt = self.span_start.shape
        return b, lt, self.student_ids.shape[1]

    def _values_for(self, reduce: str) -> np.ndarray:
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        if reduce == self.reduce:
            return self.values
        if reduce == "sum":
            return np.ones_like(self.values)
        lengths = np.diff(self.indptr)
        return np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)

    def span_matrix(self, reduce: str = "mean", device: Any = None) -> "torch.Tensor":
        """The (B*Lt) x (B*Ls) span matrix as a `torch.sparse_csr_tensor`."""
        import torch

        import warnings

        b, lt, ls = self.shape
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            # The core builds valid CSR by construction; torch's invariant check would cost a pass.
            return torch.sparse_csr_tensor(
                torch.from_numpy(np.ascontiguousarray(self.indptr)),
                torch.from_numpy(np.ascontiguousarray(self.indices)),
                torch.from_numpy(np.ascontiguousarray(self._values_for(reduce))),
                size=(b * lt, b * ls),
                device=device,
                check_invariants=False,
            )

    def to_torch(self, device: Any = None) -> "TorchAlignment":
        """Tensors on `device`; ids become int64 (what embeddings take), index arrays stay int32."""
        import torch

        def t(a: np.ndarray, dtype: Any = None) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(a))
            return x.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else x

        return TorchAlignment(
            student_ids=t(self.student_ids, torch.int64),
            student_mask=t(self.student_mask),
            segment_ids=t(self.segment_ids),
            span_start=t(self.span_start),
            span_end=t(self.span_end),
            teacher_keep=t(self.teacher_keep),
            indptr=t(self.indptr),
            indices=t(self.indices),
            values=t(self.values),
            reduce=self.reduce,
        )

    def copy(self) -> "Alignment":
        """A copy that owns its arrays (alignments made with `reuse=True` are overwritten by the next call)."""
        return Alignment(**{f.name: (getattr(self, f.name).copy() if f.name != "reduce" else self.reduce)
                            for f in fields(self)})


@dataclass
class TorchAlignment:
    """`Alignment` as torch tensors (what `span_mean` and the losses take)."""

    student_ids: "torch.Tensor"
    student_mask: "torch.Tensor"
    segment_ids: "torch.Tensor"
    span_start: "torch.Tensor"
    span_end: "torch.Tensor"
    teacher_keep: "torch.Tensor"
    indptr: "torch.Tensor"
    indices: "torch.Tensor"
    values: "torch.Tensor"
    reduce: str = "mean"

    @property
    def shape(self) -> tuple[int, int, int]:
        b, lt = self.span_start.shape
        return b, lt, self.student_ids.shape[1]

    def to(self, device: Any) -> "TorchAlignment":
        return TorchAlignment(**{f.name: (getattr(self, f.name).to(device) if f.name != "reduce" else self.reduce)
                                 for f in fields(self)})


@dataclass
class ChunkAlignment:
    """Offset alignment of a batch: the common chunks of the teacher's and the student's own tokenizations.

    Each side is a CSR segment list over flat positions (`b*L + i`): chunk c of
    row b covers `indices[indptr[b*C + c]: indptr[b*C + c + 1]]`. `chunk_mask`
    is true where both sides of the chunk have tokens.
    """

    teacher_indptr: Any  # int32 [B*C + 1]
    teacher_indices: Any  # int32, flat teacher positions
    student_indptr: Any  # int32 [B*C + 1]
    student_indices: Any  # int32, flat student positions
    chunk_mask: Any  # bool [B, C]

    @classmethod
    def from_chunk_ends(
        cls, teacher_ends: list[np.ndarray], student_ends: list[np.ndarray], teacher_len: int, student_len: int
    ) -> "ChunkAlignment":
        """Build from per-example chunk ends (exclusive token indices, as `_core.offset_chunks` returns)."""
        b = len(teacher_ends)
        c = max((len(e) for e in teacher_ends), default=0)
        parts = []
        for ends_list, length in ((teacher_ends, teacher_len), (student_ends, student_len)):
            counts = np.zeros((b, c), dtype=np.int64)
            starts = np.zeros((b, c), dtype=np.int64)
            for r, ends in enumerate(ends_list):
                ends = np.minimum(np.asarray(ends, dtype=np.int64), length)  # truncated rows lose their tail
                begin = np.concatenate(([0], ends[:-1]))
                counts[r, : len(ends)] = np.maximum(ends - begin, 0)
                starts[r, : len(ends)] = begin + r * length
            indptr = np.zeros(b * c + 1, dtype=np.int64)
            np.cumsum(counts.ravel(), out=indptr[1:])
            total = int(indptr[-1])
            # positions: start of the chunk plus the rank inside the chunk
            rank = np.arange(total, dtype=np.int64) - np.repeat(indptr[:-1], counts.ravel())
            indices = np.repeat(starts.ravel(), counts.ravel()) + rank
            parts.append((indptr.astype(np.int32), indices.astype(np.int32), counts))
        (ti, tx, tc), (si, sx, sc) = parts
        return cls(ti, tx, si, sx, (tc > 0) & (sc > 0))

    def to_torch(self, device: Any = None) -> "ChunkAlignment":
        import torch

        return ChunkAlignment(*(torch.as_tensor(x, device=device) for x in
                                (self.teacher_indptr, self.teacher_indices, self.student_indptr,
                                 self.student_indices, self.chunk_mask)))


class AlignmentBuffers:
    """Reusable output arrays for `Aligner.align(out=...)`: grown when too small, never shrunk."""

    _DTYPES = (np.int32, np.bool_, np.int32, np.int32, np.int32, np.bool_, np.int32, np.int32, np.float32)

    def __init__(self) -> None:
        self.arrays = tuple(np.empty(0, dtype=d) for d in self._DTYPES)
        self.allocations = 0  # how many times the buffers had to grow

    def ensure(self, b: int, lt: int, ls: int, nnz: int) -> None:
        need = (b * ls, b * ls, b * ls, b * lt, b * lt, b * lt, b * lt + 1, nnz, nnz)
        if all(a.shape[0] >= n for a, n in zip(self.arrays, need)):
            return
        # Grow with headroom so that a slowly growing Ls does not reallocate every call.
        self.arrays = tuple(
            a if a.shape[0] >= n else np.empty(int(n * 1.25) + 16, dtype=d)
            for a, n, d in zip(self.arrays, need, self._DTYPES)
        )
        self.allocations += 1

    def expand(self, core: Any, ids: np.ndarray, lengths: Any, attention_mask: Any, max_length: int,
               reduce: str) -> Alignment:
        """Run the core's expansion into these buffers (it returns larger ones when these are too small)."""
        ls, nnz, arrays = core.align_into(ids, lengths, attention_mask, max_length, reduce == "mean", self.arrays)
        if arrays is not self.arrays:
            self.arrays = arrays
            self.allocations += 1
        return self.view(ids.shape[0], ids.shape[1], ls, nnz, reduce)

    def view(self, b: int, lt: int, ls: int, nnz: int, reduce: str) -> Alignment:
        sid, smask, seg, ss, se, keep, indptr, ind, val = self.arrays
        return Alignment(
            student_ids=sid[: b * ls].reshape(b, ls),
            student_mask=smask[: b * ls].reshape(b, ls),
            segment_ids=seg[: b * ls].reshape(b, ls),
            span_start=ss[: b * lt].reshape(b, lt),
            span_end=se[: b * lt].reshape(b, lt),
            teacher_keep=keep[: b * lt].reshape(b, lt),
            indptr=indptr[: b * lt + 1],
            indices=ind[:nnz],
            values=val[:nnz],
            reduce=reduce,
        )


def _role_map(teacher_roles: dict[str, int], student_roles: dict[str, int]) -> dict[int, int]:
    """Teacher special id -> student special id of the same role."""
    out: dict[int, int] = {}
    for role, tid in teacher_roles.items():
        sid = student_roles.get(role, student_roles.get(ROLE_FALLBACK.get(role, ""), None))
        if sid is not None:
            out.setdefault(tid, sid)
    return out


class Aligner:
    """Splits teacher tokens into student tokens and expands teacher batches into span data.

    Build it with `Aligner.from_tokenizers(teacher, student)`; `align()` calls
    the C++ core and releases the GIL while it runs.
    """

    def __init__(
        self,
        teacher: Tokenizer,
        student: Tokenizer,
        *,
        teacher_config: dict | None = None,
        student_config: dict | None = None,
    ) -> None:
        self.teacher_tokenizer = teacher
        self.student_tokenizer = student
        self.teacher_scheme: TokenScheme = detect_scheme(teacher)
        self.student_scheme: TokenScheme = detect_scheme(student)
        self.teacher_vocab = vocab_list(teacher)
        self.student_vocab = vocab_list(student)
        self.teacher_roles = special_tokens(teacher, teacher_config)
        self.student_roles = special_tokens(student, student_config)
        student_unk = self.student_roles.get("unk", -1)
        st = self.student_scheme
        self.splitter = _core.Splitter(
            self.student_vocab, st.name, st.continuation_prefix, st.metaspace_replacement, student_unk,
            special_ids(student),
        )
        forced = np.full(len(self.teacher_vocab), -1, dtype=np.int32)
        role_map = _role_map(self.teacher_roles, self.student_roles)
        unmapped_specials = []
        # Without a student UNK (byte-level students), unmapped specials keep -1 and are split by surface.
        for tid in special_ids(teacher):
            if tid in role_map:
                forced[tid] = role_map[tid]
            else:
                unmapped_specials.append(self.teacher_vocab[tid])
                forced[tid] = student_unk
        for tid, token in enumerate(self.teacher_vocab):
            if UNUSED_SLOT.match(token):
                forced[tid] = student_unk
        if unmapped_specials:
            log.warning("teacher special tokens with no student counterpart map to UNK: %s", unmapped_specials)
        tt = self.teacher_scheme
        try:
            offsets, ids = _core.build_split_table(
                self.splitter, self.teacher_vocab, tt.name, tt.continuation_prefix, tt.metaspace_replacement, forced
            )
        except ValueError as exc:
            raise TokenizerError(f"cannot split the teacher vocabulary into the student's: {exc}") from exc
        self.table = SplitTable(offsets, ids)
        pad = self.student_roles.get("pad", self.student_roles.get("unk", 0))
        self.pad_id = int(pad)
        self._core = _core.SpanAligner(offsets, ids, self.pad_id, len(self.student_vocab))
        self._buffers = threading.local()

    @classmethod
    def from_tokenizers(cls, teacher: TokenizerLike, student: TokenizerLike) -> "Aligner":
        """Teacher and student as directories, tokenizer.json paths, `tokenizers.Tokenizer`s or fast HF tokenizers."""
        return cls(
            load_tokenizer(teacher),
            load_tokenizer(student),
            teacher_config=read_config(teacher),
            student_config=read_config(student),
        )

    @property
    def teacher_vocab_size(self) -> int:
        return len(self.teacher_vocab)

    @property
    def student_vocab_size(self) -> int:
        return len(self.student_vocab)

    @property
    def buffer_allocations(self) -> int:
        """How often the reused buffers had to grow (0 per call in steady state)."""
        return self._reused_buffers().allocations

    def split(self, token: str | int) -> list[int]:
        """Student ids of a teacher token, given as its id or its vocabulary string."""
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            tid = int(token)
            if not 0 <= tid < self.teacher_vocab_size:
                raise ValueError(f"teacher id {tid} is outside [0, {self.teacher_vocab_size})")
            off = self.table.offsets
            return self.table.ids[off[tid]: off[tid + 1]].tolist()
        if not isinstance(token, str):
            raise TypeError(f"token must be a str or an int, got {type(token).__name__}")
        tid = self.teacher_tokenizer.token_to_id(token)
        if tid is not None:
            return self.split(tid)
        tt = self.teacher_scheme
        surface, word_start, valid = _core.parse_token(token, tt.name, tt.continuation_prefix,
                                                       tt.metaspace_replacement)
        pieces = self.splitter.split(surface, word_start) if valid else None
        if pieces is None:
            unk = self.student_roles.get("unk")
            if unk is None:
                raise ValueError(f"{token!r} cannot be split and the student has no unknown token")
            return [unk]
        return pieces

    def align(
        self,
        teacher_ids: Any,
        attention_mask: Any = None,
        *,
        lengths: Any = None,
        max_length: int | None = None,
        reduce: str = "mean",
        out: AlignmentBuffers | None = None,
        reuse: bool = False,
    ) -> Alignment:
        """Expand teacher ids (B x Lt, int32 or int64) into student ids and span data.

        Row lengths come from `lengths`, else from a right-padded
        `attention_mask`, else every row is full. `max_length` truncates the
        student side at teacher-token boundaries. With `reuse=True` (or
        `out=`), the result views buffers that the next call overwrites, and
        a steady-state call allocates no arrays.
        """
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        ids = _as_numpy(teacher_ids)
        if lengths is not None:
            lengths = _as_numpy(lengths)
        if attention_mask is not None:
            attention_mask = _as_numpy(attention_mask)
        buffers = out if out is not None else (self._reused_buffers() if reuse else AlignmentBuffers())
        ml = -1 if max_length is None else int(max_length)
        if max_length is not None and ml < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        return buffers.expand(self._core, ids, lengths, attention_mask, ml, reduce)

    def _reused_buffers(self) -> AlignmentBuffers:
        """This thread's buffers for `reuse=True`: threads sharing an aligner never overwrite each other."""
        buffers = getattr(self._buffers, "value", None)
        if buffers is None:
            buffers = self._buffers.value = AlignmentBuffers()
        return buffers


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)
