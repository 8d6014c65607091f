"""Recipe trials: short distills of a student, each changing one thing from a base, scored on STS-B dev.

English: the base is bench_starts' English trial, the 6K WordPiece student at 3 x 264 from `--embedding-init
contextual`, `distill`'s defaults (batch 64, lr 1e-3, linear schedule, 100 warmup steps), `--steps` steps on
bench_quality's sentence shards. A batch-size row keeps the number of training sentences (steps scale inversely)
and the warmup's share of the run. `v16k` is the 4M sweep's winner (16K vocabulary, 4 x 168), aligned like the 6K
shards; `trim16k` the same shape on the teacher's own 16K most frequent tokens (`build-vocab --algorithm trim`);
`v24k` a trained 24K vocabulary at 3 x 144.
Russian (`ru-*`, multilingual-e5-small, `query: ` before every text): `ru-base` is bench_russian's student (10K
Unigram, 3 x 264), `ru-trim20k` a 20K vocabulary trimmed from the teacher's at 3 x 192, the same parameters; both
without a teacher cache (for a short trial the cache costs more than it saves). `ru-freeze` is `ru-trim20k` with
the word table frozen (`--embedding-lr-scale 0`), `ru-sentence` with the sentence loss alone, `ru-tatoeba` on
bench_russian's `--tatoeba-repeat 3` text (every Tatoeba sentence three times, literature for the rest: 55% of the
sentences are everyday ones instead of 6%; the same vocabulary), `ru-fill`/`ru-fill-freeze` on a 23K trim filled
with `--fill script`. `ru-c-*` are cached trials of bench_russian's 60-minute student (the 23K trim at 3 x 192, its
200K-sentence shards and teacher cache) with the sentence losses (`--mse-weight 0 --cosine-weight 0
--similarity-weight 1`): `ru-c-base`, then fp32 instead of the bf16 that `--precision auto` picks on this CPU,
similarity weights 10 and 30, lr 2e-3, the student without dropout (`init-student --dropout 0`) and both;
from the student without dropout, the word table at 3x the rate (`--embedding-lr-scale 3`), the token MSE back,
batch 32 (twice the steps) or the sentence loss alone.
Every row: distill seconds, STS-B dev Spearman raw and projected (bench_quality's scorer).

Needs bench_quality.py's runs/quality (vocab-6000, shards-6000-m64, corpus/train.txt), for `v16k` the sweep of
RESULTS.md ("A measured sweep", runs/sweep4m/v16000/tok), for `ru-*` bench_russian.py's runs/russian and
bench_trim.py's runs/trim/query_keep.txt.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 400
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 400 --trials base,v16k,trim16k,v24k
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 600 --trials ru-base,ru-trim20k
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 600 --trials ru-freeze,ru-tatoeba,ru-sentence
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 1500 --trials ru-c-base,ru-c-d0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT  # noqa: E402
from bench_quality import params_of, read_sts  # noqa: E402
from bench_results import Runner, rel, teacher_path  # noqa: E402
from bench_starts import RU_PROMPT, score  # noqa: E402

log = logging.getLogger("bench_recipe")
EN, RU = ROOT / "runs" / "quality", ROOT / "runs" / "russian"
BASE_BATCH, BASE_WARMUP = 64, 100


@dataclass(frozen=True)
class Lang:
    work: Path
    corpus: Path
    teacher: str
    prompt: str
    sts: Path


LANGS = {"en": Lang(EN, EN / "corpus" / "train.txt", "", "", DATA / "en/stsb/dev.tsv"),
         "ru": Lang(RU, RU / "train-100000.txt", rel(ROOT / "runs" / "teachers" / "e5-small"), RU_PROMPT,
                    DATA / "ru/stsb/dev.tsv"),
         "ru-tatoeba": Lang(RU, RU / "train-tatoeba3-100000.txt", rel(ROOT / "runs" / "teachers" / "e5-small"),
                            RU_PROMPT, DATA / "ru/stsb/dev.tsv"),
         "ru-200k": Lang(RU, RU / "train-200000.txt", rel(ROOT / "runs" / "teachers" / "e5-small"), RU_PROMPT,
                         DATA / "ru/stsb/dev.tsv"),
         "ru-all": Lang(RU, RU / "train-c150-270000.txt", rel(ROOT / "runs" / "teachers" / "e5-small"), RU_PROMPT,
                        DATA / "ru/stsb/dev.tsv")}


@dataclass(frozen=True)
class Student:
    lang: str
    vocab: Path
    shards: Path
    shape: list[str]  # init-student options
    build: list[str] | None = None  # build-vocab options when the vocabulary is made here
    cache: Path | None = None  # cache-teacher's folder of these shards (made by bench_russian.py)


STUDENTS = {
    "6k": Student("en", EN / "vocab-6000", EN / "shards-6000-m64", ["--layers", "3", "--hidden", "264"]),
    "6k-dropout0": Student("en", EN / "vocab-6000", EN / "shards-6000-m64",
                           ["--layers", "3", "--hidden", "264", "--dropout", "0"]),
    "16k": Student("en", ROOT / "runs" / "sweep4m" / "v16000" / "tok", EN / "shards-16000-m64",
                   ["--layers", "4", "--hidden", "168", "--heads", "6"]),
    "trim16k": Student("en", EN / "vocab-trim-16000", EN / "shards-trim-16000-m64",
                       ["--layers", "4", "--hidden", "168", "--heads", "6"], ["--size", "16000", "--algorithm", "trim"]),
    "24k": Student("en", EN / "vocab-24000", EN / "shards-24000-m64",
                   ["--layers", "3", "--hidden", "144", "--heads", "6"], ["--size", "24000"]),
    "ru10k": Student("ru", RU / "vocab-10000", RU / "shards-10000", ["--layers", "3", "--hidden", "264", "--heads", "12"]),
    "ru-trim20k": Student("ru", RU / "vocab-trim-20000", RU / "shards-trim-20000",
                          ["--layers", "3", "--hidden", "192", "--heads", "6"],
                          ["--size", "20000", "--algorithm", "trim", "--keep",
                           rel(ROOT / "runs" / "trim" / "query_keep.txt")]),
    "ru-trim23k-fill": Student("ru", RU / "vocab-trim-23000-fill", RU / "shards-trim-23000-fill",
                               ["--layers", "3", "--hidden", "192", "--heads", "6"],
                               ["--size", "23000", "--algorithm", "trim", "--fill", "script", "--keep",
                                rel(ROOT / "runs" / "trim" / "query_keep.txt")]),
    "ru-tatoeba-trim20k": Student("ru-tatoeba", RU / "vocab-trim-20000", RU / "shards-tatoeba3-trim-20000",
                                  ["--layers", "3", "--hidden", "192", "--heads", "6"]),
    "ru-c": Student("ru-200k", RU / "vocab-trim-23000-none", RU / "shards-trim-23000-none-train-200000",
                    ["--layers", "3", "--hidden", "192", "--heads", "6"],
                    cache=RU / "cache-trim-23000-none-train-200000"),
}
STUDENTS["ru-c-d0"] = replace(STUDENTS["ru-c"], shape=[*STUDENTS["ru-c"].shape, "--dropout", "0"])
# the hour's data (bench_russian.py --sentences 270000 --max-chars 150): every short training sentence, cached
STUDENTS["ra"] = Student("ru-all", RU / "vocab-trim-23000-none", RU / "shards-trim-23000-none-train-c150-270000",
                         ["--layers", "3", "--hidden", "192", "--heads", "6", "--dropout", "0"],
                         cache=RU / "cache-trim-23000-none-train-c150-270000")
STUDENTS["ra-map-3-7-11"] = replace(STUDENTS["ra"], shape=[*STUDENTS["ra"].shape, "--layer-map", "3,7,11"])
STUDENTS["ra-average"] = replace(STUDENTS["ra"], shape=[*STUDENTS["ra"].shape, "--layer-init", "average"])
STUDENTS["ra-4x192-i384"] = replace(STUDENTS["ra"], shape=["--layers", "4", "--hidden", "192", "--heads", "6",
                                                           "--dropout", "0", "--intermediate", "384"])
SENTENCE = ["--mse-weight", "0", "--cosine-weight", "0", "--similarity-weight", "1"]  # bench_russian's recipe
# name -> (student, extra distill options, batch size); each differs from its base in one thing
TRIALS = {
    "base": ("6k", [], BASE_BATCH),
    "cosine": ("6k", ["--schedule", "cosine"], BASE_BATCH),
    "lr2e-3": ("6k", ["--lr", "2e-3"], BASE_BATCH),
    "batch32": ("6k", [], 32),
    "batch128": ("6k", [], 128),
    "dropout0": ("6k-dropout0", [], BASE_BATCH),
    "v16k": ("16k", [], BASE_BATCH),
    "trim16k": ("trim16k", [], BASE_BATCH),
    "v24k": ("24k", [], BASE_BATCH),
    "ru-base": ("ru10k", [], BASE_BATCH),
    "ru-trim20k": ("ru-trim20k", [], BASE_BATCH),
    "ru-freeze": ("ru-trim20k", ["--embedding-lr-scale", "0"], BASE_BATCH),
    "ru-fill": ("ru-trim23k-fill", [], BASE_BATCH),
    "ru-fill-freeze": ("ru-trim23k-fill", ["--embedding-lr-scale", "0"], BASE_BATCH),
    "ru-tatoeba": ("ru-tatoeba-trim20k", [], BASE_BATCH),
    "ru-sentence": ("ru-trim20k", ["--mse-weight", "0", "--cosine-weight", "0"], BASE_BATCH),
    "ru-similarity": ("ru-trim20k", ["--mse-weight", "0", "--cosine-weight", "0", "--similarity-weight", "1"],
                      BASE_BATCH),
    "ru-no-mse": ("ru-trim20k", ["--mse-weight", "0"], BASE_BATCH),
    "ru-c-base": ("ru-c", SENTENCE, BASE_BATCH),
    "ru-c-fp32": ("ru-c", [*SENTENCE, "--precision", "fp32"], BASE_BATCH),
    "ru-c-sim10": ("ru-c", [*SENTENCE, "--similarity-weight", "10"], BASE_BATCH),
    "ru-c-sim30": ("ru-c", [*SENTENCE, "--similarity-weight", "30"], BASE_BATCH),
    "ru-c-lr2e-3": ("ru-c", [*SENTENCE, "--lr", "2e-3"], BASE_BATCH),
    "ru-c-d0": ("ru-c-d0", SENTENCE, BASE_BATCH),
    "ru-c-d0-lr2e-3": ("ru-c-d0", [*SENTENCE, "--lr", "2e-3"], BASE_BATCH),
    "ru-c-d0-emb3": ("ru-c-d0", [*SENTENCE, "--embedding-lr-scale", "3"], BASE_BATCH),
    "ru-c-d0-mse": ("ru-c-d0", [*SENTENCE, "--mse-weight", "1"], BASE_BATCH),
    "ru-c-d0-b32": ("ru-c-d0", SENTENCE, 32),
    "ru-c-d0-sentence": ("ru-c-d0", [*SENTENCE, "--similarity-weight", "0"], BASE_BATCH),
    "ra-base": ("ra", [*SENTENCE, "--precision", "fp32"], BASE_BATCH),
    "ra-map-3-7-11": ("ra-map-3-7-11", [*SENTENCE, "--precision", "fp32"], BASE_BATCH),
    "ra-average": ("ra-average", [*SENTENCE, "--precision", "fp32"], BASE_BATCH),
    "ra-4x192-i384": ("ra-4x192-i384", [*SENTENCE, "--precision", "fp32"], BASE_BATCH),
    "ra-b128-lr2e-3": ("ra", [*SENTENCE, "--precision", "fp32", "--lr", "2e-3"], 128),
    "ra-wd0": ("ra", [*SENTENCE, "--precision", "fp32", "--weight-decay", "0"], BASE_BATCH),
}


def student(runner: Runner, name: str) -> tuple[Path, Path]:
    """The initialised student `name` and its shards (vocabulary and shards made here when missing)."""
    s = STUDENTS[name]
    lang = LANGS[s.lang]
    teacher = lang.teacher or teacher_path(None)
    if s.build is not None:
        runner.stage(["build-vocab", rel(lang.corpus), "--teacher", teacher, "--out", rel(s.vocab), *s.build,
                      "--no-progress"], s.vocab, "vocab_report.json")
    if (s.shards / "align_report.json").exists():  # made here or by bench_quality / bench_russian (same options)
        log.info("reuse %s", s.shards)
    else:
        prompt = ["--prompt", lang.prompt] if lang.prompt else []
        runner.stage(["align", rel(lang.corpus), "--teacher", teacher, "--student", rel(s.vocab), "--out",
                      rel(s.shards), "--split", "line", "--max-length", "64", *prompt, "--workers", "2",
                      "--no-progress"], s.shards, "align_report.json")
    out = lang.work / f"recipe-student-{name}"
    runner.stage(["init-student", "--teacher", teacher, "--tokenizer", rel(s.vocab), "--out", rel(out), *s.shape,
                  "--embedding-init", "contextual"], out, "init_report.json")
    return out, s.shards


def trial(runner: Runner, name: str, steps: int) -> dict:
    """One row: distill the trial's student with its options, then score it."""
    who, options, batch = TRIALS[name]
    lang = LANGS[STUDENTS[who].lang]
    init, shards = student(runner, who)
    n = steps * BASE_BATCH // batch
    run = lang.work / f"recipe-{name}-s{steps}"
    args = ["distill", "--teacher", lang.teacher or teacher_path(None), "--student", rel(init), "--data", rel(shards),
            "--out", rel(run), "--max-steps", str(n), "--batch-size", str(batch), "--warmup-steps",
            str(BASE_WARMUP * n // steps), "--checkpoint-minutes", "0", "--device", "cpu", "--no-progress", *options]
    if STUDENTS[who].cache is not None:
        args += ["--teacher-cache", rel(STUDENTS[who].cache)]
    runner.stage(args, run, "training_report.json")
    raw, projected = score(run / "final", lang.prompt, read_sts(lang.sts))
    report = json.loads((run / "training_report.json").read_text())
    params = params_of(run / "final")  # the exported model's, as bench_quality counts them
    return {"trial": name, "steps": n, "batch": batch, "parameters": params, "distill_s": report["elapsed_s"],
            "raw": raw, "projected": projected, "command": runner.display(args)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400, help="the base's steps (batch rows scale them)")
    ap.add_argument("--trials", default=",".join(TRIALS), help=f"comma-separated, of: {', '.join(TRIALS)}")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON of the rows [default: benchmarks/results/recipe-sSTEPS.json]")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [t for t in a.trials.split(",") if t not in TRIALS]
    if unknown:
        raise SystemExit(f"unknown trials {unknown}; choose from {', '.join(TRIALS)}")
    for t in a.trials.split(","):
        lang = LANGS[STUDENTS[TRIALS[t][0]].lang]
        if not lang.corpus.exists():
            raise SystemExit(f"{lang.corpus}: missing; run bench_{'quality' if lang.work == EN else 'russian'}.py first")
    rows = [trial(Runner(LANGS[STUDENTS[TRIALS[t][0]].lang].work, dry_run=False), t, a.steps)
            for t in a.trials.split(",")]
    print("| trial | params | steps x batch | distill s | STS-B dev raw | projected |\n|---|---|---|---|---|---|")
    for r in rows:
        proj = "-" if r["projected"] is None else f"{r['projected']:.4f}"
        print(f"| {r['trial']} | {r['parameters'] / 1e6:.2f}M | {r['steps']} x {r['batch']} | {r['distill_s']:.0f} "
              f"| {r['raw']:.4f} | {proj} |")
    out = a.out or ROOT / "benchmarks" / "results" / f"recipe-s{a.steps}.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
