"""sweep: pick the student's vocabulary size, width and layers for a parameter budget by short trial runs.

For each vocabulary size: build-vocab and align once (sentence-sized examples, and a held-out part); for each
layer count: the widest student that fits the budget with that vocabulary, init-student, a short distill with
the default recipe, and its held-out teacher agreement (the Spearman between the pairwise cosine similarities
of the student's and the teacher's sentence embeddings, never STS data). The trials are shown as a table; the
winner's initialised student is copied to OUT/student, ready for a full `distill` on OUT's shards. Finished
trials are kept: a rerun of the same command picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..files import write_atomic

log = logging.getLogger(__name__)

WIDTH_STEP = 24  # widths tried: multiples of 24 (12 heads of an even size)
FFN_RATIO = 3  # FFN width / hidden width of the students (the measured recipe's 792 / 264)
# 4K lost to 8K and 16K at every layer count at a 4M budget, and 24K beat 16K (benchmarks/RESULTS.md)
VOCAB_SIZES = (8000, 16000, 24000)


@dataclass
class Trial:
    """One candidate shape and what its short run reached."""

    vocab: int
    layers: int
    hidden: int
    heads: int
    intermediate: int
    params: int  # encoder parameters (embeddings + layers; the MLM head left out)
    steps: int = 0
    seconds: float = 0.0
    agreement: float | None = None  # held-out teacher agreement after the trial
    sentence_cosine: float | None = None  # held-out cosine of the sentence embeddings (projected)
    folder: str = ""


@dataclass
class SweepReport:
    """The trials, best first, and where the winner was written."""

    budget: int
    trials: list[Trial]
    winner: Trial | None
    student: str | None
    shards: dict[str, str] = field(default_factory=dict)  # vocabulary size -> its training shards

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        head = (f"{'vocab':>6} {'shape':>18} {'params':>8} {'steps':>6} {'min':>5} {'agreement':>9} "
                f"{'sent.cos':>8}")
        rows = [f"parameter budget {self.budget / 1e6:.2f}M; score: held-out teacher agreement", head]
        for t in self.trials:
            mark = "  <- winner" if self.winner is not None and t.folder == self.winner.folder else ""
            rows.append(f"{t.vocab:>6} {f'{t.layers}x{t.hidden} (ffn {t.intermediate})':>18} {t.params / 1e6:>7.2f}M "
                        f"{t.steps:>6} {t.seconds / 60:>5.1f} {_fmt(t.agreement):>9} {_fmt(t.sentence_cosine):>8}"
                        f"{mark}")
        if self.student:
            rows.append(f"winner: {self.student} (distill it on {self.shards[str(self.winner.vocab)]})")
        return "\n".join(rows)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def parse_budget(text: str | int) -> int:
    """'5M', '500K', '5e6' or 5000000 -> parameters."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget must be a parameter count like 5M, 500K or 5000000, got {text!r}")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    return int(value)


def encoder_params(vocab: int, hidden: int, layers: int, intermediate: int, positions: int = 512) -> int:
    """Parameters of a BertModel of this shape without pooler: embeddings (words, positions, two token types,
    LayerNorm) and per layer attention (4 maps with biases), FFN (2 maps with biases) and two LayerNorms."""
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden * intermediate + intermediate + hidden + 4 * hidden
    return embeddings + layers * per_layer


@dataclass(frozen=True)
class Limits:
    """What init-student can copy from the teacher: widths, FFN size, heads and head size at most the teacher's."""

    hidden: int = 1 << 30
    intermediate: int = 1 << 30
    heads: int = 1 << 30
    head_size: int = 64


def heads_for(hidden: int, limits: Limits = Limits()) -> int | None:
    """The fewest heads that divide `hidden` into heads no larger than the teacher's (None: no such count)."""
    for heads in range(1, min(hidden, limits.heads) + 1):
        if hidden % heads == 0 and hidden // heads <= limits.head_size:
            return heads
    return None


def widest(budget: int, vocab: int, layers: int, limits: Limits = Limits()) -> Trial | None:
    """The widest student of `layers` layers (width a multiple of WIDTH_STEP, FFN FFN_RATIO x the width, both
    within the teacher's `limits`) with at most `budget` encoder parameters, or None."""
    best = None
    for hidden in range(WIDTH_STEP, min(limits.hidden, 1 << 16) + 1, WIDTH_STEP):
        heads, ffn = heads_for(hidden, limits), min(FFN_RATIO * hidden, limits.intermediate)
        params = encoder_params(vocab, hidden, layers, ffn)
        if params > budget:
            break
        if heads is not None:
            best = Trial(vocab, layers, hidden, heads, ffn, params)
    return best


