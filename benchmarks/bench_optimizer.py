"""The optimizer's share of a distill step: gradient clipping and AdamW over a student's parameters, in torch's
three implementations (for-loop, foreach, fused), on the student's real shapes with random gradients.

The time of an Adam step does not depend on the gradients' values, only on the tensors' sizes: the word table
dominates a small student (23,000 x 192 of 5.85M parameters in the Russian 3 x 192 student), and a for-loop
AdamW passes over it about ten times a step.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_optimizer.py runs/russian/student-trim-23000-none-3x192-d0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, print_table  # noqa: E402

from vocabshrink.stages.distill.prepare import ADAMW_KERNELS  # noqa: E402


def parameters_of(folder: Path) -> list[torch.nn.Parameter]:
    """The student's parameters at their saved shapes, with random gradients."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    params = [torch.nn.Parameter(t.float().clone()) for t in tensors.values() if t.is_floating_point()]
    gen = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


def time_step(params: list[torch.nn.Parameter], kwargs: dict, clip: float, repeats: int) -> float:
    """Median seconds of clip + AdamW step (weight decay on matrices, as distill groups them)."""
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, **kwargs)

    def one() -> None:
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    return median_time(one, repeats=repeats, warmup=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", type=Path, help="A student folder (init-student's output or a run's final/).")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="Write the timings as JSON here too.")
    a = ap.parse_args()
    params = parameters_of(a.student)
    total = sum(p.numel() for p in params)
    rows, out = [], {"student": str(a.student), "parameters": total, "threads": torch.get_num_threads(),
                     "seconds": {}}
    for name in ("for-loop", "foreach", "fused"):  # distill --adamw's kernels; for-loop is torch's CPU default
        s = time_step(params, ADAMW_KERNELS[name], 1.0, a.repeats)
        out["seconds"][name] = s
        rows.append([name, f"{1000 * s:.1f}"])
    print_table(f"clip + AdamW step, {total / 1e6:.2f}M parameters, {torch.get_num_threads()} threads",
                ["implementation", "ms a step"], rows)
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
