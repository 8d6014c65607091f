"""evaluate: size and speed, fidelity, semantic similarity and linear probes, teacher beside student.

`evaluate(teacher=..., student=..., out=...)` writes `report.md`, `report.json`
and PNG plots into `out` and returns an `EvalReport`. Sentence embeddings are
the attention-masked mean of the last hidden layer (the teacher is a
sentence-transformers model trained for exactly this pooling).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..agreement import embed, spearman, teacher_agreement
from ..aligner import fertility_histogram
from ..errors import ConfigError, CorpusError, ModelError
from ..files import write_atomic
from ..models import load_model
from ..models import read_config as read_model_config
from ..tokenization import load_tokenizer, read_config, special_tokens
from .export import read_prompt

log = logging.getLogger(__name__)

DEFAULT_SPEED_SHAPES: tuple[tuple[int, int], ...] = ((1, 512), (16, 512))
PROJECTION_FILE = "projection.safetensors"


# ----------------------------------------------------------------------------- report


@dataclass
class ModelSize:
    """Size of one model's encoder (the part that makes embeddings; an MLM head is left out)."""

    path: str
    params_m: float
    embedding_params_m: float
    vocab_k: float
    hidden: int
    layers: int
    disk_mb: float


@dataclass
class SpeedRow:
    """Forward-pass time and peak memory of teacher and student at one batch shape on one device."""

    device: str
    batch: int
    seq_len: int
    teacher_ms: float
    student_ms: float
    speedup: float
    teacher_peak_mb: float
    student_peak_mb: float
    memory_ratio: float


@dataclass
class Fidelity:
    """How closely the student follows the teacher on held-out text."""

    corpus: list[str]
    sentences: int
    teacher_agreement: float | None
    student_mlm_accuracy: float | None
    masked_tokens: int
    teacher_mlm_accuracy: float | None = None


@dataclass
class StsResult:
    """Zero-shot Spearman between embedding cosine and the gold score (x100 nowhere: plain correlations)."""

    name: str
    path: str
    pairs: int
    teacher: float
    student: float
    student_projected: float | None
    tfidf: float
    retention: float
    retention_projected: float | None
    # drop-in: the student's (projected) first sentences against the teacher's second sentences
    cross_model: float | None = None


@dataclass
class Retrieval:
    """Drop-in retrieval: documents indexed with the teacher, queried with the student (projected)."""

    corpus: list[str]
    queries: int
    k: int
    teacher_recall: float  # teacher queries against the teacher's index: the ceiling
    student_recall: float  # student queries (projected into the teacher's space) against the teacher's index
    tfidf_recall: float


@dataclass
class ProbeResult:
    """Accuracy of a logistic-regression probe on frozen embeddings, with a TF-IDF baseline."""

    name: str
    train: str
    test: str
    train_examples: int
    test_examples: int
    labels: int
    teacher: float
    student: float
    tfidf: float
    retention: float


