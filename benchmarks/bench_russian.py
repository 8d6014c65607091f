"""The seed's case: multilingual-e5-small (250K vocabulary) reduced to a tiny Russian student, beside the full and
the trimmed teacher and Model2Vec from the same teacher, on Russian STS-B dev.

The pipeline, each stage a `vocabshrink` command in a subprocess (printed with the table), never on STS-B:
- training text: the Russian literature of `../shared/data/ru/ruslit/train.txt` (each work joined, cut into
  sentences) and the Russian Tatoeba sentences, deduplicated and shuffled (seed 0), `--sentences` of them, each of
  12 to `--max-chars` characters (150: as long as STS-B's sentences, and a cheaper cache and step);
- `build-vocab` (the teacher's family: Unigram) of `--vocab` pieces on that text, or with `--algorithm trim` the
  teacher's own pieces over all the Russian training text (`--fill script` to top it up);
- `align --split line --max-length 64 --prompt "query: "` (the model card's prompt, for teacher and student);
- `init-student --layers 3 --hidden 264 --heads 12` (DistilRuBERT-tiny's shape; `--layers/--hidden/--heads`,
  `--dropout`, `--layer-init`);
- `cache-teacher` (the teacher run once), then `distill --teacher-cache` for what is left of `--minutes` (cache
  included: cache-teacher's time is measured first, then `distill --max-minutes` fits its steps to the rest as it
  goes, re-planning from the measured step time);
- scores: Spearman of the gold scores against the cosine of mean-pooled embeddings with the "query: " prompt.

Rows: the teacher (runs/teachers/e5-small from `benchmarks/teachers.py`), its Russian trim (from
`benchmarks/bench_trim.py`, if present), Model2Vec `distill(teacher, pca_dims=D)` at the student's parameter
count (from the full and from the trimmed teacher), TF-IDF, the student (raw and projected).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_russian.py --minutes 60
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_russian.py --minutes 60 --algorithm trim --vocab 23000 \
        --hidden 192 --heads 6
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_russian.py --sentences 200000 --max-chars 150 --prepare-only \
        --algorithm trim --vocab 23000 --hidden 192 --heads 6 --dropout 0   # the stages up to the teacher cache
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT  # noqa: E402
from bench_quality import encoder_of, params_of, read_sts, spearman_of, tfidf_score  # noqa: E402
from bench_results import Runner  # noqa: E402
from bench_trim import write_keep  # noqa: E402

log = logging.getLogger("bench_russian")
PROMPT = "query: "
DISTILL_OVERHEAD_S = 30.0  # distill's start-up (loading, the projection fit) and final save, outside its loop (15 s here)


def russian_sentences(data: Path, out: Path, limit: int, seed: int = 0, min_chars: int = 12,
                      tatoeba_repeat: int = 0, max_chars: int = 400) -> dict[str, int]:
    """Sentences of the Russian literature (each work joined first: its lines are hard-wrapped) and Tatoeba.

    tatoeba_repeat=0 draws from the union (Tatoeba is then about 6% of the text); K > 0 takes every Tatoeba
    sentence K times and literature for the rest.
    """
    from vocabshrink.corpus import split_sentences
    from vocabshrink.files import write_atomic

    works = (data / "ru/ruslit/train.txt").read_text(encoding="utf-8").split("\n\n")
    lit = [s for w in works for s in split_sentences(" ".join(x.strip() for x in w.splitlines() if x.strip()))]
    tatoeba = (data / "ru/tatoeba/sentences.txt").read_text(encoding="utf-8").splitlines()
    good = [s for s in lit + tatoeba if min_chars <= len(s.strip()) <= max_chars]
    sentences = list(dict.fromkeys(s.strip() for s in good))
    if tatoeba_repeat:
        everyday = set(t.strip() for t in tatoeba)
        short = [s for s in sentences if s in everyday] * tatoeba_repeat
        rest = [s for s in sentences if s not in everyday]
        random.Random(seed).shuffle(rest)
        sentences = short + rest[:max(0, limit - len(short))]
    random.Random(seed).shuffle(sentences)
    chosen = sentences[:limit]
    write_atomic(out, "\n".join(chosen) + "\n")
    return {"literature sentences": len(lit), "tatoeba": len(tatoeba), "deduplicated": len(sentences),
            "used": len(chosen)}


def embed_prompted(folder: Path, project: bool = False):
    """`encoder_of` with the prompt before every sentence."""
    enc = encoder_of(folder, project=project)
    return None if enc is None else (lambda texts: enc([PROMPT + t for t in texts]))


def model2vec_row(teacher: Path, params: int, work: Path, sts, label: str) -> dict:
    """Model2Vec from `teacher` with about `params` parameters (its vocabulary x PCA dimensions)."""
    from model2vec import StaticModel
    from model2vec.distill import distill

    from vocabshrink.tokenization import load_tokenizer

    folder = work / f"model2vec-{label}-{params}"
    if (folder / "config.json").exists():
        m, seconds = StaticModel.from_pretrained(str(folder)), json.loads((folder / "seconds.json").read_text())
    else:
        rows = load_tokenizer(teacher).get_vocab_size(with_added_tokens=True)
        t0 = time.time()
        m = distill(model_name=str(teacher), pca_dims=max(2, round(params / rows)))
        seconds = time.time() - t0
        m.save_pretrained(str(folder))
        (folder / "seconds.json").write_text(json.dumps(seconds))
    enc = lambda texts: m.encode([PROMPT + t for t in texts])  # noqa: E731
    return {"model": f"Model2Vec from the {label} teacher, pca_dims={m.embedding.shape[1]}",
            "params": int(np.prod(m.embedding.shape)), "minutes": seconds / 60, "sts": spearman_of(enc, *sts)}


def vocab_args(a: argparse.Namespace, train: Path, keep: Path) -> tuple[str, list[str]]:
    """The vocabulary's name and its build-vocab options: trained on `train`, or trimmed from the teacher over
    all the Russian training text (more text only adds pieces) with the prompt's pieces kept."""
    if a.algorithm == "trained":
        return f"{a.vocab}", [str(train)]
    corpus = [str(DATA / "ru/ruslit/train.txt"), str(DATA / "ru/tatoeba/sentences.txt")]
    return (f"trim-{a.vocab}-{a.fill}", [*corpus, "--algorithm", "trim", "--fill", a.fill, "--keep", str(keep)])


