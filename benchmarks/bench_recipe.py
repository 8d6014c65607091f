"""Recipe trials: short distills of the English student, each changing one thing from the base, scored on STS-B dev.

The base is bench_starts' English trial: the 6K WordPiece student at 3 x 264 from `--embedding-init contextual`,
`distill`'s defaults (batch 64, lr 1e-3, linear schedule, 100 warmup steps), `--steps` steps on bench_quality's
sentence shards. A batch-size row keeps the number of training sentences (steps scale inversely) and the warmup's
share of the run. The `v16k` row is the 4M sweep's winner (16K vocabulary, 4 x 168), aligned like the 6K shards;
`trim16k` the same shape on the teacher's own 16K most frequent tokens (`build-vocab --algorithm trim`), `v24k` a
trained 24K vocabulary at 3 x 144.
Every row: distill seconds, STS-B dev Spearman raw and projected (bench_quality's scorer).

Needs bench_quality.py's runs/quality (vocab-6000, shards-6000-m64, corpus/train.txt) and, for `v16k`, the sweep
of RESULTS.md ("A measured sweep", runs/sweep4m/v16000/tok).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 400
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recipe.py --steps 400 --trials base,cosine
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT  # noqa: E402
from bench_quality import params_of, read_sts  # noqa: E402
from bench_results import Runner, rel, teacher_path  # noqa: E402
from bench_starts import score  # noqa: E402

log = logging.getLogger("bench_recipe")
WORK = ROOT / "runs" / "quality"
BASE_BATCH, BASE_WARMUP = 64, 100
# name -> (student, extra distill options, batch size); each differs from the base in one thing
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
}
STUDENTS = {  # name -> (vocabulary folder, shards folder, init-student options)
    "6k": (WORK / "vocab-6000", WORK / "shards-6000-m64", ["--layers", "3", "--hidden", "264"]),
    "6k-dropout0": (WORK / "vocab-6000", WORK / "shards-6000-m64",
                    ["--layers", "3", "--hidden", "264", "--dropout", "0"]),
    "16k": (ROOT / "runs" / "sweep4m" / "v16000" / "tok", WORK / "shards-16000-m64",
            ["--layers", "4", "--hidden", "168", "--heads", "6"]),
    "trim16k": (WORK / "vocab-trim-16000", WORK / "shards-trim-16000-m64",
                ["--layers", "4", "--hidden", "168", "--heads", "6"]),
    "24k": (WORK / "vocab-24000", WORK / "shards-24000-m64", ["--layers", "3", "--hidden", "144", "--heads", "6"]),
}
BUILD = {  # vocabulary folder -> build-vocab options, for those made here
    WORK / "vocab-trim-16000": ["--size", "16000", "--algorithm", "trim"],
    WORK / "vocab-24000": ["--size", "24000"],
}


def student(runner: Runner, name: str, teacher: str) -> tuple[Path, Path]:
    """The initialised student `name` and its shards (aligned here like bench_quality's when missing)."""
    vocab, shards, shape = STUDENTS[name]
    if vocab in BUILD:
        runner.stage(["build-vocab", rel(WORK / "corpus" / "train.txt"), "--teacher", teacher, "--out", rel(vocab),
                      *BUILD[vocab], "--no-progress"], vocab, "vocab_report.json")
    runner.stage(["align", rel(WORK / "corpus" / "train.txt"), "--teacher", teacher, "--student", rel(vocab),
                  "--out", rel(shards), "--split", "line", "--max-length", "64", "--workers", "2", "--no-progress"],
                 shards, "align_report.json")
    out = WORK / f"recipe-student-{name}"
    runner.stage(["init-student", "--teacher", teacher, "--tokenizer", rel(vocab), "--out", rel(out), *shape,
                  "--embedding-init", "contextual"], out, "init_report.json")
    return out, shards


def trial(runner: Runner, name: str, steps: int, teacher: str, sts) -> dict:
    """One row: distill the trial's student with its options, then score it."""
    who, options, batch = TRIALS[name]
    init, shards = student(runner, who, teacher)
    n = steps * BASE_BATCH // batch
    run = WORK / f"recipe-{name}-s{steps}"
    args = ["distill", "--teacher", teacher, "--student", rel(init), "--data", rel(shards), "--out", rel(run),
            "--max-steps", str(n), "--batch-size", str(batch), "--warmup-steps", str(BASE_WARMUP * n // steps),
            "--checkpoint-minutes", "0", "--device", "cpu", "--no-progress", *options]
    runner.stage(args, run, "training_report.json")
    raw, projected = score(run / "final", "", sts)
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
    for need in (WORK / "vocab-6000", WORK / "shards-6000-m64", WORK / "corpus" / "train.txt"):
        if not need.exists():
            raise SystemExit(f"{need}: missing; run bench_quality.py first")
    runner, teacher, sts = Runner(WORK, dry_run=False), teacher_path(None), read_sts(DATA / "en/stsb/dev.tsv")
    rows = [trial(runner, t, a.steps, teacher, sts) for t in a.trials.split(",")]
    print("| trial | params | steps x batch | distill s | STS-B dev raw | projected |\n|---|---|---|---|---|---|")
    for r in rows:
        proj = "-" if r["projected"] is None else f"{r['projected']:.4f}"
        print(f"| {r['trial']} | {r['parameters'] / 1e6:.2f}M | {r['steps']} x {r['batch']} | {r['distill_s']:.0f} "
              f"| {r['raw']:.4f} | {proj} |")
    out = a.out or ROOT / "benchmarks" / "results" / f"recipe-s{a.steps}.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