@dataclass
class EvalReport:
    """Everything `evaluate` measured; serialises to `report.json`."""

    teacher: str
    student: str
    out: str
    device: str
    seed: int
    size: dict[str, ModelSize]
    size_ratio: dict[str, float]
    speed: list[SpeedRow] = field(default_factory=list)
    speed_method: str = ""
    fidelity: Fidelity | None = None
    sts: list[StsResult] = field(default_factory=list)
    tasks: list[ProbeResult] = field(default_factory=list)
    fertility: dict[str, Any] | None = None
    retrieval: Retrieval | None = None
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    embedding_method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        """The report as Markdown tables (what the CLI prints and `report.md` holds)."""
        t, s = self.size["teacher"], self.size["student"]
        lines = [
            "# vocabshrink evaluation",
            "",
            f"- teacher: `{self.teacher}`",
            f"- student: `{self.student}`",
            f"- device (quality): {self.device}; seed {self.seed}",
            f"- embeddings: {self.embedding_method}",
            "",
            "## Size",
            "",
            "| | teacher | student | teacher / student |",
            "|---|---:|---:|---:|",
            f"| parameters (M) | {t.params_m:.2f} | {s.params_m:.2f} | {self.size_ratio['params']:.2f}x |",
            f"| embedding parameters (M) | {t.embedding_params_m:.2f} | {s.embedding_params_m:.2f} "
            f"| {self.size_ratio['embedding_params']:.2f}x |",
            f"| vocabulary (K) | {t.vocab_k:.1f} | {s.vocab_k:.1f} | {self.size_ratio['vocab']:.2f}x |",
            f"| hidden x layers | {t.hidden} x {t.layers} | {s.hidden} x {s.layers} | |",
            f"| size on disk (MB) | {t.disk_mb:.1f} | {s.disk_mb:.1f} | {self.size_ratio['disk']:.2f}x |",
            "",
        ]
        if self.speed:
            lines += [
                "## Speed and memory",
                "",
                "| device | batch x seq | teacher ms | student ms | speed-up | teacher peak MB "
                "| student peak MB | memory ratio |",
                "|---|---|---:|---:|---:|---:|---:|---:|",
            ]
            for r in self.speed:
                lines.append(
                    f"| {r.device} | {r.batch} x {r.seq_len} | {r.teacher_ms:.1f} | {r.student_ms:.1f} "
                    f"| {r.speedup:.2f}x | {r.teacher_peak_mb:.0f} | {r.student_peak_mb:.0f} | {r.memory_ratio:.2f}x |"
                )
            lines += ["", f"Method: {self.speed_method}", ""]
        if self.fidelity is not None:
            f = self.fidelity
            lines += ["## Fidelity on held-out text", "", f"{f.sentences} sentences from {', '.join(f.corpus)}.", "",
                      "| metric | value |", "|---|---:|",
                      f"| teacher agreement (Spearman of pairwise cosines) | {_fmt(f.teacher_agreement)} |",
                      f"| student MLM accuracy ({f.masked_tokens} masked tokens) | {_fmt(f.student_mlm_accuracy)} |"]
            if f.teacher_mlm_accuracy is not None:
                lines.append(f"| teacher MLM accuracy (its own tokens) | {_fmt(f.teacher_mlm_accuracy)} |")
            lines.append("")
        if self.sts:
            lines += ["## Semantic similarity (zero-shot Spearman, cosine of mean-pooled embeddings)", "",
                      "| data | pairs | teacher | student | student projected | TF-IDF | retention "
                      "| retention projected |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for r in self.sts:
                lines.append(f"| {r.name} | {r.pairs} | {r.teacher:.4f} | {r.student:.4f} | {_fmt(r.student_projected)} "
                             f"| {r.tfidf:.4f} | {r.retention:.1%} | {_pct(r.retention_projected)} |")
            lines.append("")
        lines += _drop_in_markdown(self)
        if self.tasks:
            lines += ["## Linear probes (logistic regression on frozen embeddings; accuracy)", "",
                      "| task | train / test | labels | teacher | student | TF-IDF baseline | retention |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            for r in self.tasks:
                lines.append(f"| {r.name} | {r.train_examples} / {r.test_examples} | {r.labels} | {r.teacher:.4f} "
                             f"| {r.student:.4f} | {r.tfidf:.4f} | {r.retention:.1%} |")
            lines.append("")
        if self.plots:
            lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in self.plots] + [""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)


def _drop_in_markdown(report: EvalReport) -> list[str]:
    """Whether an index built with the teacher survives the swap to the student."""
    cross = [r for r in report.sts if r.cross_model is not None]
    if not cross and report.retrieval is None:
        return []
    lines = ["## Drop-in: the student beside a teacher-built index", "", "| measure | teacher | student | TF-IDF |",
             "|---|---:|---:|---:|"]
    for r in cross:
        lines.append(f"| {r.name}: Spearman, student first sentences x teacher second sentences | {r.teacher:.4f} "
                     f"| {r.cross_model:.4f} | {r.tfidf:.4f} |")
    if report.retrieval is not None:
        q = report.retrieval
        lines.append(f"| recall@{q.k}: {q.queries} held-out lines, first half queries the teacher-indexed second "
                     f"halves | {q.teacher_recall:.4f} | {q.student_recall:.4f} | {q.tfidf_recall:.4f} |")
    return lines + [""]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


# ----------------------------------------------------------------------------- models


@dataclass
class _Loaded:
    path: str
    model: Any  # the full model (with an MLM head where the checkpoint has one)
    encoder: Any  # the base encoder that produces hidden states
    tokenizer: Any  # tokenizers.Tokenizer, padding and truncation off
    pad_id: int
    mask_id: int | None
    special: set[int]
    max_length: int  # tokens per sentence for the quality measures
    has_mlm_head: bool
    positions: int  # the model's position embeddings: the longest input it takes
    prompt: str = ""  # put before every sentence this model embeds (e.g. "query: " for the E5 models)


def _load(path: str | os.PathLike, device: Any, max_length: int) -> _Loaded:
    """Load a model directory with its tokenizer; an MLM head is kept when the checkpoint has one."""
    src = str(path)
    config = read_model_config(src)
    has_mlm = any(a.endswith("ForMaskedLM") for a in (getattr(config, "architectures", None) or []))
    model = load_model(src, head="mlm" if has_mlm else "base")
    model.to(device)
    encoder = model.base_model if has_mlm else model
    tok = load_tokenizer(src)
    roles = special_tokens(tok, read_config(src))
    if "pad" not in roles:
        raise ModelError(f"{src}: the tokenizer has no padding token; add one (e.g. [PAD]) to its special tokens")
    if tok.get_vocab_size(with_added_tokens=True) > config.vocab_size:
        raise ModelError(f"{src}: the tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens but the "
                         f"model only {config.vocab_size} embeddings: tokenizer and model do not belong together")
    limit = int(getattr(config, "max_position_embeddings", max_length) or max_length)
    return _Loaded(src, model, encoder, tok, roles["pad"], roles.get("mask"), set(roles.values()),
                   min(max_length, limit), has_mlm, limit)


def _encode(m: _Loaded, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids with the tokenizer's special tokens, cut to the model's length (the last token, [SEP], kept)."""
    out = []
    for enc in m.tokenizer.encode_batch(list(sentences)):
        ids = enc.ids
        if len(ids) > m.max_length:
            ids = ids[: m.max_length - 1] + ids[-1:]
        out.append(ids)
    return out


def _batches(ids: list[list[int]], batch_size: int) -> Iterable[np.ndarray]:
    """Index batches over examples sorted by length, so that little padding is computed."""
    order = np.argsort([len(x) for x in ids], kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i: i + batch_size]


def _pad(ids: list[list[int]], idx: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(ids[i]) for i in idx)
    arr = np.full((len(idx), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        arr[row, : len(ids[i])] = ids[i]
        mask[row, : len(ids[i])] = 1
    return arr, mask


def _embed(m: _Loaded, sentences: Sequence[str], batch_size: int, device: Any) -> np.ndarray:
    """Mean-pooled last-layer embeddings [N, H] (float32), in the input order (the agreement metric's pooling)."""
    return embed(m.model, m.tokenizer, [m.prompt + x for x in sentences], batch_size=batch_size, max_length=m.max_length,
                 device=device)


def _load_projection(student: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The learned student->teacher projection exported by distill, as (weight [H_t, H_s], bias), if any.

    distill describes it in config.json (`vocabshrink_projection`: file, embedding_key); the
    tensors are `maps.<key>.weight` / `maps.<key>.bias`. Without that entry, the pair with the
    highest student layer is used.
    """
    spec: dict[str, Any] = {}
    config_file = Path(student) / "config.json"
    if config_file.is_file():
        try:
            spec = json.loads(config_file.read_text(encoding="utf-8")).get("vocabshrink_projection") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            spec = {}
    file = Path(student) / str(spec.get("file") or PROJECTION_FILE)
    if not file.exists():
        if spec:
            raise ModelError(f"{file}: config.json describes a projection but the file is missing; re-export the "
                             "student with distill or remove `vocabshrink_projection` from its config")
        return None
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(file))
    except Exception as exc:
        raise ModelError(f"{file}: not a readable safetensors file ({exc}); re-export the student with distill") from exc
    weights = {k: v for k, v in tensors.items() if v.ndim == 2 and k.endswith("weight")}
    if not weights:
        raise ModelError(f"{file}: holds no 2-D projection weight")
    key = f"maps.{spec['embedding_key']}.weight" if spec.get("embedding_key") else sorted(weights, key=_layer_order)[-1]
    if key not in weights:
        raise ModelError(f"{file}: no tensor {key!r} (named by config.json's vocabshrink_projection.embedding_key)")
    bias = tensors.get(key[: -len("weight")] + "bias")
    return weights[key].astype(np.float32), None if bias is None else bias.astype(np.float32)


def _layer_order(key: str) -> tuple[int, int, str]:
    """(student layer, teacher layer, key) from keys like `maps.s3_t6.weight` (losses.HiddenProjection)."""
    pair = re.search(r"s(\d+)_t(\d+)", key)
    return (int(pair[1]), int(pair[2]), key) if pair else (-1, -1, key)


def _project(x: np.ndarray, proj: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    w, b = proj
    if w.shape[1] != x.shape[1]:
        if w.shape[0] != x.shape[1]:
            raise ModelError(f"{PROJECTION_FILE}: weight {w.shape} does not fit student embeddings of width {x.shape[1]}")
        w = w.T
    y = x @ w.T
    return y + b if b is not None else y


# ----------------------------------------------------------------------------- size and speed


def _model_size(m: _Loaded) -> ModelSize:
    params = {id(p): p.numel() for p in m.encoder.parameters()}
    emb = m.encoder.get_input_embeddings().weight.numel()
    cfg = m.encoder.config
    disk = 0
    path = Path(m.path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                disk = (path / name).stat().st_size
                break
        else:
            disk = sum(f.stat().st_size for f in path.glob("model-*.safetensors"))
    return ModelSize(m.path, sum(params.values()) / 1e6, emb / 1e6, m.tokenizer.get_vocab_size(with_added_tokens=True) / 1e3,
                     int(cfg.hidden_size), int(cfg.num_hidden_layers), disk / 2**20)


_SPEED_SCRIPT = "import sys; from vocabshrink.stages.evaluate import _speed_worker; _speed_worker(sys.argv[1])"


def _rss_mb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _speed_worker(spec_json: str) -> None:
    """Run in a fresh process: time forward passes of one model and print one JSON line per shape."""
    import resource

    spec = json.loads(spec_json)
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    torch.set_num_threads(spec["threads"])
    config = AutoConfig.from_pretrained(spec["path"])
    model_class = MODEL_MAPPING[type(config)]  # imports the modeling code, so the baseline below excludes it
    before_load = _rss_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = model_class.from_pretrained(spec["path"]).eval()
    vocab = int(model.config.vocab_size)
    rng = torch.Generator().manual_seed(spec["seed"])
    for device in spec["devices"]:
        model.to(device)
        for batch, seq in sorted(spec["shapes"], key=lambda s: s[0] * s[1]):
            ids = torch.randint(0, vocab, (batch, seq), generator=rng).to(device)
            mask = torch.ones_like(ids)
            cuda = device.startswith("cuda")
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            else:
                try:  # reset the kernel's peak-RSS mark (Linux) so each shape gets its own peak
                    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                        fh.write("5")
                except OSError:
                    pass
            times = []
            with torch.inference_mode():
                for i in range(spec["warmup"] + spec["repeats"]):
                    t0 = time.perf_counter()
                    model(input_ids=ids, attention_mask=mask)
                    if cuda:
                        torch.cuda.synchronize()
                    if i >= spec["warmup"]:
                        times.append(time.perf_counter() - t0)
            if cuda:
                peak = torch.cuda.max_memory_allocated() / 2**20
            else:
                hwm = _rss_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                peak = hwm - before_load
            print(json.dumps({"device": device.split(":")[0], "batch": batch, "seq_len": seq,
                              "ms": 1000 * float(np.median(times)), "peak_mb": peak}), flush=True)
        if device.startswith("cuda"):
            model.to("cpu")
            torch.cuda.empty_cache()


def _measure_speed(path: str, shapes: Sequence[tuple[int, int]], devices: list[str], warmup: int, repeats: int,
                   threads: int, seed: int) -> list[dict]:
    spec = {"path": path, "shapes": [list(s) for s in shapes], "devices": devices, "warmup": warmup,
            "repeats": repeats, "threads": threads, "seed": seed}
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-c", _SPEED_SCRIPT, json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise ModelError(f"{path}: the speed measurement failed:\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _speed(teacher: _Loaded, student: _Loaded, shapes: Sequence[tuple[int, int]], warmup: int, repeats: int,
           threads: int | None, seed: int) -> tuple[list[SpeedRow], str]:
    import torch

    threads = threads or torch.get_num_threads()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    results: dict[str, dict[tuple[str, int, int], dict]] = {}
    fitted: dict[str, list[tuple[int, int]]] = {}
    for who, m in (("teacher", teacher), ("student", student)):
        # A shape longer than the model's position embeddings runs at the longest it takes.
        fitted[who] = [(b, min(s, m.positions)) for b, s in shapes]
        results[who] = {(r["device"], r["batch"], r["seq_len"]): r
                        for r in _measure_speed(m.path, fitted[who], devices, warmup, repeats, threads, seed)}
    for device in devices:
        for (batch, t_seq), (_, s_seq) in zip(fitted["teacher"], fitted["student"]):
            t, s = results["teacher"][(device, batch, t_seq)], results["student"][(device, batch, s_seq)]
            if t_seq != s_seq:
                log.warning("speed at batch %d: teacher runs %d tokens, the student at most %d", batch, t_seq, s_seq)
            rows.append(SpeedRow(device, batch, min(t_seq, s_seq), t["ms"], s["ms"], t["ms"] / max(s["ms"], 1e-9),
                                 t["peak_mb"], s["peak_mb"], t["peak_mb"] / max(s["peak_mb"], 1e-9)))
    method = (f"encoder forward pass (no MLM head) on random token ids with a full attention mask, one fresh process "
              f"per model, {threads} CPU thread(s), torch {torch.__version__}; {warmup} warm-up pass(es), then the "
              f"median of {repeats} timed passes (time.perf_counter, torch.inference_mode, fp32). CPU peak memory: "
              "the process's peak resident set size during the passes (VmHWM, reset per shape) minus its size before "
              "the model was loaded, i.e. weights plus activations. GPU peak memory: torch.cuda.max_memory_allocated.")
    return rows, method


# ----------------------------------------------------------------------------- data files


def _read_tsv(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a GLUE-style TSV (no quoting)."""
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"{p}: no such file")
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{p}: invalid UTF-8 at byte {exc.start}; fix the file") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise CorpusError(f"{p}: needs a header row and at least one example")
    return [h.strip().lower() for h in rows[0]], rows[1:]


def read_sts(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """sentence1, sentence2 and score columns of a GLUE STS-B style TSV."""
    header, rows = _read_tsv(path)
    missing = [c for c in ("sentence1", "sentence2", "score") if c not in header]
    if missing:
        raise CorpusError(f"{path}: no {', '.join(missing)} column in the header {header}; "
                          "--sts expects the GLUE STS-B layout (sentence1, sentence2, score)")
    i1, i2, i3 = (header.index(c) for c in ("sentence1", "sentence2", "score"))
    a, b, scores = [], [], []
    for n, row in enumerate(rows, start=2):
        try:
            a.append(row[i1])
            b.append(row[i2])
            scores.append(float(row[i3]))
        except (IndexError, ValueError):
            raise CorpusError(f"{path}, line {n}: expected {len(header)} tab-separated fields with a numeric score, "
                              f"got {row!r}") from None
    return a, b, np.asarray(scores, dtype=np.float64)


def read_labeled(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Text and label columns of a TSV with a header (`sentence`/`text` and `label`; else first and last column)."""
    header, rows = _read_tsv(path)
    label_col = header.index("label") if "label" in header else len(header) - 1
    text_col = next((header.index(c) for c in ("sentence", "text") if c in header), 0)
    if text_col == label_col:
        raise CorpusError(f"{path}: cannot tell the text column from the label column in the header {header}")
    texts, labels = [], []
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise CorpusError(f"{path}, line {n}: {len(row)} fields, the header has {len(header)}")
        texts.append(row[text_col])
        labels.append(row[label_col].strip())
    return texts, labels


def parse_task(spec: str | tuple[str, str, str]) -> tuple[str, str, str]:
    """'NAME=TRAIN.tsv,TEST.tsv' -> (name, train, test)."""
    if not isinstance(spec, str):
        name, train, test = spec
        return str(name), str(train), str(test)
    name, sep, files = spec.partition("=")
    parts = files.split(",")
    if not sep or not name or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--task {spec!r}: expected NAME=TRAIN.tsv,TEST.tsv")
    return name, parts[0], parts[1]


def _corpus_sentences(corpus: Sequence[str], limit: int) -> list[str]:
    from ..corpus import iter_documents, require_text

    out = []
    for line in require_text(iter_documents(corpus, split="line"), "--corpus"):
        if line.strip():
            out.append(line.strip())
            if len(out) >= limit:
                break
    return out


# ----------------------------------------------------------------------------- quality


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(na * nb, axis=1)


def _sts(path: str, teacher: _Loaded, student: _Loaded, proj: Any, batch_size: int, device: Any) -> StsResult:
    from sklearn.feature_extraction.text import TfidfVectorizer

    a, b, gold = read_sts(path)
    n = len(a)
    t = _embed(teacher, a + b, batch_size, device)
    s = _embed(student, a + b, batch_size, device)
    t_rho = spearman(_cosine_rows(t[:n], t[n:]), gold)
    s_rho = spearman(_cosine_rows(s[:n], s[n:]), gold)
    p_rho = cross = None
    if proj is not None:
        p = _project(s, proj)
        p_rho = spearman(_cosine_rows(p[:n], p[n:]), gold)
        cross = spearman(_cosine_rows(p[:n], t[n:]), gold)
    elif s.shape[1] == t.shape[1]:  # same width, no projection: the student's raw space is meant to be the teacher's
        cross = spearman(_cosine_rows(s[:n], t[n:]), gold)
    tfidf = TfidfVectorizer().fit(a + b)
    va, vb = tfidf.transform(a), tfidf.transform(b)
    tf_cos = np.asarray(va.multiply(vb).sum(axis=1)).ravel()  # rows are L2-normalised: the dot is the cosine
    tf_rho = spearman(tf_cos, gold)
    return StsResult(Path(path).stem if Path(path).stem not in ("dev", "test", "train") else
                     f"{Path(path).parent.name}/{Path(path).stem}", str(path), n, t_rho, s_rho, p_rho, tf_rho,
                     s_rho / t_rho if t_rho else float("nan"),
                     None if p_rho is None else (p_rho / t_rho if t_rho else float("nan")), cross)


def _retrieval(corpus: list[str], teacher: _Loaded, student: _Loaded, proj: Any, sentences: Sequence[str],
               batch_size: int, device: Any, k: int = 10) -> Retrieval | None:
    """recall@k of teacher-indexed second halves of held-out lines, queried by their first halves."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    halves = [(" ".join(w[: len(w) // 2]), " ".join(w[len(w) // 2:])) for w in (x.split() for x in sentences)
              if len(w) >= 8]
    if len(halves) < 20:
        return None
    queries, docs = [q for q, _ in halves], [d for _, d in halves]
    index = _embed(teacher, docs, batch_size, device)
    student_q = _embed(student, queries, batch_size, device)
    if proj is not None:
        student_q = _project(student_q, proj)
    elif student_q.shape[1] != index.shape[1]:
        return None
    tfidf = TfidfVectorizer().fit(queries + docs)
    return Retrieval(corpus, len(halves), k, _recall(_embed(teacher, queries, batch_size, device), index, k),
                     _recall(student_q, index, k),
                     _recall(tfidf.transform(queries).toarray(), tfidf.transform(docs).toarray(), k))


def _recall(queries: np.ndarray, docs: np.ndarray, k: int) -> float:
    """Share of queries i whose document i is among the k most cosine-similar documents."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
    scores = q @ d.T
    own = np.diagonal(scores)
    rank = (scores > own[:, None]).sum(axis=1)  # documents strictly closer than the right one
    return float((rank < k).mean())


def _probe(name: str, train: str, test: str, teacher: _Loaded, student: _Loaded, batch_size: int, device: Any,
           seed: int, max_train: int | None) -> ProbeResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = read_labeled(train)
    x_test, y_test = read_labeled(test)
    if max_train is not None and len(x_train) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(x_train), max_train, replace=False))
        x_train, y_train = [x_train[i] for i in keep], [y_train[i] for i in keep]
    classes = sorted(set(y_train))
    if len(classes) < 2:
        raise CorpusError(f"{train}: the training set of task {name!r} has a single label {classes}")
    unseen = sorted(set(y_test) - set(classes))
    if unseen:
        raise CorpusError(f"{test}: labels {unseen[:5]} of task {name!r} never occur in {train}")

    def fit(features_train: Any, features_test: Any, scale: bool) -> float:
        clf = LogisticRegression(max_iter=2000, random_state=seed)
        model = make_pipeline(StandardScaler(), clf) if scale else clf
        model.fit(features_train, y_train)
        return float(np.mean(model.predict(features_test) == np.asarray(y_test)))

    scores = {}
    for who, m in (("teacher", teacher), ("student", student)):
        scores[who] = fit(_embed(m, x_train, batch_size, device), _embed(m, x_test, batch_size, device), True)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    scores["tfidf"] = fit(vec.fit_transform(x_train), vec.transform(x_test), False)
    return ProbeResult(name, str(train), str(test), len(x_train), len(x_test), len(classes), scores["teacher"],
                       scores["student"], scores["tfidf"], scores["student"] / scores["teacher"])


def _mlm_accuracy(m: _Loaded, sentences: Sequence[str], batch_size: int, device: Any, seed: int,
                  rate: float = 0.15) -> tuple[float | None, int]:
    """Share of masked tokens the MLM head restores: `rate` of the non-special tokens -> [MASK], seeded."""
    import torch

    if not m.has_mlm_head or m.mask_id is None:
        return None, 0
    rng = np.random.default_rng(seed)
    ids = _encode(m, sentences)
    hits = total = 0
    for idx in _batches(ids, batch_size):
        arr, mask = _pad(ids, idx, m.pad_id)
        candidates = (mask == 1) & ~np.isin(arr, list(m.special))
        chosen = candidates & (rng.random(arr.shape) < rate)
        if not chosen.any():
            continue
        inputs = np.where(chosen, m.mask_id, arr)
        with torch.inference_mode():
            logits = m.model(input_ids=torch.from_numpy(inputs).to(device),
                             attention_mask=torch.from_numpy(mask).to(device)).logits
        pred = logits.argmax(-1).cpu().numpy()
        hits += int((pred[chosen] == arr[chosen]).sum())
        total += int(chosen.sum())
    return (hits / total if total else None), total


def _agreement(teacher: _Loaded, student: _Loaded, sentences: Sequence[str], batch_size: int,
               device: Any) -> float:
    return float(teacher_agreement(_embed(teacher, sentences, batch_size, device),
                                   _embed(student, sentences, batch_size, device)))


def _fertility(teacher: _Loaded, student: _Loaded, sentences: Sequence[str]) -> dict[str, Any]:
    """Share of teacher tokens in the held-out sentences split into 1, 2, ..., 6+ student pieces."""
    from ..aligner import Aligner

    aligner = Aligner.from_tokenizers(teacher.tokenizer, student.tokenizer)
    lengths = np.diff(np.asarray(aligner.table.offsets))
    ids = np.asarray([i for seq in _encode(teacher, sentences) for i in seq if i not in teacher.special], dtype=np.int64)
    sizes = lengths[ids] if ids.size else np.zeros(0, dtype=np.int64)
    return {"source": "held-out corpus: teacher tokens split by the student vocabulary",
            "histogram": fertility_histogram(sizes), "teacher_tokens": int(sizes.size),
            "mean": float(sizes.mean()) if sizes.size else float("nan")}


def _shard_fertility(shards: Sequence[str | os.PathLike], teacher: _Loaded, student: _Loaded) -> dict[str, Any]:
    """The fertility of the shards' own counts and split table (as `vocabshrink inspect` reports it)."""
    from ..data import ShardDataset

    ds = ShardDataset([str(d) for d in shards], teacher.tokenizer, student.tokenizer, verify="size")
    hist, mean = ds.fertility()
    return {"source": f"shard audit of {', '.join(map(str, shards))}", "histogram": hist,
            "teacher_tokens": int(ds.token_counts("teacher").sum()), "mean": mean}


# ----------------------------------------------------------------------------- plots


def _figure(rows: int, cols: int, width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _bars(ax: Any, labels: list[str], teacher: list[float], student: list[float], title: str, unit: str) -> None:
    x = np.arange(len(labels))
    for off, vals, name, color in ((-0.2, teacher, "teacher", "#4c72b0"), (0.2, student, "student", "#dd8452")):
        bars = ax.bar(x + off, vals, 0.4, label=name, color=color)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)


def _plot_size_speed(report: EvalReport, out: Path) -> Path:
    t, s = report.size["teacher"], report.size["student"]
    fig, ax = _figure(2, 2, 10, 7)
    _bars(ax[0][0], ["total", "embeddings"], [t.params_m, t.embedding_params_m], [s.params_m, s.embedding_params_m],
          "Parameters", "millions")
    _bars(ax[0][1], ["on disk"], [t.disk_mb], [s.disk_mb], "Size on disk", "MB")
    labels = [f"{r.device} {r.batch}x{r.seq_len}" for r in report.speed]
    if report.speed:
        _bars(ax[1][0], labels, [r.teacher_ms for r in report.speed], [r.student_ms for r in report.speed],
              "Inference time (median)", "ms per batch")
        _bars(ax[1][1], labels, [r.teacher_peak_mb for r in report.speed], [r.student_peak_mb for r in report.speed],
              "Peak memory (weights + activations)", "MB")
    else:
        for a in ax[1]:
            a.set_axis_off()
    fig.suptitle("Teacher vs student: size and speed")
    path = out / "size_speed.png"
    fig.savefig(path)
    return path


def _plot_quality(report: EvalReport, out: Path) -> Path | None:
    groups: list[tuple[str, list[str], list[float]]] = []
    for r in report.sts:
        names = ["teacher", "student"] + (["student\nprojected"] if r.student_projected is not None else []) + ["TF-IDF"]
        vals = [r.teacher, r.student] + ([r.student_projected] if r.student_projected is not None else []) + [r.tfidf]
        groups.append((f"STS {r.name} (Spearman)", names, vals))
    for r in report.tasks:
        groups.append((f"{r.name} probe (accuracy)", ["teacher", "student", "TF-IDF"], [r.teacher, r.student, r.tfidf]))
    if not groups:
        return None
    fig, ax = _figure(1, len(groups), max(5.5, 4 * len(groups)), 4.5)
    colors = {"teacher": "#4c72b0", "student": "#dd8452", "student\nprojected": "#c44e52", "TF-IDF": "#8c8c8c"}
    for a, (title, names, vals) in zip(ax[0], groups):
        bars = a.bar(names, vals, color=[colors[n] for n in names])
        a.bar_label(bars, fmt="%.3f", fontsize=8)
        a.set_title(title)
        a.set_ylim(0, 1.05)
        a.set_ylabel("score (0-1)")
    fig.suptitle("Quality: teacher vs student vs TF-IDF baseline")
    path = out / "quality.png"
    fig.savefig(path)
    return path


def read_metrics(run: str | os.PathLike) -> list[dict]:
    """Records of a distill run's metrics.jsonl (one JSON object a line)."""
    file = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
    if not file.is_file():
        raise ConfigError(f"{file}: no metrics.jsonl; pass --run with the output folder of `vocabshrink distill`")
    records = []
    with open(file, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                # A run killed mid-write leaves a partial last line: skip it, keep the rest.
                log.warning("%s, line %d: not valid JSON, skipped", file, n)
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _plot_losses(records: list[dict], out: Path) -> Path | None:
    """Loss curves (left) and held-out scores such as MLM accuracy and teacher agreement (right)."""
    losses: dict[str, tuple[list[float], list[float]]] = {}
    scores: dict[str, tuple[list[float], list[float]]] = {}
    for i, rec in enumerate(records):
        step = rec.get("step", i)
        for key, val in rec.items():
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not math.isfinite(val):
                continue
            is_loss = "loss" in key or key.endswith(("_mse", "_kl"))
            target = losses if is_loss else scores if key.startswith("eval_") else None
            if target is not None:
                xs, ys = target.setdefault(key, ([], []))
                xs.append(float(step))
                ys.append(float(val))
    if not losses and not scores:
        return None
    fig, ax = _figure(1, 2 if scores else 1, 14 if scores else 8, 5)
    panels = [(ax[0][0], losses, "Distillation losses", "loss")]
    if scores:
        panels.append((ax[0][1], scores, "Held-out evaluation", "score"))
    for a, series, title, unit in panels:
        for name, (xs, ys) in sorted(series.items()):
            a.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        a.set_xlabel("optimizer step")
        a.set_ylabel(unit)
        if unit == "loss" and series and all(min(ys) > 0 for _, ys in series.values()):
            a.set_yscale("log")
            a.set_ylabel("loss (log scale)")
        a.set_title(title)
        if series:
            a.legend(fontsize=8)
        a.grid(alpha=0.3)
    path = out / "loss_curves.png"
    fig.savefig(path)
    return path


def _plot_fertility(fert: dict[str, Any], out: Path) -> Path:
    hist = fert["histogram"]
    fig, ax = _figure(1, 1, 7, 4.5)
    a = ax[0][0]
    bars = a.bar(np.arange(len(hist)), [100 * v for v in hist.values()], color="#55a868")
    a.set_xticks(np.arange(len(hist)), list(hist))
    a.bar_label(bars, fmt="%.1f%%", fontsize=8)
    a.set_xlabel("student pieces per teacher token")
    a.set_ylabel("share of teacher tokens (%)")
    a.set_title(f"Fertility: mean {fert['mean']:.2f} pieces over {fert['teacher_tokens']:,} teacher tokens")
    path = out / "fertility.png"
    fig.savefig(path)
    return path


# ----------------------------------------------------------------------------- the stage


def evaluate(
    *,
    teacher: str | os.PathLike,
    student: str | os.PathLike,
    out: str | os.PathLike,
    corpus: Sequence[str | os.PathLike] | str | None = None,
    sts: Sequence[str | os.PathLike] = (),
    tasks: Sequence[str | tuple[str, str, str]] = (),
    run: str | os.PathLike | None = None,
    shards: Sequence[str | os.PathLike] | None = None,
    device: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 256,
    max_sentences: int = 1000,
    max_train: int | None = 20000,
    speed: bool = True,
    speed_shapes: Sequence[tuple[int, int]] = DEFAULT_SPEED_SHAPES,
    warmup: int = 1,
    repeats: int = 3,
    threads: int | None = None,
    plots: bool = True,
    prompt: str | None = None,
) -> EvalReport:
    """Compare a distilled student with its teacher; write report.md, report.json and PNG plots into `out`.

    corpus: held-out text for fidelity (teacher agreement, MLM accuracy, fertility); sts: GLUE STS-B style TSVs;
    tasks: "NAME=TRAIN.tsv,TEST.tsv" (text and label columns) for linear probes; run: a distill output folder
    (its metrics.jsonl gives loss curves); shards: align output folders whose audit gives the fertility histogram.
    Speed is measured on CPU (and GPU when present) at `speed_shapes` (batch, sequence length). `prompt` is put
    before every sentence both models embed; None: the student's own (align --prompt, recorded at export).
    """
    import torch

    if isinstance(corpus, (str, os.PathLike)):
        corpus = [corpus]
    task_specs = _check_inputs(sts, tasks, batch_size, max_length, max_sentences, repeats, warmup)
    metrics = read_metrics(run) if run is not None else None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)

    t = _load(teacher, dev, max_length)
    s = _load(student, dev, max_length)
    proj = _load_projection(s.path)
    t.prompt = s.prompt = read_prompt(s.path) if prompt is None else prompt
    report = _new_report(teacher, student, out_dir, dev, seed, t, s, max_length)
    if t.prompt:
        report.notes.append(f"every sentence embedded with the prompt {t.prompt!r} before it (teacher and student)")
    if proj is None:
        report.notes.append(f"the student has no {PROJECTION_FILE}: only raw student embeddings are scored")
    if speed:
        log.info("measuring speed at %s", list(speed_shapes))
        report.speed, report.speed_method = _speed(t, s, speed_shapes, warmup, repeats, threads, seed)
    if corpus:
        _held_out(report, [str(c) for c in corpus], t, s, proj, max_sentences, batch_size, dev, seed,
                  fertility=not shards)
    if shards:
        report.fertility = _shard_fertility(shards, t, s)
    for f in sts:
        log.info("STS on %s", f)
        report.sts.append(_sts(str(f), t, s, proj, batch_size, dev))
    for name, train, test in task_specs:
        log.info("probe %s", name)
        report.tasks.append(_probe(name, train, test, t, s, batch_size, dev, seed, max_train))
    if plots:
        _plots(report, metrics, run, out_dir)
    write_atomic(out_dir / "report.json", report.to_json() + "\n")
    write_atomic(out_dir / "report.md", report.to_markdown())
    return report


def _check_inputs(sts: Sequence[str | os.PathLike], tasks: Sequence[Any], batch_size: int, max_length: int,
                  max_sentences: int, repeats: int, warmup: int) -> list[tuple[str, str, str]]:
    """The parsed task specs; ConfigError/CorpusError for a bad value or a missing file, before any model loads."""
    if batch_size < 1 or max_length < 4 or max_sentences < 2:
        raise ConfigError("batch_size must be >= 1, max_length >= 4 and max_sentences >= 2")
    if repeats < 1 or warmup < 0:
        raise ConfigError("repeats must be >= 1 and warmup >= 0")
    task_specs = [parse_task(t) for t in tasks]
    for name, train, test in task_specs:
        for f in (train, test):
            if not Path(f).is_file():
                raise CorpusError(f"{f}: no such file (task {name!r})")
    for f in sts:
        if not Path(f).is_file():
            raise CorpusError(f"{f}: no such file (--sts)")
    return task_specs


def _new_report(teacher: Any, student: Any, out_dir: Path, dev: Any, seed: int, t: _Loaded, s: _Loaded,
                max_length: int) -> "EvalReport":
    """The report with the models' sizes and their ratios; the measures fill it in."""
    t_size, s_size = _model_size(t), _model_size(s)
    ratio = {"params": t_size.params_m / s_size.params_m,
             "embedding_params": t_size.embedding_params_m / s_size.embedding_params_m,
             "vocab": t_size.vocab_k / s_size.vocab_k,
             "disk": t_size.disk_mb / s_size.disk_mb if s_size.disk_mb else float("nan")}
    return EvalReport(str(teacher), str(student), str(out_dir), str(dev), seed, {"teacher": t_size, "student": s_size},
                      ratio, notes=[],
                      embedding_method=f"attention-masked mean of the last hidden layer, at most {max_length} "
                                       "tokens (special tokens included), cosine similarity")


def _held_out(report: "EvalReport", corpus: list[str], t: _Loaded, s: _Loaded, proj: Any, max_sentences: int,
              batch_size: int, dev: Any, seed: int, fertility: bool) -> None:
    """Fidelity (agreement, MLM accuracy), fertility and drop-in retrieval on held-out text."""
    sentences = _corpus_sentences(corpus, max_sentences)
    log.info("fidelity on %d held-out sentences", len(sentences))
    acc, masked = _mlm_accuracy(s, sentences, batch_size, dev, seed)
    t_acc = _mlm_accuracy(t, sentences, batch_size, dev, seed)[0] if t.has_mlm_head else None
    if not s.has_mlm_head:
        report.notes.append("the student has no MLM head: MLM accuracy not measured")
    report.fidelity = Fidelity(corpus, len(sentences), _agreement(t, s, sentences, batch_size, dev), acc, masked,
                               t_acc)
    if fertility:
        report.fertility = _fertility(t, s, sentences)
    report.retrieval = _retrieval(corpus, t, s, proj, sentences, batch_size, dev)
    if report.retrieval is None:
        report.notes.append("drop-in retrieval not measured: fewer than 20 held-out lines of 8+ words, or the "
                            "student has neither a projection nor the teacher's width")


def _plots(report: "EvalReport", metrics: Any, run: Any, out_dir: Path) -> None:
    made = [_plot_size_speed(report, out_dir), _plot_quality(report, out_dir)]
    if metrics is not None:
        made.append(_plot_losses(metrics, out_dir))
        if made[-1] is None:
            report.notes.append(f"{run}: metrics.jsonl holds no loss values to plot")
    if report.fertility is not None:
        made.append(_plot_fertility(report.fertility, out_dir))
    report.plots = [str(p) for p in made if p is not None]