def student(runner: Runner, a: argparse.Namespace, teacher: Path, train: Path) -> dict:
    """The pipeline's stages; returns the student's row with the seconds of each stage."""
    w = a.work
    keep = w / "query_keep.txt"
    write_keep(teacher, keep)
    name, corpus = vocab_args(a, train, keep)
    shape = f"{a.layers}x{a.hidden}" + ("" if a.dropout is None else f"-d{a.dropout:g}") \
        + ("" if a.layer_init == "select" else f"-{a.layer_init}")
    tok, shards, init = w / f"vocab-{name}", w / f"shards-{name}-{train.stem}", w / f"student-{name}-{shape}"
    cache = w / f"cache-{name}-{train.stem}"
    stages = [
        ("build_vocab", ["build-vocab", *corpus, "--teacher", str(teacher), "--size", str(a.vocab), "--out",
                         str(tok), "--no-progress"], tok, "vocab_report.json"),
        ("align", ["align", str(train), "--teacher", str(teacher), "--student", str(tok), "--out", str(shards),
                   "--split", "line", "--max-length", "64", "--prompt", PROMPT, "--workers", "2", "--no-progress"],
         shards, "align_report.json"),
        ("init_student", ["init-student", "--teacher", str(teacher), "--tokenizer", str(tok), "--out", str(init),
                          "--layers", str(a.layers), "--hidden", str(a.hidden), "--heads", str(a.heads),
                          *([] if a.layer_init == "select" else ["--layer-init", a.layer_init]),
                          *([] if a.dropout is None else ["--dropout", str(a.dropout)])],
         init, "init_report.json"),
        ("cache_teacher", ["cache-teacher", "--teacher", str(teacher), "--data", str(shards), "--out", str(cache),
                           "--no-progress"], cache, "cache_report.json"),
    ]
    seconds, commands = {}, []
    for stage, args, folder, done in stages:
        seconds[stage] = _timed(runner, args, folder, done)
        commands.append(runner.display(args))
    if a.prepare_only:
        return {"seconds": seconds, "commands": commands}
    base = ["distill", "--teacher", str(teacher), "--student", str(init), "--data", str(shards), "--teacher-cache",
            str(cache), "--device", "cpu", "--no-progress", *a.distill_args.split()]
    # distill's loop gets what the budget leaves after the cache, less its own start-up and final save (about
    # 15 s in all here); `--max-minutes` re-plans the steps from the measured step time as the run goes
    loop_minutes = (a.minutes * 60 - seconds["cache_teacher"] - DISTILL_OVERHEAD_S) / 60
    limit = ["--max-steps", str(a.max_steps)] if a.max_steps else \
        ["--max-minutes", f"{loop_minutes:.2f}", "--max-steps", "10000000"]
    tag = "-".join(x.lstrip("-") for x in a.distill_args.split())
    length = f"s{a.max_steps}" if a.max_steps else f"m{loop_minutes:.1f}"
    run = w / f"distill-{name}-{shape}-{train.stem}-{length}{'-' + tag if tag else ''}"
    args = [*base, "--out", str(run), *limit]
    if not (run / "training_report.json").exists() and any(run.glob("step-*")):
        args.append("--resume")
    runner.stage(args, run, "training_report.json")
    commands.append(runner.display([x for x in args if x != "--resume"]))
    report = json.loads((run / "training_report.json").read_text())
    seconds["distill"], steps = report["elapsed_s"], report["steps"]
    s_per_step = report["teacher_tokens_seen"] / max(report["tokens_per_s"], 1e-9) / max(steps, 1)
    return {"run": run, "steps": steps, "seconds": seconds, "commands": commands, "s_per_step": s_per_step}


