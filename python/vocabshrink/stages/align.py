"""align: cut a corpus into examples both tokenizers agree on, and write them as safetensors shards.

Output folder (see DESIGN.md, "Files on disk"):

- `shard-NNNNN.safetensors`: flat int32 token arrays with int64 offsets per example
  (`teacher_ids`/`teacher_offsets`, `student_ids`/`student_offsets`, and with offset
  alignment `teacher_chunk_ends`/`student_chunk_ends`/`chunk_offsets`), plus
  `doc_index` and `char_span` (where in which document each example came from);
- `table.safetensors`: the teacher -> student split table (`offsets`, `ids`);
- `counts.safetensors`: how often each teacher and student id occurs (MLM weights, audit);
- `teacher.tokenizer.json`, `student.tokenizer.json`: the tokenizers used (for `inspect`);
- `manifest.json`: format version, fingerprints, settings, per shard counts and sha256.

Examples never straddle a document. A cut falls at a text position that is a token
boundary for both tokenizers (a boundary of the offset-alignment chunks), preferably one
followed by whitespace so that re-tokenizing the example's text gives the same tokens.
Everything in the folder except `align_report.json` is byte-identical for any worker count
and for interrupted-then-resumed runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as st_save

from .. import _core
from ..corpus import iter_documents, resolve_paths
from ..errors import ConfigError, CorpusError, ShardError
from ..files import sha256_file, write_atomic, write_json_atomic
from ..progress import progress_bar
from ..shards import (ALIGNMENTS, COUNTS, FORMAT, FORMAT_VERSION, MANIFEST, REPORT, STUDENT_TOKENIZER, check_parts,
                      TABLE, TEACHER_TOKENIZER, shard_name)
from ..tokenization import TokenizerLike, fingerprint, load_tokenizer, read_config, special_ids

log = logging.getLogger(__name__)

# safetensors keeps metadata in a hash map: more than one key would make the files' bytes vary from run to run.
# Work sent to a worker at once: big enough to amortise IPC, small enough to keep workers balanced.
TASK_CHARS = 256_000
TASK_DOCS = 256


# --------------------------------------------------------------------------- tokenizer facts


def _template(tok: Any) -> tuple[list[int], list[int]]:
    """Ids the post-processor puts before and after a single sequence."""
    probe = tok.encode("a b", add_special_tokens=False)
    full = tok.post_process(probe)
    body, ids = probe.ids, full.ids
    for k in range(len(ids) - len(body) + 1):
        if ids[k:k + len(body)] == body:
            return ids[:k], ids[k + len(body):]
    raise ShardError("cannot tell which special tokens the tokenizer's post-processor adds around a text")


def tokenizer_facts(tok: Any, config: dict) -> dict:
    """What the reader needs to know about a tokenizer, recorded in the manifest."""
    from ..tokenization import special_tokens

    roles = special_tokens(tok, config)
    prefix, suffix = _template(tok)
    stray = sorted(set(prefix + suffix) - set(special_ids(tok)))
    if stray:
        log.warning("the tokenizer's post-processor adds ids %s that are not its special tokens (%s); was its "
                    "post-processor copied from another tokenizer?", stray, [tok.id_to_token(i) for i in stray])
    return {
        "fingerprint": fingerprint(tok),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "prefix": prefix,
        "suffix": suffix,
        "special_ids": special_ids(tok),
        "roles": dict(sorted(roles.items())),
    }


# --------------------------------------------------------------------------- cutting (runs in workers)


@dataclass
class _CutSettings:
    teacher_json: str
    student_json: str
    split_lengths: np.ndarray | None  # int32 [V_teacher], None when the split is not stored
    t_prefix: list[int]
    t_suffix: list[int]
    s_prefix: list[int]
    s_suffix: list[int]
    max_length: int
    offsets: bool  # store offset-alignment chunk ends


class _Cutter:
    """Tokenizes documents with both tokenizers and cuts them into examples that fit max_length."""

    def __init__(self, cfg: _CutSettings) -> None:
        from tokenizers import Tokenizer

        self.teacher = Tokenizer.from_str(cfg.teacher_json)
        self.student = Tokenizer.from_str(cfg.student_json)
        self.cfg = cfg
        self.t_pre = np.asarray(cfg.t_prefix, dtype=np.int32)
        self.t_suf = np.asarray(cfg.t_suffix, dtype=np.int32)
        self.s_pre = np.asarray(cfg.s_prefix, dtype=np.int32)
        self.s_suf = np.asarray(cfg.s_suffix, dtype=np.int32)
        self.budget_t = cfg.max_length - len(cfg.t_prefix) - len(cfg.t_suffix)
        self.budget_s = cfg.max_length - len(cfg.s_prefix) - len(cfg.s_suffix)
        if cfg.split_lengths is not None:
            specials = np.concatenate([self.t_pre, self.t_suf]).astype(np.int64)
            self.budget_x = cfg.max_length - int(cfg.split_lengths[specials].sum())
        else:
            self.budget_x = None
        # Special tokens align one to one only when both sides add them in the same places.
        self.pair_specials = (len(cfg.t_prefix), len(cfg.t_suffix)) == (len(cfg.s_prefix), len(cfg.s_suffix))

    def run(self, docs: list[tuple[int, str]]) -> list[tuple]:
        texts = [text for _, text in docs]
        t_encs = self.teacher.encode_batch(texts, add_special_tokens=False)
        s_encs = self.student.encode_batch(texts, add_special_tokens=False)
        return [self.cut(i, text, te, se) for (i, text), te, se in zip(docs, t_encs, s_encs)]

    def cut(self, doc: int, text: str, te: Any, se: Any) -> tuple:
        """-> (doc, examples, dropped characters after the last example).

        An example is (teacher ids, student ids, teacher chunk ends, student chunk ends, doc, char start,
        char end, dropped characters before it, forced cut).
        """
        t_ids = np.asarray(te.ids, dtype=np.int32)
        s_ids = np.asarray(se.ids, dtype=np.int32)
        if len(t_ids) == 0 or len(s_ids) == 0:
            return doc, [], len(text) - int(_is_space(text).sum())
        t_end = _ends(te.offsets)
        s_end = _ends(se.offsets)
        tc, sc = _core.offset_chunks(t_end, np.zeros(len(t_end), bool), s_end, np.zeros(len(s_end), bool))
        n = len(tc)
        # Boundary b (0..n) lies after chunk b-1: token counts and text position there.
        T = np.zeros(n + 1, np.int64)
        S = np.zeros(n + 1, np.int64)
        T[1:] = tc
        S[1:] = sc
        t_cm = np.concatenate(([0], np.maximum.accumulate(t_end)))
        s_cm = np.concatenate(([0], np.maximum.accumulate(s_end)))
        P = np.maximum(t_cm[T], s_cm[S])
        P[0] = 0
        if self.budget_x is not None:
            X = np.concatenate(([0], np.cumsum(self.cfg.split_lengths[t_ids], dtype=np.int64)))[T]
        else:
            X = None
        # Cuts followed by whitespace keep each example's tokens equal to a fresh tokenization of its text.
        space = _is_space(text)
        ok = np.flatnonzero(np.append(space, True)[np.minimum(P, len(text))])
        # Dropped text is counted in non-space characters: whitespace between examples is no loss.
        solid = np.concatenate(([0], np.cumsum(~space, dtype=np.int64)))
        examples: list[tuple] = []
        dropped = 0
        b = 0
        while b < n:
            lim = min(
                int(np.searchsorted(T, T[b] + self.budget_t, "right")) - 1,
                int(np.searchsorted(S, S[b] + self.budget_s, "right")) - 1,
            )
            if X is not None:
                lim = min(lim, int(np.searchsorted(X, X[b] + self.budget_x, "right")) - 1)
            if lim <= b:  # the next chunk alone is too long: drop it, keep both sides on the same text
                dropped += int(solid[P[b + 1]] - solid[P[b]])
                b += 1
                continue
            forced = False
            e = n if lim >= n else lim
            if e < n:
                k = int(np.searchsorted(ok, e, "right")) - 1
                if k >= 0 and ok[k] > b:
                    e = int(ok[k])
                else:
                    forced = True
            examples.append(self._example(doc, b, e, T, S, P, tc, sc, t_ids, s_ids, dropped, forced))
            dropped = 0
            b = e
        dropped += int(solid[-1] - solid[P[n]])  # trailing text no token covers
        return doc, examples, dropped

    def _example(self, doc, b, e, T, S, P, tc, sc, t_ids, s_ids, dropped, forced) -> tuple:
        t0, t1, s0, s1 = int(T[b]), int(T[e]), int(S[b]), int(S[e])
        teacher = np.concatenate([self.t_pre, t_ids[t0:t1], self.t_suf])
        student = np.concatenate([self.s_pre, s_ids[s0:s1], self.s_suf])
        if self.cfg.offsets:
            tce = tc[b:e].astype(np.int32) - t0 + len(self.t_pre)
            sce = sc[b:e].astype(np.int32) - s0 + len(self.s_pre)
            if self.pair_specials:
                tce = np.concatenate([np.arange(1, len(self.t_pre) + 1, dtype=np.int32), tce,
                                      tce[-1] + np.arange(1, len(self.t_suf) + 1, dtype=np.int32)])
                sce = np.concatenate([np.arange(1, len(self.s_pre) + 1, dtype=np.int32), sce,
                                      sce[-1] + np.arange(1, len(self.s_suf) + 1, dtype=np.int32)])
            else:  # unpaired specials join the first and last chunk of their side
                tce[-1] = len(teacher)
                sce[-1] = len(student)
        else:
            tce = sce = None
        return (teacher, student, tce, sce, doc, int(P[b]), int(P[e]), dropped, forced)


def _ends(offsets: list[tuple[int, int]]) -> np.ndarray:
    # chain + fromiter is several times faster than a generator over the tuples (a hot path)
    flat = np.fromiter(itertools.chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets))
    return flat[1::2].copy()


# Whitespace lookup by code point; every code point above U+3000 maps to the last entry (not space).
_SPACE_LUT = np.array([chr(c).isspace() for c in range(0x3001)] + [False], dtype=bool)


def _is_space(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return _SPACE_LUT[np.minimum(codes, 0x3001)]


_WORKER: _Cutter | None = None


def _worker_init(cfg: _CutSettings) -> None:
    global _WORKER
    # One worker per core: the tokenizers' own thread pool would oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = _Cutter(cfg)


def _worker_run(docs: list[tuple[int, str]]) -> list[tuple]:
    assert _WORKER is not None
    return _WORKER.run(docs)


# --------------------------------------------------------------------------- shard writing


@dataclass
class _OpenShard:
    """Examples collected for the next shard, plus what the manifest records about them."""

    index: int
    start: tuple[int, int]  # (document, example within it) of the first example
    examples: list[tuple] = field(default_factory=list)
    documents: int = 0
    characters: int = 0
    dropped_characters: int = 0
    forced_cuts: int = 0
    end: tuple[int, int] = (0, 0)  # (document, examples of it written so far) after the last example

    def add_dropped(self, n: int) -> None:
        self.dropped_characters += n

    def add(self, ex: tuple, rank: int) -> None:
        self.examples.append(ex)
        self.end = (ex[4], rank + 1)
        self.characters += ex[6] - ex[5]
        self.forced_cuts += int(ex[8])


def _flat(arrays: Sequence[np.ndarray], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)
    return flat, offsets


def _encode_shard(shard: _OpenShard, offsets: bool) -> tuple[bytes, dict]:
    exs = shard.examples
    t_ids, t_off = _flat([e[0] for e in exs], np.int32)
    s_ids, s_off = _flat([e[1] for e in exs], np.int32)
    tensors = {
        "teacher_ids": t_ids, "teacher_offsets": t_off,
        "student_ids": s_ids, "student_offsets": s_off,
        "doc_index": np.array([e[4] for e in exs], dtype=np.int64),
        "char_span": np.array([(e[5], e[6]) for e in exs], dtype=np.int64).reshape(-1, 2),
    }
    chunks = 0
    if offsets:
        tce, c_off = _flat([e[2] for e in exs], np.int32)
        sce, _ = _flat([e[3] for e in exs], np.int32)
        tensors.update(teacher_chunk_ends=tce, student_chunk_ends=sce, chunk_offsets=c_off)
        chunks = len(tce)
    data = st_save(tensors, metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"})
    entry = {
        "file": shard_name(shard.index),
        "examples": len(exs),
        "teacher_tokens": int(len(t_ids)),
        "student_tokens": int(len(s_ids)),
        "chunks": int(chunks),
        "documents": shard.documents,
        "characters": shard.characters,
        "dropped_characters": shard.dropped_characters,
        "forced_cuts": shard.forced_cuts,
        "start": list(shard.start),
        "end": list(shard.end),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return data, entry


# --------------------------------------------------------------------------- the stage


@dataclass
class AlignReport:
    """What `align` did; written as align_report.json beside the shards."""

    out: str
    part: int
    parts: int
    documents: int
    examples: int
    shards: int
    shards_reused: int
    teacher_tokens: int
    student_tokens: int
    split_tokens: int
    characters: int
    dropped_characters: int
    forced_cuts: int
    workers: int
    seconds: float
    texts_per_second: float
    teacher_tokens_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _settings(sources: list[str], *, max_length: int, alignment: str, split: str, text_field: str, errors: str,
              max_lines: int | None, examples_per_shard: int, num_shards: int, shard_index: int) -> dict:
    corpus = []
    for path in sources:
        corpus.append({"path": path, "bytes": None if path == "-" else os.path.getsize(path)})
    return {
        "corpus": corpus, "max_length": max_length, "alignment": alignment, "split": split,
        "text_field": text_field, "errors": errors, "max_lines": max_lines,
        "examples_per_shard": examples_per_shard, "num_shards": num_shards, "shard_index": shard_index,
    }


def _validate(max_length: int, alignment: str, workers: int, num_shards: int, shard_index: int,
              examples_per_shard: int) -> None:
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"--alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
    if max_length < 8:
        raise ConfigError(f"--max-length must be at least 8, got {max_length}")
    check_parts(workers, num_shards, shard_index)
    if examples_per_shard < 1:
        raise ConfigError(f"--examples-per-shard must be at least 1, got {examples_per_shard}")


def _reusable_shards(out: Path, manifest: dict) -> list[dict]:
    """The longest prefix of recorded shards whose files are present and intact."""
    good = []
    for entry in manifest.get("shards", []):
        path = out / entry["file"]
        if not path.exists() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            log.warning("%s: missing or changed since it was recorded; redoing it and every later shard", path)
            break
        good.append(entry)
    return good


def align(
    corpus: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    teacher: TokenizerLike,
    student: TokenizerLike,
    out: str | os.PathLike,
    max_length: int = 512,
    alignment: str = "both",
    workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    examples_per_shard: int = 10_000,
    resume: bool = True,
    split: str = "blank",
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
    prompt: str = "",
    progress: bool = True,
) -> AlignReport:
    """Cut `corpus` into aligned teacher/student examples and write them as shards in `out`.

    Documents (a blank-line-separated paragraph, a line with split="line", a
    sentence with split="sentence", or a .jsonl record) go to part `doc_number % num_shards`; this call writes part
    `shard_index`. With `resume`, a rerun with the same settings keeps the
    intact shards a previous run recorded and redoes the rest. `prompt` (e.g. "query: " for the E5 models) is
    put before every document's text, for teacher and student alike.
    """
    _validate(max_length, alignment, workers, num_shards, shard_index, examples_per_shard)
    from ..aligner import Aligner

    started = time.perf_counter()
    sources = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    paths = resolve_paths(sources)
    t_tok, s_tok = load_tokenizer(teacher), load_tokenizer(student)
    aligner = Aligner(t_tok, s_tok, teacher_config=read_config(teacher), student_config=read_config(student))
    t_facts = tokenizer_facts(t_tok, read_config(teacher))
    s_facts = tokenizer_facts(s_tok, read_config(student))
    if "pad" not in s_facts["roles"] and "unk" not in s_facts["roles"]:
        log.warning("the student tokenizer has no pad or unk token: batches pad with id 0")
    settings = _settings(paths, max_length=max_length, alignment=alignment, split=split, text_field=text_field,
                         errors=errors, max_lines=max_lines, examples_per_shard=examples_per_shard,
                         num_shards=num_shards, shard_index=shard_index)
    if prompt:  # recorded only when given: folders made without one keep their manifests
        settings["prompt"] = prompt
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "teacher": t_facts, "student": s_facts,
                "settings": settings, "table": None, "shards": [], "complete": False}
    reused, old = _previous_run(out, manifest, resume)
    if old is not None:  # already complete: nothing to do
        return _report(out, old, len(reused), workers, time.perf_counter() - started, 0, 0)
    _write_fixed_files(out, manifest, aligner, t_tok, s_tok, reused)

    split_lengths = np.diff(aligner.table.offsets).astype(np.int32) if alignment != "offsets" else None
    cfg = _CutSettings(t_tok.to_str(), s_tok.to_str(), split_lengths, t_facts["prefix"], t_facts["suffix"],
                       s_facts["prefix"], s_facts["suffix"], max_length, alignment != "split")
    writer = _ShardWriter(out, manifest, examples_per_shard, alignment != "split")
    documents = _Documents(paths, split, text_field, errors, max_lines, num_shards, shard_index, writer.cursor[0],
                           prompt)
    bar = progress_bar(progress, desc=f"align {out.name}", unit=" texts", dynamic_ncols=True)
    for results in _run_tasks(documents.tasks(), cfg, workers):
        writer.add(results)
        bar.update(len(results))
        bar.set_postfix_str(f"{writer.teacher_tokens / max(time.perf_counter() - started, 1e-9):,.0f} teacher tok/s",
                            refresh=False)
    bar.close()
    writer.finish()
    if documents.seen == 0:
        raise CorpusError(f"{', '.join(paths)}: the corpus holds no documents (no line has any text)")
    if not manifest["shards"]:
        log.warning("part %d of %d got no examples (%d documents in the corpus)", shard_index, num_shards,
                    documents.seen)
    _complete(out, manifest, documents.seen)
    return _report(out, manifest, len(reused), workers, time.perf_counter() - started, writer.texts,
                   writer.teacher_tokens)


def _previous_run(out: Path, manifest: dict, resume: bool) -> tuple[list[dict], dict | None]:
    """(intact shards of an earlier run with the same settings, its manifest when it is complete and intact)."""
    old_path = out / MANIFEST
    if not (old_path.exists() and resume):
        return [], None
    try:
        old = json.loads(old_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s: unreadable, starting over", old_path)
        return [], None
    same = (old.get("format_version") == FORMAT_VERSION and old.get("settings") == manifest["settings"]
            and old.get("teacher") == manifest["teacher"] and old.get("student") == manifest["student"])
    if not same:
        raise ShardError(f"{old_path}: was written with other settings or tokenizers; pass --no-resume to overwrite "
                         "it, or choose another --out")
    reused = _reusable_shards(out, old)
    if old.get("complete") and len(reused) == len(old["shards"]):
        if (out / COUNTS).exists() and sha256_file(out / COUNTS) == (old.get("counts") or {}).get("sha256"):
            log.info("%s: already complete, nothing to do", out)
            return reused, old
    return reused, None


def _write_fixed_files(out: Path, manifest: dict, aligner: Any, t_tok: Any, s_tok: Any, reused: list[dict]) -> None:
    """The files that do not depend on the corpus (the split table, both tokenizers), and the manifest so far."""
    t_fp, s_fp = manifest["teacher"]["fingerprint"], manifest["student"]["fingerprint"]
    table_bytes = st_save({"offsets": aligner.table.offsets, "ids": aligner.table.ids},
                          metadata={"tokenizers": f"{t_fp}->{s_fp}"})
    if not (out / TABLE).exists() or sha256_file(out / TABLE) != hashlib.sha256(table_bytes).hexdigest():
        write_atomic(out / TABLE, table_bytes)
    manifest["table"] = {"file": TABLE, "sha256": hashlib.sha256(table_bytes).hexdigest(),
                         "nnz": int(len(aligner.table.ids))}
    for name, tok in ((TEACHER_TOKENIZER, t_tok), (STUDENT_TOKENIZER, s_tok)):
        data = tok.to_str().encode("utf-8")
        if not (out / name).exists() or (out / name).read_bytes() != data:
            write_atomic(out / name, data)
    manifest["shards"] = list(reused)
    (out / COUNTS).unlink(missing_ok=True)
    write_json_atomic(out / MANIFEST, manifest)


@dataclass
class _Documents:
    """The corpus's documents of this part, from the resume cursor on, in tasks of about TASK_CHARS."""

    paths: list[str]
    split: str
    text_field: str
    errors: str
    max_lines: int | None
    num_shards: int
    shard_index: int
    first: int  # the first document still to do
    prompt: str = ""  # put before every document's text
    seen: int = 0  # documents in the whole corpus (all parts)

    def tasks(self) -> Iterator[list[tuple[int, str]]]:
        batch: list[tuple[int, str]] = []
        chars = 0
        for number, text in enumerate(iter_documents(self.paths, split=self.split, text_field=self.text_field,
                                                      errors=self.errors, max_lines=self.max_lines)):
            self.seen += 1
            if number % self.num_shards != self.shard_index or number < self.first:
                continue
            batch.append((number, self.prompt + text))
            chars += len(text)
            if chars >= TASK_CHARS or len(batch) >= TASK_DOCS:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch


