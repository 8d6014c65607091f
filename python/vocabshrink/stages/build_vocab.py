"""build-vocab: train (or trim) a student tokenizer that keeps the teacher's conventions; report on it.

The algorithms are the `tokenizers` trainers; this module only prepares their
input (a streamed corpus, an alphabet chosen by character coverage), makes the
result exactly `size` tokens, and writes a Hugging Face tokenizer directory.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import math
import os
import random
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, pre_tokenizers, trainers

from ..corpus import iter_line_blocks, iter_lines, resolve_paths
from ..errors import ConfigError, CorpusError, TokenizerError
from ..files import write_atomic
from ..progress import progress_bar
from ..tokenization import (
    METASPACE,
    UNUSED_SLOT,
    TokenizerLike,
    detect_scheme,
    load_tokenizer,
    read_config,
    special_tokens,
    spec_fingerprint,
    tokenizer_json,
    vocab_list,
)

log = logging.getLogger(__name__)

ALGORITHMS = ("wordpiece", "bpe", "unigram", "trim")
FILLS = ("none", "script")
# A script makes the corpus's "own" scripts when it writes at least this share of its letters (Russian literature
# quotes French: its Latin letters stay out, its Cyrillic ones are in).
MAIN_SCRIPT_SHARE = 0.1
# A letter of those scripts is the corpus's own when it (either case) writes at least this share of its letters:
# Russian literature has a few Ukrainian "і" and Serbian "ј"; filling with pieces that need them wastes slots.
ALPHABET_SHARE = 1e-5
_BATCH = 1000  # lines per element handed to train_from_iterator: fewer Python round trips
_REPORT_BATCH = 128  # lines per encode_batch call in the report
_ROLE_KEYS = ("unk", "sep", "pad", "cls", "mask", "bos", "eos")


@dataclass
class TokenizerStats:
    """One tokenizer measured on the evaluation sample."""

    vocab_size: int
    unk_rate: float  # UNK tokens / all tokens
    tokens_per_word: float  # tokens / whitespace-separated words
    single_char_tokens: int  # vocabulary entries whose surface (marker stripped) is one character
    single_char_share: float
    embedding_parameters: int | None  # vocab_size x the teacher's hidden size


@dataclass
class VocabReport:
    """What build-vocab made and how the student compares with the teacher (written as vocab_report.json)."""

    out: str
    algorithm: str
    requested_size: int
    vocab_size: int
    teacher: str
    teacher_fingerprint: str
    student_fingerprint: str
    corpus: list[str]
    lines_read: int  # non-blank lines
    lines_trained: int
    coverage: float
    alphabet_size: int  # characters given to the trainer
    dropped_characters: int  # rarer characters left to UNK by the coverage rule
    min_frequency: int
    kept_tokens: int  # from --keep
    eval_source: str  # "held-out" | "eval-corpus" | "training"
    eval_lines: int
    eval_words: int
    teacher_stats: TokenizerStats
    student_stats: TokenizerStats
    fertility: float  # student tokens per teacher token on the evaluation sample (teacher tokens split)
    teacher_entries_unk_share: float  # teacher vocabulary entries whose split holds the student's UNK
    split_length_mean: float
    split_length_max: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def save(self, path: str | os.PathLike) -> None:
        write_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VocabReport":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["teacher_stats"] = TokenizerStats(**data["teacher_stats"])
        data["student_stats"] = TokenizerStats(**data["student_stats"])
        return cls(**data)

    def table(self) -> str:
        """Student beside teacher, as printed by the CLI."""
        t, s = self.teacher_stats, self.student_stats

        def num(x: Any, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        rows = [
            ("vocabulary size", num(t.vocab_size, ","), num(s.vocab_size, ",")),
            ("UNK rate", num(t.unk_rate, ".4%"), num(s.unk_rate, ".4%")),
            ("tokens per word", num(t.tokens_per_word, ".3f"), num(s.tokens_per_word, ".3f")),
            ("single-character tokens", f"{t.single_char_tokens:,} ({t.single_char_share:.1%})",
             f"{s.single_char_tokens:,} ({s.single_char_share:.1%})"),
            ("embedding parameters", num(t.embedding_parameters, ","), num(s.embedding_parameters, ",")),
            ("student tokens per teacher token", "1.000", f"{self.fertility:.3f}"),
            ("teacher entries split to UNK", "-", f"{self.teacher_entries_unk_share:.2%}"),
            ("split length mean / max", "-", f"{self.split_length_mean:.2f} / {self.split_length_max}"),
        ]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows + [("", "teacher", "")])
        lines = [f"{self.algorithm} student, {self.vocab_size:,} tokens (asked {self.requested_size:,}) -> {self.out}",
                 f"evaluated on {self.eval_lines:,} {self.eval_source} lines ({self.eval_words:,} words)",
                 f"{'':<{w0}}  {'teacher':>{w1}}  student"]
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------- teacher


@dataclass
class _Teacher:
    tok: Tokenizer
    spec: dict
    config: dict
    family: str  # "wordpiece" | "bpe" | "unigram"
    scheme: str  # "wordpiece" | "metaspace" | "bytelevel"
    prefix: str  # continuation prefix (wordpiece scheme)
    specials: list[dict]  # added special tokens, teacher id order
    unk: str | None
    hidden_size: int | None
    model_max_length: int | None
    tokenizer_class: str | None


def _load_teacher(teacher: TokenizerLike) -> _Teacher:
    if isinstance(teacher, (str, Path)) and not Path(teacher).exists() and not (
            isinstance(teacher, str) and "/" in teacher and not teacher.startswith((".", "/"))):
        raise TokenizerError(f"{teacher}: no such teacher directory; pass a Hugging Face model or tokenizer "
                             "directory (or a hub id where the network allows)")
    tok = load_tokenizer(teacher)
    spec = tokenizer_json(tok)
    config = read_config(teacher)
    mtype = (spec.get("model") or {}).get("type")
    family = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}.get(mtype)
    if family is None:
        raise TokenizerError(f"{teacher}: teacher model type {mtype!r} is not supported "
                             "(WordPiece, BPE and Unigram are)")
    scheme = detect_scheme(tok)
    specials = [a for a in spec.get("added_tokens") or []
                if a.get("special", False) and not UNUSED_SLOT.match(a["content"])]
    specials.sort(key=lambda a: a["id"])
    roles = special_tokens(tok, config)
    unk_id = roles.get("unk")
    unk = tok.id_to_token(unk_id) if unk_id is not None else None
    hidden = None
    if isinstance(teacher, (str, Path)) and Path(teacher).is_dir() and (Path(teacher) / "config.json").exists():
        try:
            mc = json.loads((Path(teacher) / "config.json").read_text(encoding="utf-8"))
            hidden = next((int(mc[k]) for k in ("hidden_size", "d_model", "dim", "n_embd") if k in mc), None)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError):
            log.warning("%s/config.json is unreadable: embedding sizes are not reported", teacher)
    mml = config.get("model_max_length")
    if not isinstance(mml, int) or mml > 10**8:  # HF writes a huge sentinel for "no limit"
        mml = None
    return _Teacher(tok, spec, config, family, scheme.name, scheme.continuation_prefix, specials, unk, hidden,
                    mml, config.get("tokenizer_class"))


# ---------------------------------------------------------------- corpus passes


@dataclass
class _Scan:
    lines: int
    chars: Counter


def _scan(sources: list[str], read: dict, progress: bool, what: str) -> _Scan:
    """Pass 1: count non-blank lines and raw characters (memory bounded by the character set and one block)."""
    counts = np.zeros(256, dtype=np.int64)  # by code point, grown on demand
    n = 0
    with progress_bar(progress, desc="reading corpus", unit=" lines", leave=False) as bar:
        for block in iter_line_blocks(sources, **read):
            kept = [line for line in block if line.strip()]
            if kept:
                points = np.frombuffer("".join(kept).encode("utf-32-le"), dtype=np.uint32)
                found = np.bincount(points)
                if len(found) > len(counts):
                    counts = np.concatenate([counts, np.zeros(len(found) - len(counts), dtype=np.int64)])
                counts[: len(found)] += found
            n += len(kept)
            bar.update(len(kept))
    chars = Counter({chr(int(c)): int(counts[c]) for c in np.flatnonzero(counts)})
    if n == 0:
        raise CorpusError(f"{what}: the corpus is empty (no line holds any text)")
    return _Scan(n, chars)


def _normalized_counts(tok: Tokenizer, raw: Counter) -> Counter:
    """Character counts as the trainer sees them: each raw character through normalizer and pre-tokenizer."""
    norm, pre = tok.normalizer, tok.pre_tokenizer
    out: Counter = Counter()
    for ch, count in raw.items():
        text = norm.normalize_str(ch) if norm is not None else ch
        pieces = [p for p, _ in pre.pre_tokenize_str(text)] if pre is not None else text.split()
        for piece in pieces:
            for c in piece:
                # a Metaspace pre-tokenizer marks each lone character as a word start; the real
                # markers come from whitespace, counted there
                if c != METASPACE or ch.isspace():
                    out[c] += count
    return out


def _alphabet(counts: Counter, coverage: float) -> tuple[list[str], int]:
    """The most frequent characters that cover `coverage` of all occurrences; and how many were left out."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values())
    need = coverage * total
    kept, acc = [], 0
    for ch, c in ranked:
        if acc >= need and kept:
            break
        kept.append(ch)
        acc += c
    return sorted(kept), len(ranked) - len(kept)