def _timed(runner: Runner, args: list[str], folder: Path, done: str) -> float:
    """Run a stage (or reuse it) and return its seconds, recorded beside the folder for reruns."""
    record = folder.parent / f".{folder.name}.seconds.json"
    ran = runner.stage(args, folder, done)
    if ran is not None:
        record.write_text(json.dumps(ran))
    return float(json.loads(record.read_text())) if record.exists() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=ROOT / "runs/teachers/e5-small")
    ap.add_argument("--trimmed", type=Path, default=ROOT / "runs/trim/ru-teacher",
                    help="The Russian trim of the teacher (bench_trim.py); skipped when missing.")
    ap.add_argument("--work", type=Path, default=ROOT / "runs/russian")
    ap.add_argument("--vocab", type=int, default=10_000, help="Student vocabulary size (build-vocab --size).")
    ap.add_argument("--algorithm", choices=("trained", "trim"), default="trained",
                    help="trained: a Unigram vocabulary of the training text; trim: the teacher's own pieces")
    ap.add_argument("--fill", choices=("none", "script"), default="none", help="build-vocab --fill, with trim.")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=264)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dropout", type=float, default=None,
                    help="init-student --dropout [the teacher's 0.1]; 0 measured better with the sentence losses")
    ap.add_argument("--layer-init", choices=("select", "average", "random"), default="select",
                    help="init-student --layer-init; average started better after 1,500 steps, not after the hour")
    ap.add_argument("--sentences", type=int, default=120_000)
    ap.add_argument("--max-chars", type=int, default=400,
                    help="Longest training sentence in characters (150: the length of STS-B's, cheaper steps).")
    ap.add_argument("--tatoeba-repeat", type=int, default=0,
                    help="Every Tatoeba sentence this many times (0: drawn with the literature, about 6%%).")
    ap.add_argument("--minutes", type=float, default=60.0, help="Budget of cache-teacher + distill.")
    ap.add_argument("--max-steps", type=int, default=0, help="Fixed steps instead of the budget (quick checks).")
    ap.add_argument("--distill-args", default="", help="Extra distill options, e.g. '--lr 5e-4'.")
    ap.add_argument("--no-model2vec", action="store_true")
    ap.add_argument("--prepare-only", action="store_true",
                    help="Stop after the teacher cache (its minutes are recorded for the run that reuses it).")
    ap.add_argument("--out-md", type=Path, default=ROOT / "benchmarks/results/russian.md")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (a.teacher / "config.json").exists():
        raise SystemExit(f"{a.teacher}: convert the teacher first: python benchmarks/teachers.py e5-small --out "
                         f"{a.teacher}")
    a.work.mkdir(parents=True, exist_ok=True)
    mix = f"-tatoeba{a.tatoeba_repeat}" if a.tatoeba_repeat else ""
    mix += f"-c{a.max_chars}" if a.max_chars != 400 else ""
    train = a.work / f"train{mix}-{a.sentences}.txt"
    counts = (russian_sentences(DATA, train, a.sentences, tatoeba_repeat=a.tatoeba_repeat, max_chars=a.max_chars)
              if not train.exists() else {"used": a.sentences, "tatoeba_repeat": a.tatoeba_repeat})
    counts["max_chars"] = a.max_chars
    sts = read_sts(DATA / "ru/stsb/dev.tsv")
    runner = Runner(a.work, dry_run=False)
    s = student(runner, a, a.teacher, train)
    if a.prepare_only:
        print(json.dumps(s, indent=2))
        return
    final = s["run"] / "final"
    params = params_of(final)
    rows = [{"model": "teacher multilingual-e5-small", "params": params_of(a.teacher),
             "sts": spearman_of(embed_prompted(a.teacher), *sts)}]
    if (a.trimmed / "config.json").exists():
        rows.append({"model": "teacher trimmed to Russian (bench_trim.py)", "params": params_of(a.trimmed),
                     "sts": spearman_of(embed_prompted(a.trimmed), *sts)})
    rows.append({"model": "TF-IDF cosine", "params": None, "sts": tfidf_score(*sts)})
    if not a.no_model2vec:
        rows.append(model2vec_row(a.teacher, params, a.work, sts, "full"))
        if (a.trimmed / "config.json").exists():
            rows.append(model2vec_row(a.trimmed, params, a.work, sts, "trimmed"))
    minutes = (s["seconds"]["cache_teacher"] + s["seconds"]["distill"]) / 60
    proj = embed_prompted(final, project=True)
    label = f"{a.vocab // 1000}K{' trimmed' if a.algorithm == 'trim' else ''}"
    rows.append({"model": f"vocabshrink {label}, {a.layers} x {a.hidden} ({s['steps']} steps)", "params": params,
                 "minutes": minutes, "sts": spearman_of(embed_prompted(final), *sts),
                 "sts_projected": spearman_of(proj, *sts) if proj else None})
    text = report(rows, s, counts, a)
    print(text)
    a.out_md.parent.mkdir(parents=True, exist_ok=True)
    a.out_md.write_text(text)
    a.out_md.with_suffix(".json").write_text(json.dumps({"rows": rows, "seconds": s["seconds"], "steps": s["steps"],
                                                         "commands": s["commands"], "corpus": counts}, indent=2,
                                                        default=str))