class _ShardWriter:
    """Collects examples into shards of `examples_per_shard`, writing each (and the manifest) when it fills."""

    def __init__(self, out: Path, manifest: dict, examples_per_shard: int, chunks: bool) -> None:
        self.out, self.manifest, self.per_shard, self.chunks = out, manifest, examples_per_shard, chunks
        self.entries = manifest["shards"]
        self.cursor = tuple(self.entries[-1]["end"]) if self.entries else (0, 0)
        self.shard = _OpenShard(len(self.entries), self.cursor)
        self.teacher_tokens = 0
        self.texts = 0
        self.tail = {"documents": 0, "characters": 0, "dropped_characters": 0}

    def add(self, results: list) -> None:
        """One task's results: (document, its examples, characters dropped after the last example)."""
        for doc, examples, dropped_after in results:
            skip = self.cursor[1] if doc == self.cursor[0] else 0
            if skip == 0:
                self.shard.documents += 1
            self.texts += 1
            for rank, ex in enumerate(examples):
                self.teacher_tokens += len(ex[0])
                if rank < skip:
                    continue
                if not self.shard.examples:
                    self.shard.start = (doc, rank)
                self.shard.add_dropped(ex[7])
                self.shard.add(ex, rank)
                if len(self.shard.examples) >= self.per_shard:
                    self._close()
            if len(examples) >= skip:
                self.shard.add_dropped(dropped_after)

    def _close(self) -> None:
        data, entry = _encode_shard(self.shard, self.chunks)
        write_atomic(self.out / entry["file"], data)
        self.entries.append(entry)
        write_json_atomic(self.out / MANIFEST, self.manifest)
        log.debug("wrote %s (%d examples)", entry["file"], entry["examples"])
        self.shard = _OpenShard(self.shard.index + 1, tuple(entry["end"]))

    def finish(self) -> None:
        """Write the last shard; documents or dropped text after the last example belong to no shard."""
        if self.shard.examples:
            self._close()
        else:
            self.tail = {"documents": self.shard.documents, "characters": self.shard.characters,
                         "dropped_characters": self.shard.dropped_characters}
        self.manifest["tail"] = self.tail