def _train_stream(sources: list[str], read: dict, held: set[int], sample_every: int, sample_cap: int,
                  held_out: list[str], sample: list[str], total: int, progress: bool,
                  on_end: Callable[[], None]) -> Iterator[list[str]]:
    """Pass 2: batches of training lines; held-out lines and a sample of training lines are kept on the way.

    `on_end` runs once the last line is read, while the trainer still works on what it was given.
    """
    buf: list[str] = []
    i = 0
    with progress_bar(progress, total=total, desc="training", unit=" lines", leave=False) as bar:
        for line in iter_lines(sources, **read):
            if not line.strip():
                continue
            if i in held:
                held_out.append(line)
            else:
                buf.append(line)
                if i % sample_every == 0 and len(sample) < sample_cap:
                    sample.append(line)
                if len(buf) >= _BATCH:
                    bar.update(len(buf))
                    yield buf
                    buf = []
            i += 1
        on_end()
        if buf:
            bar.update(len(buf))
            yield buf


# ---------------------------------------------------------------- helpers


def _read_keep(keep: str | os.PathLike | Iterable[str] | None) -> list[str]:
    if keep is None:
        return []
    if isinstance(keep, (str, os.PathLike)):
        path = Path(keep)
        if not path.is_file():
            raise ConfigError(f"{path}: --keep file not found")
        try:
            tokens = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: --keep file is not UTF-8 ({exc})") from None
    else:
        tokens = [str(t).strip() for t in keep]
    return list(dict.fromkeys(t for t in tokens if t))


def _surface(token: str, scheme: str, prefix: str) -> str:
    """The text a vocabulary entry stands for, its word-start/continuation marker removed."""
    if scheme == "wordpiece" and token.startswith(prefix) and len(token) > len(prefix):
        return token[len(prefix):]
    if scheme == "metaspace" and token.startswith(METASPACE) and len(token) > 1:
        return token[1:]
    if scheme == "bytelevel" and token.startswith("\u0120") and len(token) > 1:
        return token[1:]
    return token