def teacher_limits(teacher: str | Path) -> Limits:
    """The teacher's width, FFN size, heads and head size (init-student copies within them)."""
    from ..models import read_config

    c = read_config(teacher)
    return Limits(int(c.hidden_size), int(c.intermediate_size), int(c.num_attention_heads),
                  int(c.hidden_size) // int(c.num_attention_heads))


def sweep(*, teacher: str | Path, corpus: Sequence[str | Path], eval_corpus: Sequence[str | Path],
          out: str | Path, budget: int | str, vocab_sizes: Sequence[int] = VOCAB_SIZES,
          layers: Sequence[int] = (2, 3, 4), steps: int = 150, batch_size: int = 64, max_length: int = 64,
          prompt: str = "", algorithm: str | None = None, seed: int = 0, progress: bool = True) -> SweepReport:
    """Try every (vocabulary size, layer count) at the widest width the budget allows; write the best to OUT.

    `eval_corpus`: held-out text (not in `corpus`) on which the trials are scored. `algorithm`: build-vocab's
    (default: trained in the teacher's family; "trim" keeps the teacher's most frequent tokens).
    """
    budget = parse_budget(budget)
    _check(budget, vocab_sizes, layers, steps, batch_size)
    if not eval_corpus:
        raise ConfigError("--eval-corpus: held-out text (not in the training corpus) is needed to score the trials")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    limits = teacher_limits(teacher)
    trials = [t for v in vocab_sizes for n in layers if (t := widest(budget, v, n, limits)) is not None]
    if not trials:
        raise ConfigError(f"--budget {budget:,}: no student of {list(layers)} layers with a vocabulary of "
                          f"{list(vocab_sizes)} fits (the embeddings alone need about vocabulary x {WIDTH_STEP}); "
                          "raise the budget or lower --vocab")
    shards = {}
    for vocab in sorted({t.vocab for t in trials}):
        shards[str(vocab)] = str(_data(out / f"v{vocab}", teacher, corpus, eval_corpus, vocab, max_length, prompt,
                                       algorithm, seed, progress))
    for t in trials:
        _run_trial(t, out, teacher, steps, batch_size, seed, progress)
    ranked = sorted(trials, key=lambda t: -(t.agreement if t.agreement is not None else -2.0))
    winner = ranked[0] if ranked[0].agreement is not None else None
    student = None
    if winner is not None:
        student = out / "student"
        shutil.rmtree(student, ignore_errors=True)
        shutil.copytree(Path(winner.folder) / "student", student)
        student = str(student)
    report = SweepReport(budget, ranked, winner, student, shards)
    write_atomic(out / "sweep_report.json", report.to_json() + "\n")
    return report


def _check(budget: int, vocab_sizes: Sequence[int], layers: Sequence[int], steps: int, batch_size: int) -> None:
    if budget < 1:
        raise ConfigError(f"--budget must be positive, got {budget}")
    if not vocab_sizes or any(v < 100 for v in vocab_sizes):
        raise ConfigError(f"--vocab sizes must be at least 100, got {list(vocab_sizes)}")
    if not layers or any(n < 1 for n in layers):
        raise ConfigError(f"--layers must be positive, got {list(layers)}")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"--steps and --batch-size must be positive, got {steps} and {batch_size}")


def _data(folder: Path, teacher: str | Path, corpus: Sequence[str | Path], eval_corpus: Sequence[str | Path],
          vocab: int, max_length: int, prompt: str, algorithm: str | None, seed: int, progress: bool) -> Path:
    """The vocabulary of this size and its training and held-out shards (kept from an earlier run)."""
    from .align import align
    from .build_vocab import build_vocab

    tok = folder / "tok"
    done = tok / "vocab_report.json"
    if done.exists():
        made = json.loads(done.read_text(encoding="utf-8")).get("algorithm")
        if (made == "trim") if algorithm is None else (made != algorithm):  # None: any trained vocabulary
            raise ConfigError(f"{tok}: an earlier sweep built this vocabulary with --algorithm {made}, this one asks "
                              f"for {algorithm or 'the default'}; use another --out")
    else:
        from ..tokenization import prompt_tokens

        keep = prompt_tokens(teacher, prompt) if algorithm == "trim" else None
        build_vocab([str(c) for c in corpus], size=vocab, teacher=teacher, out=str(tok), seed=seed,
                    algorithm=algorithm, keep=keep, progress=progress)
    common = dict(teacher=str(teacher), student=str(tok), max_length=max_length, alignment="split",
                  split="sentence", prompt=prompt, progress=progress)
    align([str(c) for c in corpus], out=str(folder / "shards"), **common)
    align([str(c) for c in eval_corpus], out=str(folder / "shards-valid"), max_lines=2000, **common)
    return folder / "shards"


def _run_trial(t: Trial, out: Path, teacher: str | Path, steps: int, batch_size: int, seed: int,
               progress: bool) -> None:
    """init-student and a short distill of one shape; its scores from the held-out evaluation."""
    from .distill import distill
    from .init_student import init_student

    folder = out / f"v{t.vocab}-{t.layers}x{t.hidden}"
    t.folder, t.steps = str(folder), steps
    done = folder / "trial.json"
    if done.exists():
        saved = json.loads(done.read_text(encoding="utf-8"))
        if saved.get("steps") == steps:
            t.seconds, t.agreement, t.sentence_cosine = saved["seconds"], saved["agreement"], saved["sentence_cosine"]
            return
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished trial starts over: it is short
    started = time.perf_counter()
    data = out / f"v{t.vocab}"
    init_student(teacher=str(teacher), tokenizer=str(data / "tok"), out=str(folder / "student"), layers=t.layers,
                 hidden=t.hidden, heads=t.heads, intermediate=t.intermediate, seed=seed)
    report = distill(teacher=teacher, student=folder / "student", data=[data / "shards"],
                     eval_data=[data / "shards-valid"], out=folder / "run", max_steps=steps, batch_size=batch_size,
                     warmup_steps=max(1, steps // 10), seed=seed, checkpoint_minutes=0, eval_batches=8,
                     progress=progress)
    evaluation: dict[str, Any] = report.evaluation or {}
    t.seconds = time.perf_counter() - started
    t.agreement = evaluation.get("eval_teacher_agreement")
    t.sentence_cosine = evaluation.get("eval_sentence_cosine")
    write_atomic(done, json.dumps({"steps": steps, "seconds": t.seconds, "agreement": t.agreement,
                                   "sentence_cosine": t.sentence_cosine}) + "\n")
    log.info("sweep: %s: agreement %s", folder.name, t.agreement)