def _complete(out: Path, manifest: dict, documents: int) -> None:
    """Token counts, the manifest marked complete, and shards of earlier runs that no longer belong removed."""
    entries = manifest["shards"]
    manifest["corpus_documents"] = documents
    counts_bytes = _count_tokens(out, entries, manifest["teacher"]["vocab_size"], manifest["student"]["vocab_size"])
    write_atomic(out / COUNTS, counts_bytes)
    manifest["counts"] = {"file": COUNTS, "sha256": hashlib.sha256(counts_bytes).hexdigest()}
    manifest["complete"] = True
    write_json_atomic(out / MANIFEST, manifest)
    _remove_stale(out, {e["file"] for e in entries})


def _run_tasks(tasks: Iterator[list], cfg: _CutSettings, workers: int) -> Iterator[list]:
    """Results of the tasks in order; with workers > 1 a bounded number run ahead in a process pool."""
    if workers == 1:
        cutter = _Cutter(cfg)
        for task in tasks:
            yield cutter.run(task)
        return
    # spawn: forking a process whose tokenizers already ran threads can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(cfg,)) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(_worker_run, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _count_tokens(out: Path, entries: list[dict], v_teacher: int, v_student: int) -> bytes:
    """How often each id occurs in the shards (the MLM sampling weights come from the student counts)."""
    from safetensors.numpy import load_file

    t_counts = np.zeros(v_teacher, dtype=np.int64)
    s_counts = np.zeros(v_student, dtype=np.int64)
    for entry in entries:
        arrays = load_file(str(out / entry["file"]))
        t_counts += np.bincount(arrays["teacher_ids"], minlength=v_teacher)[:v_teacher]
        s_counts += np.bincount(arrays["student_ids"], minlength=v_student)[:v_student]
    return st_save({"teacher_counts": t_counts, "student_counts": s_counts})