def _remap_processor(node: Any, ids: dict[str, int]) -> Any:
    """The teacher's post-processor with its special-token ids renumbered to the student's."""
    if isinstance(node, list):
        return [_remap_processor(x, ids) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _remap_processor(v, ids) for k, v in node.items()}
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for name, st in (node.get("special_tokens") or {}).items():
            st["ids"] = [ids[t] for t in st["tokens"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            if isinstance(node.get(key), list):
                node[key] = [node[key][0], ids[node[key][0]]]
    return node


def _missing_specials(node: Any, ids: dict[str, int]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, list):
        for x in node:
            found |= _missing_specials(x, ids)
    elif isinstance(node, dict):
        if node.get("type") == "TemplateProcessing":
            for st in (node.get("special_tokens") or {}).values():
                found |= {t for t in st.get("tokens", []) if t not in ids}
        elif node.get("type") in ("BertProcessing", "RobertaProcessing"):
            found |= {node[k][0] for k in ("sep", "cls") if isinstance(node.get(k), list) and node[k][0] not in ids}
        for v in node.values():
            found |= _missing_specials(v, ids)
    return found


# ---------------------------------------------------------------- student layouts


@dataclass
class _Layout:
    """How the student's pipeline differs from the teacher's for a given algorithm."""

    model: str  # "WordPiece" | "BPE" | "Unigram"
    pre_tokenizer: Any  # JSON
    decoder: Any  # JSON
    prefix: str | None  # continuation prefix in the vocabulary
    byte_alphabet: bool


def _layout(teacher: _Teacher, algorithm: str) -> _Layout:
    pre, dec = teacher.spec.get("pre_tokenizer"), teacher.spec.get("decoder")
    scheme = teacher.scheme
    if algorithm == "trim":
        return _Layout({"wordpiece": "WordPiece", "bpe": "BPE", "unigram": "Unigram"}[teacher.family], pre, dec,
                       teacher.prefix if scheme == "wordpiece" else None, scheme == "bytelevel")
    if algorithm == "wordpiece":
        if scheme != "wordpiece":
            raise ConfigError(f"--algorithm wordpiece needs a teacher that marks continuations with a prefix "
                              f"(this teacher's scheme is {scheme}); use bpe or unigram")
        return _Layout("WordPiece", pre, {"type": "WordPiece", "prefix": teacher.prefix, "cleanup": True},
                       teacher.prefix, False)
    if algorithm == "bpe":
        if scheme == "wordpiece":
            return _Layout("BPE", pre, {"type": "WordPiece", "prefix": teacher.prefix, "cleanup": True},
                           teacher.prefix, False)
        return _Layout("BPE", pre, dec, None, scheme == "bytelevel")
    # unigram: pieces carry no continuation prefix, so word starts must be marked by the pre-tokenizer
    if scheme == "wordpiece":
        meta = {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always", "split": True}
        seq = {"type": "Sequence", "pretokenizers": [pre, meta]} if pre else meta
        return _Layout("Unigram", seq, {"type": "Metaspace", "replacement": METASPACE,
                                        "prepend_scheme": "always", "split": True}, None, False)
    return _Layout("Unigram", pre, dec, None, scheme == "bytelevel")


def _trainer_tokenizer(teacher: _Teacher, layout: _Layout) -> Tokenizer:
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": teacher.spec.get("normalizer"), "pre_tokenizer": layout.pre_tokenizer,
            "post_processor": None, "decoder": layout.decoder, "model": _empty_model(teacher, layout)}
    return Tokenizer.from_str(json.dumps(spec))


def _empty_model(teacher: _Teacher, layout: _Layout) -> dict:
    tm = teacher.spec.get("model") or {}
    if layout.model == "WordPiece":
        return {"type": "WordPiece", "unk_token": teacher.unk or "[UNK]", "continuing_subword_prefix": layout.prefix,
                "max_input_chars_per_word": tm.get("max_input_chars_per_word", 100), "vocab": {}}
    if layout.model == "BPE":
        return {"type": "BPE", "dropout": None, "unk_token": None if layout.byte_alphabet else teacher.unk,
                "continuing_subword_prefix": layout.prefix, "end_of_word_suffix": tm.get("end_of_word_suffix"),
                "fuse_unk": bool(tm.get("fuse_unk", False)), "byte_fallback": bool(tm.get("byte_fallback", False)),
                "ignore_merges": bool(tm.get("ignore_merges", False)), "vocab": {}, "merges": []}
    return {"type": "Unigram", "unk_id": None, "vocab": [], "byte_fallback": bool(tm.get("byte_fallback", False))}


# ---------------------------------------------------------------- the stage


def build_vocab(
    corpus: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    size: int,
    teacher: TokenizerLike,
    out: str | os.PathLike,
    algorithm: str | None = None,
    coverage: float = 0.9999,
    min_frequency: int = 2,
    keep: str | os.PathLike | Iterable[str] | None = None,
    fill: str = "none",
    eval_corpus: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    eval_lines: int = 1000,
    text_field: str = "text",
    errors: str = "strict",
    max_lines: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> VocabReport:
    """Train (or trim) a student tokenizer of exactly `size` tokens, specials included, and write it to `out`.

    The student keeps the teacher's normalizer, pre-tokenizer, post-processor
    template, decoder, continuation prefix, model_max_length and special tokens
    (first in the vocabulary). `algorithm` defaults to the teacher's family;
    "trim" keeps the most frequent teacher tokens instead of training; with
    `fill="script"` a trim the corpus leaves short of `size` is filled with the
    teacher's most probable unseen tokens written in the corpus's own scripts. The
    report compares student and teacher on `eval_corpus`, or on up to
    `eval_lines` lines held out from the corpus (chosen with `seed`).
    """
    started = time.perf_counter()
    sources = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"--size must be a positive integer, got {size!r}")
    if not 0.0 < coverage <= 1.0:
        raise ConfigError(f"--coverage must be in (0, 1], got {coverage}")
    if min_frequency < 0:
        raise ConfigError(f"--min-frequency must be >= 0, got {min_frequency}")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise ConfigError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if eval_lines < 1:
        raise ConfigError(f"--eval-lines must be >= 1, got {eval_lines}")
    if fill not in FILLS:
        raise ConfigError(f"--fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if fill != "none" and algorithm != "trim":
        raise ConfigError("--fill applies to --algorithm trim (a trained vocabulary has no unseen tokens to add)")
    t = _load_teacher(teacher)
    algorithm = algorithm or t.family
    layout = _layout(t, algorithm)
    if fill != "none" and layout.byte_alphabet:
        raise ConfigError("--fill script needs readable tokens: a byte-level teacher's tokens are byte symbols; "
                          "pass --fill none")
    if size <= len(t.specials):
        raise ConfigError(f"--size {size} leaves no room next to the teacher's {len(t.specials)} special tokens "
                          f"({', '.join(a['content'] for a in t.specials)}); pass a larger --size")
    keep_tokens = _read_keep(keep)
    if keep_tokens and algorithm == "bpe":
        raise ConfigError("--keep is not supported with --algorithm bpe (a BPE token needs the merges that build "
                          "it); use wordpiece, unigram or trim")
    read = {"text_field": text_field, "errors": errors, "max_lines": max_lines}
    out = Path(out)
    notes: list[str] = []

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vocabshrink-report") as pool:
        fit = _fit(t, layout, algorithm, sources, read, size, coverage, min_frequency, keep_tokens, eval_corpus,
                   eval_lines, seed, progress, notes, pool, fill)
        _release_free_heap()
        student = fit.student
        vocab_size = student.get_vocab_size(with_added_tokens=True)
        if vocab_size < size:
            at = f" at --min-frequency {min_frequency}" if min_frequency > 1 and algorithm != "trim" else ""
            notes.append(f"the corpus supports only {vocab_size:,} tokens, not {size:,} (every token it can "
                         f"learn{at} is in)")
            log.warning(notes[-1])
        # the student's sample is encoded in Rust, without the GIL, while this thread writes the files and
        # builds the split table
        encoded = pool.submit(_encode, student, fit.eval_sample)
        measured = fit.teacher_measure.result()  # done during training, as a rule
        student_config, student_fingerprint = _write_tokenizer(out, student, t, layout, fit.trim_map,
                                                               measured.fingerprint)
        report = _report(t, measured, student, student_config, student_fingerprint,
                         fit.eval_sample, encoded, out, algorithm, size, teacher, sources, fit.lines_read,
                         fit.lines_trained, coverage, fit.alphabet_size, fit.dropped, min_frequency,
                         len(keep_tokens), fit.eval_source, notes, started)
        report.save(out / "vocab_report.json")
    return report


@dataclass
class _Fit:
    """What the corpus passes made: the student, and what the report needs of them."""

    student: Tokenizer
    trim_map: list[int] | None
    lines_read: int
    lines_trained: int
    alphabet_size: int
    dropped: int
    eval_source: str
    eval_sample: list[str]
    teacher_measure: Future  # of a _TeacherMeasure


def _fit(t: _Teacher, layout: _Layout, algorithm: str, sources: list, read: dict, size: int, coverage: float,
         min_frequency: int, keep_tokens: list[str], eval_corpus: Any, eval_lines: int, seed: int, progress: bool,
         notes: list[str], pool: ThreadPoolExecutor, fill: str = "none") -> _Fit:
    """Pass 1 (lines, characters, the alphabet), the evaluation sample, and pass 2 (training or trimming).

    The teacher's half of the report is handed to `pool` as soon as the sample is complete.
    """
    text_field, errors = read["text_field"], read["errors"]  # as given: a spilled stdin is read as plain text
    with tempfile.TemporaryDirectory(prefix="vocabshrink-") as tmp:
        paths = resolve_paths(sources)
        if "-" in paths:  # stdin is read twice: spill it to a file on the first pass
            spill = Path(tmp) / "stdin.txt"
            with open(spill, "w", encoding="utf-8") as fh:
                for line in iter_lines(["-"], text_field=text_field, errors=errors):
                    fh.write(line + "\n")
            paths = [str(spill) if p == "-" else p for p in paths]
            read = {**read, "text_field": "text"}
        scan = _scan(paths, read, progress, ", ".join(map(str, sources)))
        counts = _normalized_counts(_trainer_tokenizer(t, layout), scan.chars)
        keep_chars = {c for tok_ in keep_tokens for c in _surface(tok_, t.scheme, t.prefix)}
        if layout.byte_alphabet:
            alphabet, dropped = sorted(pre_tokenizers.ByteLevel.alphabet()), 0
            notes.append("byte-level pre-tokenizer: the alphabet is the 256 byte symbols; --coverage does not apply")
        else:
            alphabet, dropped = _alphabet(counts, coverage)
            alphabet = sorted(set(alphabet) | {c for c in keep_chars if len(c) == 1}
                              | ({METASPACE} if "Metaspace" in json.dumps(layout.pre_tokenizer) else set()))
        if not alphabet:
            raise CorpusError(f"{', '.join(map(str, sources))}: no characters left after normalization")

        # evaluation sample: held out from the training stream, or a separate corpus
        held: set[int] = set()
        held_out: list[str] = []
        eval_source = "held-out"
        if eval_corpus is not None:
            esrc = [eval_corpus] if isinstance(eval_corpus, (str, os.PathLike)) else list(eval_corpus)
            held_out = list(itertools.islice(
                (ln for ln in iter_lines(esrc, text_field=text_field, errors=errors) if ln.strip()), eval_lines))
            if not held_out:
                raise CorpusError(f"{', '.join(map(str, esrc))}: the evaluation corpus is empty")
            eval_source = "eval-corpus"
        else:
            k = min(eval_lines, scan.lines // 10)
            if k == 0:
                eval_source = "training"
                notes.append(f"corpus too small to hold lines out ({scan.lines} lines): evaluated on training lines")
            else:
                held = set(random.Random(seed).sample(range(scan.lines), k))
        # a sample of training lines, for the report when nothing could be held out
        sample_every = max(1, scan.lines // eval_lines)
        train_sample: list[str] = []
        eval_sample = train_sample if eval_source == "training" else held_out
        measured: list[Future] = []

        def measure_teacher() -> None:
            # Runs when the last line is read: the teacher's half of the report then overlaps the trainer's
            # final (merge) phase, which keeps one core mostly idle, instead of adding to the run after it.
            if not measured:
                measured.append(pool.submit(_measure_teacher, t, eval_sample))

        stream = _train_stream(paths, read, held, sample_every, eval_lines if eval_source == "training" else 0,
                               held_out if eval_corpus is None else [], train_sample, scan.lines, progress,
                               measure_teacher)
        if algorithm == "trim":
            notes.append("trim keeps teacher tokens: --coverage and --min-frequency do not apply")
            student, trim_map = _trim(t, layout, stream, size, keep_tokens, alphabet, notes,
                                      counts if fill == "script" else None)
        else:
            student = _train(t, layout, algorithm, stream, size, alphabet, dropped, min_frequency, keep_tokens,
                             progress, notes)
            trim_map = None
        measure_teacher()  # a no-op unless the stream was left unfinished
    return _Fit(student, trim_map, scan.lines, scan.lines - len(held), len(alphabet), dropped, eval_source,
                eval_sample, measured[0])


# ---------------------------------------------------------------- training


def _release_free_heap() -> None:
    """Hand the trainer's freed heap back to the OS (glibc keeps it in its arenas otherwise).

    The report runs after training; without this its allocations stack on top of
    the trainer's peak instead of reusing that memory.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _train(t: _Teacher, layout: _Layout, algorithm: str, stream: Iterator[list[str]], size: int,
           alphabet: list[str], dropped: int, min_frequency: int, keep: list[str], progress: bool,
           notes: list[str]) -> Tokenizer:
    specials = [a["content"] for a in t.specials]
    tok = _trainer_tokenizer(t, layout)
    # The trainers number continuation forms ("##a") in hash-map order as they meet them, and break ties
    # between equally frequent merges by those numbers, so runs differ. Handed over as special tokens, the
    # continuation forms get fixed numbers up front (they stay plain vocabulary entries in the result).
    fixed_forms = [layout.prefix + c for c in alphabet] if layout.prefix and algorithm != "unigram" else []
    # Unigram: a margin more than asked, cut back by score (its last pieces depend on float sums' order).
    margin = max(16, size // 50) if algorithm == "unigram" else 0
    if algorithm == "wordpiece":
        trainer = trainers.WordPieceTrainer(
            vocab_size=size + margin, min_frequency=min_frequency, special_tokens=specials + fixed_forms,
            show_progress=progress,
            initial_alphabet=alphabet, limit_alphabet=len(alphabet), continuing_subword_prefix=layout.prefix)
    elif algorithm == "bpe":
        kwargs: dict[str, Any] = {}
        if layout.prefix:
            kwargs["continuing_subword_prefix"] = layout.prefix
        eow = (t.spec.get("model") or {}).get("end_of_word_suffix")
        if eow:
            kwargs["end_of_word_suffix"] = eow
        trainer = trainers.BpeTrainer(
            vocab_size=size, min_frequency=min_frequency, special_tokens=specials + fixed_forms,
            show_progress=progress, initial_alphabet=alphabet, limit_alphabet=len(alphabet), **kwargs)
    else:
        trainer = trainers.UnigramTrainer(
            vocab_size=size + margin + dropped, special_tokens=specials, show_progress=progress,
            unk_token=t.unk, initial_alphabet=alphabet if layout.byte_alphabet else [])
    tok.train_from_iterator(stream, trainer)
    model = json.loads(tok.to_str())["model"]
    del tok, trainer  # the trainer's word tables go before the result is assembled
    _release_free_heap()
    if algorithm == "wordpiece":
        return _finish_wordpiece(t, layout, model, size, keep)
    if algorithm == "bpe":
        return _finish_bpe(t, layout, model, size, alphabet, notes)
    return _finish_unigram(t, layout, model, size, alphabet, keep, notes)


def _assemble(t: _Teacher, layout: _Layout, model: dict) -> Tokenizer:
    """A student Tokenizer from a finished model: the teacher's pipeline around it, specials first."""
    ids = {a["content"]: i for i, a in enumerate(t.specials)}
    added = [{"id": i, "content": a["content"], "single_word": bool(a.get("single_word")),
              "lstrip": bool(a.get("lstrip")), "rstrip": bool(a.get("rstrip")),
              "normalized": bool(a.get("normalized")), "special": True} for i, a in enumerate(t.specials)]
    post = t.spec.get("post_processor")
    missing = _missing_specials(post, ids)
    if missing:
        raise TokenizerError(f"the teacher's post-processor uses tokens that are not special tokens: {sorted(missing)}")
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": t.spec.get("normalizer"), "pre_tokenizer": layout.pre_tokenizer,
            "post_processor": _remap_processor(post, ids), "decoder": layout.decoder, "model": model}
    try:
        return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise TokenizerError(f"the student tokenizer is not valid ({exc})") from exc


def _finish_wordpiece(t: _Teacher, layout: _Layout, model: dict, size: int, keep: list[str]) -> Tokenizer:
    """Specials, the alphabet, its continuation forms, merges in the trainer's order; --keep tokens make room
    by dropping the last merges."""
    vocab: dict[str, int] = model["vocab"]
    specials = [a["content"] for a in t.specials]
    prefix = layout.prefix or "##"
    trained = [v for v in sorted(vocab, key=vocab.get) if v not in specials]
    is_single = {v for v in trained
                 if len(_surface(v, "wordpiece", prefix)) == 1 and (len(v) == 1 or v.startswith(prefix))}
    single = sorted(is_single, key=lambda v: (v.startswith(prefix), v))
    keep = [k for k in keep if k not in specials and k not in is_single]
    keep_new = [k for k in keep if k not in vocab]
    if len(specials) + len(single) + len(keep) > size:
        raise ConfigError(f"--size {size} is too small for {len(specials)} special tokens, {len(single)} "
                          f"single-character tokens and {len(keep)} --keep tokens; lower --coverage or "
                          "raise --size")
    kept = set(keep)
    budget = size - len(specials) - len(single) - len(keep)
    merged = [v for v in trained if v not in is_single and v not in kept]
    cut = set(merged[:budget]) | kept
    ordered = specials + single + [v for v in trained if v in cut] + keep_new
    return _assemble(t, layout, {**model, "vocab": {v: i for i, v in enumerate(ordered)}})


def _finish_bpe(t: _Teacher, layout: _Layout, model: dict, size: int, alphabet: list[str],
                notes: list[str]) -> Tokenizer:
    """Exactly `size` tokens: the trainer can overshoot (continuation forms of the alphabet); drop the last merges."""
    vocab: dict[str, int] = model["vocab"]
    merges = [list(m) if isinstance(m, list) else m.split(" ", 1) for m in model["merges"]]
    specials = [a["content"] for a in t.specials]
    merged = [_merged(a, b, layout.prefix) for a, b in merges]
    # canonical ids: specials, the base symbols sorted, then merge order (the trainer numbers
    # continuation forms in hash-map order)
    base = sorted(set(vocab) - set(specials) - set(merged), key=lambda v: (len(v), v))
    by_id = specials + base + list(dict.fromkeys(merged))
    while len(by_id) > size and merges:
        merges.pop()
        if merged.pop() not in merged:
            by_id.pop()
    if len(by_id) > size:
        raise ConfigError(f"--size {size} is too small for {len(specials)} special tokens and "
                          f"{len(by_id) - len(specials)} alphabet tokens; lower --coverage or raise --size")
    new_model = {**model, "vocab": {v: i for i, v in enumerate(by_id)}, "merges": merges}
    return _assemble(t, layout, new_model)


def _finish_unigram(t: _Teacher, layout: _Layout, model: dict, size: int, alphabet: list[str], keep: list[str],
                    notes: list[str]) -> Tokenizer:
    """Exactly `size` pieces: specials, the alphabet's characters and --keep first, then the best-scored rest."""
    specials = [a["content"] for a in t.specials]
    raw = {p: float(s) for p, s in model["vocab"] if p not in specials}
    # Characters the trainer adds after its pieces get the lowest score minus a small step each, stepped in
    # hash-set order; hand the same scores out in character order instead.
    floor_multi = min((s for p, s in raw.items() if len(p) > 1), default=0.0)
    tail = sorted(p for p, s in raw.items() if len(p) == 1 and s < floor_multi)
    for p, s in zip(tail, sorted((raw[p] for p in tail), reverse=True)):
        raw[p] = s
    pieces = {p: round(s, 8) for p, s in raw.items()}
    allowed = set(alphabet)
    # the trainer keeps every character it saw; the coverage rule leaves the rarer ones to UNK
    chars = {p for p in pieces if len(p) == 1}
    for p in chars - allowed:
        del pieces[p]
    floor = min(pieces.values(), default=-20.0) - 1.0
    for k in keep:
        if k not in specials and k not in pieces:
            pieces[k] = floor
    fixed = {p for p in pieces if len(p) == 1} | {k for k in keep if k not in specials}
    if len(specials) + len(fixed) > size:
        raise ConfigError(f"--size {size} is too small for {len(specials)} special tokens and {len(fixed)} "
                          "single-character and --keep pieces; lower --coverage or raise --size")
    rest = sorted((p for p in pieces if p not in fixed), key=lambda p: (-pieces[p], p))
    chosen = fixed | set(rest[: size - len(specials) - len(fixed)])
    ordered = sorted(chosen, key=lambda p: (-pieces[p], p))
    vocab = [[s, 0.0] for s in specials] + [[p, pieces[p]] for p in ordered]
    unk_id = specials.index(t.unk) if t.unk in specials else None
    if unk_id is None:
        notes.append("the teacher has no unknown token: characters outside the alphabet cannot be encoded")
    new_model = {"type": "Unigram", "unk_id": unk_id, "vocab": vocab,
                 "byte_fallback": model.get("byte_fallback", False)}
    return _assemble(t, layout, new_model)


def _merged(a: str, b: str, prefix: str | None) -> str:
    """The token a BPE merge makes (the right part loses its continuation prefix)."""
    return a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)


# ---------------------------------------------------------------- trim


def _trim(t: _Teacher, layout: _Layout, stream: Iterator[list[str]], size: int, keep: list[str],
          alphabet: list[str], notes: list[str], fill_chars: Counter | None = None) -> tuple[Tokenizer, list[int]]:
    """The most frequent teacher tokens plus what they need to stay reachable; teacher ids kept in a map.

    With `fill_chars` (the corpus's character counts), room left after every token the corpus uses goes to the
    teacher's unseen tokens in the corpus's own scripts, most probable first (`_fill_order`).
    """
    tv = t.tok.get_vocab_size(with_added_tokens=True)
    counts = np.zeros(tv, dtype=np.int64)
    for batch in stream:
        for enc in t.tok.encode_batch(batch, add_special_tokens=False):
            if enc.ids:
                counts += np.bincount(np.asarray(enc.ids, dtype=np.int64), minlength=tv)[:tv]
    vocab = t.tok.get_vocab(with_added_tokens=True)
    special_ids = [a["id"] for a in t.specials]
    model = t.spec["model"]
    parents: dict[str, tuple[str, str]] = {}
    if layout.model == "BPE":
        for m in model.get("merges", []):
            a, b = (m if isinstance(m, list) else m.split(" ", 1))
            parents.setdefault(_merged(a, b, layout.prefix), (a, b))

    def needs(token: str) -> list[str]:
        """The token and what it needs: BPE, the merges that build it; else its characters in both forms."""
        if layout.model == "BPE":
            out, todo = [], [token]
            while todo:
                x = todo.pop()
                if x in out:
                    continue
                out.append(x)
                if x in parents:
                    todo += list(parents[x])
            return out
        out = [token]
        surface = _surface(token, t.scheme, t.prefix)
        for c in surface:
            forms = [c, t.prefix + c] if layout.model == "WordPiece" else [c, METASPACE + c]
            out += [f for f in forms if f in vocab]
        return out

    kept: set[str] = {a["content"] for a in t.specials}
    if layout.byte_alphabet:  # byte-level: every text is made of these 256 symbols, none may go missing
        kept |= {c for c in pre_tokenizers.ByteLevel.alphabet() if c in vocab}
        if len(kept) > size:
            raise ConfigError(f"--size {size} is too small for {len(t.specials)} special tokens and the 256 byte "
                              "symbols of a byte-level tokenizer; raise --size")
    for k in keep:
        if k not in vocab:
            raise ConfigError(f"--keep token {k!r} is not in the teacher's vocabulary (trim keeps teacher tokens)")
    order = [k for k in keep] + [tok_ for tok_ in sorted(
        (x for x in vocab if vocab[x] not in special_ids and counts[vocab[x]] > 0 and not UNUSED_SLOT.match(x)),
        key=lambda x: (-int(counts[vocab[x]]), vocab[x]))]
    if fill_chars is not None:
        order += _fill_order(t, layout, vocab, counts, special_ids, fill_chars, notes)
    seen = int(np.count_nonzero(counts))
    for token in order:
        if len(kept) >= size:
            break
        need = [n for n in dict.fromkeys(needs(token)) if n not in kept]
        if len(kept) + len(need) <= size:
            kept |= set(need)
    if fill_chars is not None:
        unseen = sum(1 for x in kept if counts[vocab[x]] == 0 and vocab[x] not in special_ids)
        notes.append(f"--fill script: {unseen:,} tokens the corpus never used are in (the corpus used {seen:,})")
    if layout.model == "Unigram" and t.unk not in kept and t.unk is not None:
        kept.add(t.unk)
    non_special = sorted((x for x in kept if vocab[x] not in special_ids), key=lambda x: vocab[x])
    specials = [a["content"] for a in t.specials]
    order_final = specials + non_special
    trim_map = [vocab[x] for x in order_final]
    new_ids = {x: i for i, x in enumerate(order_final)}
    if layout.model == "WordPiece":
        new_model = {**model, "vocab": new_ids}
    elif layout.model == "BPE":
        merges = []
        for m in model.get("merges", []):
            a, b = (m if isinstance(m, list) else m.split(" ", 1))
            if a in new_ids and b in new_ids and _merged(a, b, layout.prefix) in new_ids:
                merges.append([a, b])
        new_model = {**model, "vocab": new_ids, "merges": merges}
    else:
        scores = {p: s for p, s in model["vocab"]}
        new_model = {**model, "vocab": [[x, scores.get(x, 0.0)] for x in order_final],
                     "unk_id": new_ids.get(t.unk) if t.unk else None}
    return _assemble(t, layout, new_model), trim_map


def _script(c: str) -> str:
    """A letter's Unicode script, read off its name ("CYRILLIC SMALL LETTER A" -> "CYRILLIC")."""
    return unicodedata.name(c, "?").split(" ", 1)[0]


def main_scripts(char_counts: Counter) -> set[str]:
    """The scripts that write at least MAIN_SCRIPT_SHARE of the corpus's letters."""
    by_script: Counter = Counter()
    for c, n in char_counts.items():
        if c.isalpha():
            by_script[_script(c)] += n
    total = sum(by_script.values())
    return {s for s, n in by_script.items() if total and n >= MAIN_SCRIPT_SHARE * total}


def corpus_alphabet(char_counts: Counter) -> set[str]:
    """The letters of the main scripts that the corpus writes often enough (ALPHABET_SHARE, case folded), in
    both cases."""
    scripts = main_scripts(char_counts)
    folded: Counter = Counter()
    for c, n in char_counts.items():
        if c.isalpha():
            folded[c.casefold()] += n
    floor = ALPHABET_SHARE * sum(folded.values())
    common = [c for c in char_counts if c.isalpha() and _script(c) in scripts and folded[c.casefold()] >= floor]
    return {v for c in common for v in (c, c.lower(), c.upper()) if len(v) == 1}  # "ю" in: "Ю" too


def _letter_grams(surface: str) -> set[str]:
    """Runs of 2 and 3 letters, case folded: a piece of a neighbouring language that shares the alphabet
    (Bulgarian "във", Ukrainian "якщо", Kyrgyz "бойынша") writes runs that no token of the corpus holds."""
    low = surface.casefold()
    return {low[i:i + n] for n in (2, 3) for i in range(len(low) - n + 1) if low[i:i + n].isalpha()}


def _fill_order(t: _Teacher, layout: _Layout, vocab: dict[str, int], counts: np.ndarray, special_ids: list[int],
                char_counts: Counter, notes: list[str]) -> list[str]:
    """Teacher tokens the corpus never used, written in its alphabet (other characters: ones it used), most
    probable first: a Unigram teacher's piece scores, else vocabulary order."""
    scripts, alphabet = main_scripts(char_counts), corpus_alphabet(char_counts)
    grams = {g for x, i in vocab.items() if counts[i] > 0 for g in _letter_grams(_surface(x, t.scheme, t.prefix))}

    def written_like_the_corpus(token: str) -> bool:
        surface = _surface(token, t.scheme, t.prefix)
        return (bool(surface) and all(c in alphabet if c.isalpha() else c in char_counts for c in surface)
                and _letter_grams(surface) <= grams)

    candidates = [x for x in vocab if counts[vocab[x]] == 0 and vocab[x] not in special_ids
                  and not UNUSED_SLOT.match(x) and written_like_the_corpus(x)]
    if layout.model == "Unigram":
        score = {p: s for p, s in t.spec["model"]["vocab"]}
        candidates.sort(key=lambda x: (-score.get(x, -math.inf), vocab[x]))
    else:
        candidates.sort(key=lambda x: vocab[x])
    notes.append(f"--fill script: scripts {', '.join(sorted(scripts)) or 'none'} ({len(alphabet)} letters); "
                 f"{len(candidates):,} unseen teacher tokens written in them")
    return candidates


# ---------------------------------------------------------------- output


def _write_tokenizer(out: Path, student: Tokenizer, t: _Teacher, layout: _Layout, trim_map: list[int] | None,
                     teacher_fingerprint: str) -> tuple[dict, str]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json (+ trim_map.json), each atomically.

    Returns the tokenizer_config and the student's fingerprint, taken from the JSON written.
    """
    out.mkdir(parents=True, exist_ok=True)
    roles = special_tokens(student, t.config)
    smap = {f"{r}_token": student.id_to_token(i) for r, i in sorted(roles.items()) if r in _ROLE_KEYS}
    extra = [a["content"] for a in t.specials if a["content"] not in smap.values()]
    if extra:
        smap["additional_special_tokens"] = extra
    same_family = layout.model.lower() == t.family
    cls = t.tokenizer_class if (same_family and t.tokenizer_class) else "PreTrainedTokenizerFast"
    config: dict[str, Any] = {"tokenizer_class": cls, **smap,
                              "model_max_length": t.model_max_length or 512,
                              "clean_up_tokenization_spaces": bool(t.config.get("clean_up_tokenization_spaces", False))}
    if cls.startswith("Bert"):
        norm = t.spec.get("normalizer") or {}
        config["do_lower_case"] = bool(norm.get("lowercase", t.config.get("do_lower_case", False)))
    text = student.to_str(pretty=True)
    write_atomic(out / "tokenizer.json", text + "\n")
    student_fingerprint = spec_fingerprint(json.loads(text))
    del text
    write_atomic(out / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    write_atomic(out / "special_tokens_map.json", json.dumps(smap, indent=2, ensure_ascii=False) + "\n")
    if trim_map is not None:
        write_atomic(out / "trim_map.json", json.dumps(
            {"teacher_fingerprint": teacher_fingerprint, "student_to_teacher": trim_map}) + "\n")
    elif (out / "trim_map.json").exists():
        (out / "trim_map.json").unlink()  # a stale map from an earlier trim run would mislead
    return config, student_fingerprint


# ---------------------------------------------------------------- report


def _encode(tok: Tokenizer, lines: list[str]) -> np.ndarray:
    """All ids of the lines' encodings (no special tokens), concatenated."""
    # small batches: a batch's Encodings (offsets, masks, ...) are the report's largest transient memory
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: faster (tokenizers >= 0.20)
    parts = [np.asarray(enc.ids, dtype=np.int64) for start in range(0, len(lines), _REPORT_BATCH)
             for enc in encode(lines[start:start + _REPORT_BATCH], add_special_tokens=False)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _stats(vocab: list[str], ids: np.ndarray, words: int, unk_id: int | None, scheme: str, prefix: str,
           specials: set[int], hidden: int | None) -> TokenizerStats:
    n_tok = len(ids)
    n_unk = int((ids == unk_id).sum()) if unk_id is not None else 0
    size = len(vocab)
    # a one-character surface has at most one marker before it; the length test skips most of the vocabulary
    longest = max(len(prefix), 1) + 1
    single = sum(1 for i, v in enumerate(vocab)
                 if 0 < len(v) <= longest and i not in specials and len(_surface(v, scheme, prefix)) == 1)
    return TokenizerStats(size, n_unk / max(n_tok, 1), n_tok / max(words, 1), single, single / max(size, 1),
                          size * hidden if hidden else None)


@dataclass
class _TeacherMeasure:
    """The teacher's half of the report: it needs no student, so it can run while the student trains."""

    fingerprint: str
    words: int  # whitespace-separated words in the sample
    ids: np.ndarray  # the sample's teacher ids, concatenated
    stats: TokenizerStats
    entries: np.ndarray  # ids of the real vocabulary entries: no specials, no unused slots


def _measure_teacher(t: _Teacher, lines: list[str]) -> _TeacherMeasure:
    roles = special_tokens(t.tok, t.config)  # the roles the Aligner finds
    special = {int(i) for i in roles.values()} | {a["id"] for a in t.specials}
    vocab = vocab_list(t.tok)
    words = sum(len(ln.split()) for ln in lines)
    ids = _encode(t.tok, lines)
    stats = _stats(vocab, ids, words, roles.get("unk"), t.scheme, t.prefix, special, t.hidden_size)
    entries = np.array([i for i, v in enumerate(vocab) if i not in special and v and not UNUSED_SLOT.match(v)],
                       dtype=np.int64)
    return _TeacherMeasure(spec_fingerprint(t.spec), words, ids, stats, entries)


def _report(t: _Teacher, tm: _TeacherMeasure, student: Tokenizer, student_config: dict, student_fingerprint: str,
            lines: list[str], encoded: Future, out: Path, algorithm: str, size: int, teacher: TokenizerLike,
            sources: list, n_lines: int, n_trained: int, coverage: float, alphabet: int, dropped: int,
            min_frequency: int, kept: int, eval_source: str, notes: list[str], started: float) -> VocabReport:
    """The report; `encoded` is the student's encoding of `lines`, on its way."""
    from ..aligner import Aligner

    aligner = Aligner(t.tok, student, teacher_config=t.config, student_config=student_config)
    s_unk = aligner.student_roles.get("unk")
    ss = detect_scheme(student)
    s_stats = _stats(aligner.student_vocab, encoded.result(), tm.words, s_unk, ss.name, ss.continuation_prefix,
                     set(range(len(t.specials))), t.hidden_size)
    lengths = np.diff(aligner.table.offsets)
    entries = tm.entries
    ids = aligner.table.ids
    if s_unk is not None and len(entries):
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        unk_rows = np.zeros(len(lengths), dtype=bool)
        unk_rows[row_of[ids == s_unk]] = True
        unk_share = float(unk_rows[entries].mean())
    else:
        unk_share = 0.0
    fert = float(lengths[tm.ids].mean()) if len(tm.ids) else math.nan
    return VocabReport(
        out=str(out), algorithm=algorithm, requested_size=size, vocab_size=s_stats.vocab_size,
        teacher=str(teacher) if isinstance(teacher, (str, Path)) else type(teacher).__name__,
        teacher_fingerprint=tm.fingerprint, student_fingerprint=student_fingerprint,
        corpus=[str(s) for s in sources], lines_read=n_lines, lines_trained=n_trained, coverage=coverage,
        alphabet_size=alphabet, dropped_characters=dropped, min_frequency=min_frequency, kept_tokens=kept,
        eval_source=eval_source, eval_lines=len(lines), eval_words=tm.words, teacher_stats=tm.stats,
        student_stats=s_stats, fertility=fert, teacher_entries_unk_share=unk_share,
        split_length_mean=float(lengths[entries].mean()) if len(entries) else 0.0,
        split_length_max=int(lengths[entries].max()) if len(entries) else 0,
        seconds=round(time.perf_counter() - started, 3), notes=notes)
