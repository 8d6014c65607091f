"""Embedding starts: the same distill from each `init-student --embedding-init`, scored on STS-B dev.

For each start: `init-student` (3 x 264) from the vocabulary of an earlier benchmark run, `distill` with the
default recipe for `--steps` steps on that run's shards (Russian: with its teacher cache), and the student's
STS-B dev Spearman (cosine of mean-pooled embeddings, raw and through the exported projection; Russian with
`query: ` before every sentence), by the scoring code of bench_quality.py. Each stage is a `vocabshrink` command
in a subprocess, skipped when its output is complete from the same command.

Needs what these made first: English, `bench_quality.py` (runs/quality/vocab-6000, shards-6000-m64); Russian,
`bench_russian.py --sentences 100000` (runs/russian/vocab-10000, shards-10000, cache-10000).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_starts.py en --steps 400 --starts fvt,contextual,contextual-fit
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_starts.py ru --steps 600 --starts fvt,contextual
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_starts.py ru --steps 5472 --starts contextual
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT  # noqa: E402
from bench_quality import encoder_of, read_sts, spearman_of  # noqa: E402
from bench_results import Runner, rel, teacher_path  # noqa: E402

log = logging.getLogger("bench_starts")
RU_PROMPT = "query: "
LANGUAGES = {
    "en": dict(work=ROOT / "runs" / "quality", vocab="vocab-6000", shards="shards-6000-m64", cache=None,
               shape=["--layers", "3", "--hidden", "264"], sts=DATA / "en/stsb/dev.tsv", prompt=""),
    "ru": dict(work=ROOT / "runs" / "russian", vocab="vocab-10000", shards="shards-10000", cache="cache-10000",
               shape=["--layers", "3", "--hidden", "264", "--heads", "12"], sts=DATA / "ru/stsb/dev.tsv",
               prompt=RU_PROMPT),
}


def teacher_of(lang: str) -> Path:
    return ROOT / teacher_path(None) if lang == "en" else ROOT / "runs" / "teachers" / "e5-small"


def score(final: Path, prompt: str, sts) -> tuple[float, float | None]:
    """STS-B dev Spearman of the student in `final`: raw, and through its projection (None without one)."""
    out = []
    for project in (False, True):
        enc = encoder_of(final, project=project)
        out.append(None if enc is None else spearman_of(lambda texts: enc([prompt + t for t in texts]), *sts))
    return out[0], out[1]


def trial(runner: Runner, lang: str, start: str, steps: int) -> dict:
    """init-student from `start`, distill `steps` steps, score; the row of the table."""
    c = LANGUAGES[lang]
    w, teacher = c["work"], teacher_of(lang)
    init, run = w / f"starts-{start}", w / f"starts-{start}-s{steps}"
    init_args = ["init-student", "--teacher", rel(teacher), "--tokenizer", rel(w / c["vocab"]), "--out", rel(init),
                 *c["shape"], "--embedding-init", start]
    runner.stage(init_args, init, "init_report.json")
    args = ["distill", "--teacher", rel(teacher), "--student", rel(init), "--data", rel(w / c["shards"]),
            "--out", rel(run), "--max-steps", str(steps), "--device", "cpu", "--no-progress"]
    if c["cache"]:
        args += ["--teacher-cache", rel(w / c["cache"])]
    runner.stage(args, run, "training_report.json")
    raw, projected = score(run / "final", c["prompt"], read_sts(c["sts"]))
    seconds = json.loads((run / "training_report.json").read_text())["elapsed_s"]
    init_s = json.loads((init / "init_report.json").read_text())["seconds"]
    return {"start": start, "steps": steps, "init_s": init_s, "distill_s": seconds, "raw": raw, "projected": projected,
            "commands": [runner.display(a) for a in (init_args, args)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lang", choices=sorted(LANGUAGES))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--starts", default="fvt,contextual,contextual-fit")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the rows [default: benchmarks/results/"
                                                            "starts-LANG-sSTEPS.json]")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    c = LANGUAGES[a.lang]
    for need in (c["vocab"], c["shards"], c["cache"]):
        if need and not (c["work"] / need).exists():
            raise SystemExit(f"{c['work'] / need}: missing; run bench_{'quality' if a.lang == 'en' else 'russian'}.py "
                             "first")
    runner = Runner(c["work"], dry_run=False)
    rows = [trial(runner, a.lang, s, a.steps) for s in a.starts.split(",")]
    print("| start | steps | init s | distill s | STS-B dev raw | projected |\n|---|---|---|---|---|---|")
    for r in rows:
        proj = "-" if r["projected"] is None else f"{r['projected']:.4f}"
        print(f"| {r['start']} | {r['steps']} | {r['init_s']:.1f} | {r['distill_s']:.0f} | {r['raw']:.4f} | {proj} |")
    out = a.out or ROOT / "benchmarks" / "results" / f"starts-{a.lang}-s{a.steps}.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