def _remove_stale(out: Path, keep: set[str]) -> None:
    for path in out.glob("shard-*.safetensors*"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _report(out: Path, manifest: dict, reused: int, workers: int, seconds: float, texts: int,
            t_tokens: int) -> AlignReport:
    shards = manifest["shards"]
    total = lambda key: int(sum(e[key] for e in shards))  # noqa: E731
    tail = manifest.get("tail") or {}
    split_tokens = 0
    if manifest["settings"]["alignment"] != "offsets" and (out / COUNTS).exists():
        from safetensors.numpy import load_file

        table = load_file(str(out / TABLE))
        counts = load_file(str(out / COUNTS))["teacher_counts"]
        split_tokens = int((np.diff(table["offsets"]) * counts).sum())
    report = AlignReport(
        out=str(out),
        part=manifest["settings"]["shard_index"],
        parts=manifest["settings"]["num_shards"],
        documents=total("documents") + int(tail.get("documents", 0)),
        examples=total("examples"),
        shards=len(shards),
        shards_reused=reused,
        teacher_tokens=total("teacher_tokens"),
        student_tokens=total("student_tokens"),
        split_tokens=split_tokens,
        characters=total("characters") + int(tail.get("characters", 0)),
        dropped_characters=total("dropped_characters") + int(tail.get("dropped_characters", 0)),
        forced_cuts=total("forced_cuts"),
        workers=workers,
        seconds=round(seconds, 3),
        texts_per_second=round(texts / seconds, 1) if seconds > 0 else 0.0,
        teacher_tokens_per_second=round(t_tokens / seconds, 1) if seconds > 0 else 0.0,
    )
    write_atomic(out / REPORT, (report.to_json() + "\n").encode("utf-8"))
    return report
