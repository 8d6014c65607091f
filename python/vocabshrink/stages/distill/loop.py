"""distill's loop: one optimizer step after another, then logging, evaluation and checkpoints.

Read top to bottom, as in nanoGPT's train.py: `train` runs the steps; `step` is one
global batch (losses summed over micro-batches, gradients over ranks, clip, update).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ...errors import TrainingError
from ...progress import progress_bar
from . import budget, distributed
from .batches import seed_everything
from .checkpoints import list_checkpoints
from .evaluation import held_out_metrics
from .objective import COMPONENTS, active_components, combine, loss_sums, row_counts
from .prepare import Run
from .resume import save, start_step

log = logging.getLogger(__name__)


def train(run: Run) -> tuple[float, int]:
    """Run the steps left; returns (seconds spent, teacher tokens seen before the first of them)."""
    opts, cursor = run.opts, run.cursor
    first = start_step(run)
    run.student.train()
    clock = budget.start(run, first)
    bar = progress_bar(True, total=run.total_steps, initial=first, desc="distill", unit="step",
                       dynamic_ncols=True) if run.is_main and opts.progress else None
    logs = _Logs(run.out) if run.is_main else None
    tokens_at_start, t0 = cursor.tokens_seen, time.time()
    last_saved = t0
    done = first
    try:
        while done < run.total_steps:
            stats = step(run, done)
            done += 1
            budget.replan(run, clock, done)  # with --max-minutes: run.total_steps follows the clock
            if bar is not None and bar.total != run.total_steps:
                bar.total = run.total_steps
            if logs is not None:
                tps = (cursor.tokens_seen - tokens_at_start) / max(time.time() - t0, 1e-9)
                logs.step(run, done, stats, tps, bar)
            if run.eval_batches is not None and opts.eval_every > 0 and (done % opts.eval_every == 0
                                                                        or done == run.total_steps):
                evaluate(run, done, logs)
            if distributed.checkpoint_due(done, run.total_steps, opts.checkpoint_every, opts.checkpoint_minutes,
                                          last_saved, run.is_main, run.world):
                last_saved = time.time()
                if run.is_main:
                    save(run, done, stats["loss"], budget.used(clock))
                distributed.barrier(run.world)
    finally:
        if bar is not None:
            bar.close()
        if logs is not None:
            logs.close()
    return time.time() - t0, tokens_at_start


def step(run: Run, step_index: int) -> dict[str, Any]:
    """One optimizer step on the next global batch; returns the global loss and its parts."""
    opts = run.opts
    batches = run.cursor.micro_batches(run.collator, run.dataset, run.cursor.next_global_batch(),
                                       grad_accum=opts.grad_accum, world=run.world, rank=run.rank, micro=run.micro,
                                       device=run.device)
    counts = sum((row_counts(b, run.setup) for b in batches), torch.zeros(len(COMPONENTS), dtype=torch.float64))
    step_tokens = sum(float(b["teacher_attention_mask"].sum()) for b in batches)
    distributed.all_reduce(counts, run.world)

    # the gradients of the global loss, summed over micro-batches and ranks
    loss_value = 0.0
    parts = {name: 0.0 for name in COMPONENTS}
    for a, batch in enumerate(batches):
        # dropout depends on (seed, step, global micro-batch) alone: resume is exact, and so is any split
        # of the global batch into processes x accumulation steps
        seed_everything(opts.seed, step_index, a * run.world + run.rank)
        loss, batch_parts = combine(loss_sums(run.student, run.projection, run.teacher, batch, run.setup,
                                              run.autocast), counts, run.setup)
        loss.backward()
        loss_value += float(loss.detach())
        for k, v in batch_parts.items():
            parts[k] += float(v)
    stats = torch.tensor([loss_value, *[parts[k] for k in COMPONENTS], step_tokens], dtype=torch.float64)
    distributed.all_reduce(stats, run.world)
    loss = float(stats[0])
    if not math.isfinite(loss):
        _stop_non_finite(run, step_index, loss, stats)
    distributed.sum_gradients(run.params, run.world)
    if opts.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.params, opts.clip_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    run.cursor.examples_seen += opts.batch_size
    run.cursor.tokens_seen += int(stats[-1])
    active = active_components(run.setup)
    run.last_loss = loss
    run.last_parts = {k: float(v) for k, v in zip(COMPONENTS, stats[1:1 + len(COMPONENTS)]) if k in active}
    return {"loss": loss, "parts": run.last_parts}


def _stop_non_finite(run: Run, step_index: int, loss: float, stats: torch.Tensor) -> None:
    bad = {k: float(v) for k, v in zip(COMPONENTS, stats[1:1 + len(COMPONENTS)]) if not math.isfinite(float(v))}
    saved = list_checkpoints(run.out)
    last_ckpt = saved[-1][1] if saved else None
    raise TrainingError(
        f"step {step_index}: the loss is {loss} (non-finite components: {bad or 'the total'}); the run "
        f"stops. Last good checkpoint: {last_ckpt or 'none'}. Lower --lr, raise --warmup-steps or "
        "--clip-norm, or check the data; resume with --resume")


def evaluate(run: Run, done: int, logs: "_Logs | None") -> None:
    """Held-out metrics on rank 0 (the others wait), logged at step `done`."""
    if run.is_main:
        run.last_eval = held_out_metrics(run.student, run.projection, run.eval_teacher, run.eval_batches, run.setup,
                                         run.device)
        if logs is not None:
            logs.write({"step": done, **run.last_eval}, done)
    distributed.barrier(run.world)


class _Logs:
    """metrics.jsonl, TensorBoard when installed, and the progress bar's postfix (rank 0)."""

    def __init__(self, out: Path) -> None:
        self.file = open(out / "metrics.jsonl", "a", encoding="utf-8")
        self.writer = _tensorboard(out)

    def step(self, run: Run, done: int, stats: dict[str, Any], tokens_per_s: float, bar: Any) -> None:
        record = {"step": done, "loss": stats["loss"], **{f"loss_{k}": v for k, v in stats["parts"].items()},
                  "lr": run.scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s, "epoch": run.cursor.epoch}
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", tok_s=f"{tokens_per_s:.0f}")
        if done % max(1, run.opts.log_every) == 0 or done == run.total_steps:
            self.write(record, done)

    def write(self, record: dict[str, Any], step: int) -> None:
        log.info("%s", " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard(out: Path) -> Any:
    """A SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
