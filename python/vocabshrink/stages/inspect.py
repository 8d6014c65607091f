"""inspect: what a shard folder holds, and an audit of how well the two tokenizations align.

Named `audit` so that it does not shadow the standard library's `inspect`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import ShardDataset
from ..errors import ShardError
from ..shards import STUDENT_TOKENIZER, TEACHER_TOKENIZER, read_manifest
from ..tokenization import fingerprint, load_tokenizer, vocab_list



@dataclass
class AuditReport:
    """Counts, fingerprints, settings and the alignment audit of one or several shard folders."""

    folders: list[str]
    parts: list[str]
    settings: dict
    teacher_fingerprint: str
    student_fingerprint: str
    shards: int
    documents: int
    examples: int
    teacher_tokens: int
    student_tokens: int
    split_tokens: int
    mean_teacher_length: float
    mean_student_length: float
    characters: int
    dropped_characters: int
    dropped_share: float  # non-space characters no example covers / (kept + dropped)
    forced_cuts: int  # cuts not followed by whitespace (no better boundary fitted max_length)
    fertility: dict[str, float]  # share of (non-special) teacher tokens split into 1, 2, ... student pieces
    mean_fertility: float
    student_per_teacher: float  # the student's own tokens per teacher token
    unk_rates: dict[str, float]  # teacher own, student own, split (teacher tokens whose split holds UNK)
    samples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        s = self.settings
        lines = [
            f"folders      {', '.join(self.folders)} (parts {', '.join(self.parts)})",
            f"teacher      {self.teacher_fingerprint[:16]}   student {self.student_fingerprint[:16]}",
            f"settings     max_length={s['max_length']} alignment={s['alignment']} split={s['split']} "
            f"examples_per_shard={s['examples_per_shard']}",
            f"counts       {self.shards} shards, {self.documents:,} documents, {self.examples:,} examples",
            f"tokens       teacher {self.teacher_tokens:,}  student {self.student_tokens:,}  "
            f"split {self.split_tokens:,}",
            f"lengths      mean teacher {self.mean_teacher_length:.1f}, student {self.mean_student_length:.1f}",
            f"dropped      {self.dropped_characters:,} non-space characters ({100 * self.dropped_share:.3f}%), "
            f"{self.forced_cuts:,} cuts inside words",
            "fertility    " + "  ".join(f"{k}:{100 * v:.1f}%" for k, v in self.fertility.items())
            + f"  (mean {self.mean_fertility:.2f} pieces per teacher token)",
            f"student/teacher tokens  {self.student_per_teacher:.3f}",
            "UNK rates    " + "  ".join(f"{k} {100 * v:.3f}%" for k, v in self.unk_rates.items()),
        ]
        for sample in self.samples:
            lines.append(f"\nexample {sample['index']} (document {sample['document']}, "
                         f"characters {sample['characters'][0]}-{sample['characters'][1]})")
            lines += [f"  {row}" for row in sample["rows"]]
        return "\n".join(lines)


def _pieces(vocab: list[str], ids: np.ndarray) -> str:
    return " ".join(vocab[int(i)] if 0 <= int(i) < len(vocab) else f"<{int(i)}>" for i in ids)


def audit(
    dirs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    examples: int = 3,
    seed: int = 0,
    max_rows: int = 24,
    verify: str = "sha256",
) -> AuditReport:
    """Audit shard folders with the tokenizers stored in them; `examples` samples are rendered as aligned pieces."""
    folders = [Path(dirs)] if isinstance(dirs, (str, os.PathLike)) else [Path(d) for d in dirs]
    if not folders:
        raise ShardError("no shard folder given")
    first = read_manifest(folders[0])
    toks = []
    for name, side in ((TEACHER_TOKENIZER, "teacher"), (STUDENT_TOKENIZER, "student")):
        path = folders[0] / name
        tok = load_tokenizer(path)
        if fingerprint(tok) != first[side]["fingerprint"]:
            raise ShardError(f"{path}: does not match the {side} fingerprint in the manifest; "
                             "rerun `vocabshrink align` on this folder")
        toks.append(tok)
    ds = ShardDataset(folders, toks[0], toks[1], verify=verify)
    t_vocab, s_vocab = vocab_list(toks[0]), vocab_list(toks[1])
    t_info, s_info = ds.teacher_info, ds.student_info

    entries = [e for m in ds.manifests for e in m["shards"]]
    tails = [m.get("tail") or {} for m in ds.manifests]
    total = lambda key: int(sum(e[key] for e in entries) + sum(t.get(key, 0) for t in tails))  # noqa: E731

    table = ds.table()
    sizes = np.diff(table.offsets)
    t_counts = ds.token_counts("teacher").astype(np.float64)
    s_counts = ds.token_counts("student").astype(np.float64)
    s_unk = s_info["roles"].get("unk")
    t_unk = t_info["roles"].get("unk")
    # Text tokens: everything but the special tokens, UNK included.
    t_plain, s_plain = ds.text_counts("teacher"), ds.text_counts("student")
    n_t = max(t_plain.sum(), 1.0)
    hist, mean_fertility = ds.fertility()
    unk_rates = _unk_rates(table, t_plain, s_plain, t_unk, s_unk)
    characters, dropped = total("characters"), total("dropped_characters")

    samples = _samples(ds, table, t_vocab, s_vocab, examples, seed, max_rows)

    return AuditReport(
        folders=[str(f) for f in folders],
        parts=[f"{m['settings']['shard_index']}/{m['settings']['num_shards']}" for m in ds.manifests],
        settings={k: v for k, v in ds.settings.items() if k not in ("shard_index",)},
        teacher_fingerprint=t_info["fingerprint"],
        student_fingerprint=s_info["fingerprint"],
        shards=len(entries),
        documents=total("documents"),
        examples=len(ds),
        teacher_tokens=int(t_counts.sum()),
        student_tokens=int(s_counts.sum()),
        split_tokens=int((sizes * t_counts).sum()),
        mean_teacher_length=float(t_counts.sum() / max(len(ds), 1)),
        mean_student_length=float(s_counts.sum() / max(len(ds), 1)),
        characters=characters,
        dropped_characters=dropped,
        dropped_share=dropped / max(characters + dropped, 1),
        forced_cuts=total("forced_cuts"),
        fertility=hist,
        mean_fertility=mean_fertility,
        student_per_teacher=float(s_plain.sum() / n_t),
        unk_rates=unk_rates,
        samples=samples,
    )


def _unk_rates(table: Any, t_plain: np.ndarray, s_plain: np.ndarray, t_unk: int | None,
               s_unk: int | None) -> dict[str, float]:
    """Shares of UNK: teacher tokens, student tokens, and teacher tokens whose split holds a student UNK."""
    n_t = max(t_plain.sum(), 1.0)
    split_unk = 0.0
    if s_unk is not None:
        unk_in = np.concatenate(([0], np.cumsum(table.ids == s_unk)))[table.offsets]
        split_unk = float(t_plain[np.diff(unk_in) > 0].sum() / n_t)
    return {
        "teacher": float(t_plain[t_unk] / n_t) if t_unk is not None else 0.0,
        "student": float(s_plain[s_unk] / max(s_plain.sum(), 1.0)) if s_unk is not None else 0.0,
        "split": split_unk,
    }


def _samples(ds: ShardDataset, table: Any, t_vocab: list[str], s_vocab: list[str], examples: int, seed: int,
             max_rows: int) -> list[dict[str, Any]]:
    """`examples` seeded examples rendered as aligned pieces (per common chunk, or per teacher token)."""
    if not len(ds) or examples <= 0:
        return []
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(ds), size=min(examples, len(ds)), replace=False).tolist())
    samples = []
    for index in picks:
        item = ds[index]
        doc, c0, c1 = ds.source(index)
        rows = _chunk_rows(item, t_vocab, s_vocab) if ds.has_chunks else [
            f"{t_vocab[int(tid)]:<32} -> {_pieces(s_vocab, table.ids[table.offsets[tid]:table.offsets[tid + 1]])}"
            for tid in item["teacher_ids"]]
        if len(rows) > max_rows:
            rows = rows[:max_rows] + [f"... ({len(rows) - max_rows} more)"]
        samples.append({"index": index, "document": doc, "characters": [c0, c1],
                        "header": "teacher | student (own tokens), per common chunk" if ds.has_chunks
                        else "teacher token -> split pieces", "rows": rows})
    return samples


def _chunk_rows(item: dict[str, Any], t_vocab: list[str], s_vocab: list[str]) -> list[str]:
    rows, tb, sb = [], 0, 0
    for te, se in zip(item["teacher_chunk_ends"], item["student_chunk_ends"]):
        rows.append(f"{_pieces(t_vocab, item['teacher_ids'][tb:te]):<32} | {_pieces(s_vocab, item['student_ids'][sb:se])}")
        tb, sb = int(te), int(se)
    return rows
