"""A student's training step (forward and backward of its encoder) in each precision and attention code, on
batches of the shape a cached distill step sees: 64 sentences of about 25 tokens.

distill's step is the encoder's forward and backward plus the sentence losses and an AdamW step (timed by
bench_optimizer.py). This times the part that `--precision` and `--attention` change. On CPU, torch's fused
attention (sdpa) trains slowly in bf16, so `distill --attention auto` runs it eagerly there.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_attention.py runs/russian/student-trim-23000-none-3x192-d0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, print_table  # noqa: E402

from vocabshrink.models import encoder, load_student  # noqa: E402

LENGTHS = (18, 22, 25, 28, 31, 35, 24, 27)  # teacher tokens a sentence, around the Russian data's mean of 25


def batches(vocab: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded random batches of `size` rows at each of LENGTHS, an eighth of the rows padded to half length."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(5, vocab, (size, n), generator=gen)
        mask = torch.ones(size, n, dtype=torch.long)
        mask[: size // 8, n // 2:] = 0
        out.append((ids, mask))
    return out


def time_steps(model: torch.nn.Module, data: list, precision: str, repeats: int) -> float:
    """Median seconds of one batch's forward and backward (mean-pooled output, a squared-norm loss)."""
    enabled = precision == "bf16"

    def one() -> None:
        for ids, mask in data:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            (hidden.float() * mask[..., None]).sum(1).pow(2).mean().backward()

    return median_time(one, repeats=repeats, warmup=1) / len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", type=Path, help="A student folder (init-student's output or a run's final/).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="Medians over this many passes of the 8 batches.")
    ap.add_argument("--out", type=Path, default=None, help="Write the timings as JSON here too.")
    a = ap.parse_args()
    model = encoder(load_student(a.student, "cpu")).train()
    data = batches(model.config.vocab_size, a.batch_size)
    out = {"student": str(a.student), "batch_size": a.batch_size, "lengths": LENGTHS,
           "threads": torch.get_num_threads(), "seconds": {}}
    rows = []
    for precision in ("fp32", "bf16"):
        for attention in ("sdpa", "eager"):  # distill --attention's choices
            model.set_attn_implementation(attention)
            s = time_steps(model, data, precision, a.repeats)
            out["seconds"][f"{precision} {attention}"] = s
            rows.append([precision, attention, f"{1000 * s:.1f}"])
    print_table(f"encoder forward + backward, batches of {a.batch_size}, {torch.get_num_threads()} threads",
                ["precision", "attention", "ms a batch"], rows)
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