def report(rows: list[dict], s: dict, counts: dict, a: argparse.Namespace) -> str:
    teacher = rows[0]
    lines = [f"Russian STS-B dev (Spearman, cosine of mean-pooled embeddings, prompt {PROMPT!r}); corpus {counts}",
             "", "| model | parameters | x smaller than the teacher | minutes to make it | STS-B ru dev | projected "
             "| % of teacher |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("params")
        smaller = f"{teacher['params'] / p:.1f}x" if p else ""
        mins = f"{r['minutes']:.1f}" if r.get("minutes") is not None else ""
        proj = f"{r['sts_projected']:.4f}" if r.get("sts_projected") is not None else ""
        lines.append(f"| {r['model']} | {p / 1e6:.2f}M | {smaller} | {mins} | {r['sts']:.4f} | {proj} | "
                     f"{100 * r['sts'] / teacher['sts']:.1f}% |" if p else
                     f"| {r['model']} |  |  |  | {r['sts']:.4f} |  | {100 * r['sts'] / teacher['sts']:.1f}% |")
    lines += ["", f"Stage seconds: {json.dumps({k: round(v, 1) for k, v in s['seconds'].items()})}; "
              f"{s['s_per_step']:.3f} s a cached step.", "", "Commands:", "", "```", *s["commands"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
