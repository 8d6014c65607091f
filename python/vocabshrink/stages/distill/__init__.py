"""distill: train a reduced-vocabulary student against a teacher.

The stage reads top to bottom in `distill()`: check the options, set the run up
(`prepare`), resume it (`resume`), start the projection, run the loop (`loop`),
and write the result (`result`). The losses are in `objective`, the held-out
metrics in `evaluation`, the files of a checkpoint in `checkpoints`.

One process: `distill(...)`. Many: `torchrun --nproc-per-node N -m vocabshrink.cli
distill ...` (gloo on CPU, NCCL on GPU); every rank takes a disjoint slice of
each global batch, and rank 0 alone logs and writes.
"""

from __future__ import annotations

import logging
from typing import Any

from . import loop, prepare, result, resume
from .batches import collate, global_batches, open_data, to_device
from .checkpoints import list_checkpoints, save_checkpoint
from .objective import fit_projection
from .options import DistillOptions
from .prepare import Run, parse_layer_map, schedule
from .result import TrainingReport

log = logging.getLogger(__name__)

PROJECTION_FIT_BATCHES = 4  # global batches for the least-squares start of the projection

__all__ = ["DistillOptions", "TrainingReport", "distill", "global_batches", "list_checkpoints",
           "open_data", "parse_layer_map", "save_checkpoint",
           "schedule"]


def distill(options: DistillOptions | None = None, /, **kwargs: Any) -> TrainingReport:
    """Distil `teacher` into the `student` directory on the shards in `data`; write checkpoints and the result to `out`.

    Takes a `DistillOptions` or its fields as keywords. `batch_size` is the global batch of one optimizer step
    (all ranks, all accumulation micro-batches), so a run gives the same result on any number of processes.
    """
    opts = options if options is not None else DistillOptions(**kwargs)
    opts.check()
    run = prepare.setup(opts)
    resume.resume(run)
    start_projection(run)
    seconds, tokens_at_start = loop.train(run)
    return result.finish(run, seconds, tokens_at_start)


def start_projection(run: Run) -> None:
    """The projection's least-squares start on the first global batches of epoch 0 (a fresh run only).

    Every rank fits on the same batches, so the start is the same on any number of processes.
    """
    if run.projection is None or run.opts.projection_init != "fit" or run.resumed_from is not None:
        return
    fit_batches = [to_device(collate(run.collator, run.dataset, g[i:i + run.micro], 0), run.device)
                   for g in global_batches(run.cursor.lengths, run.opts.batch_size, run.opts.seed, 0)
                   [:PROJECTION_FIT_BATCHES]
                   for i in range(0, len(g), run.micro)]
    run.projection_fit = fit_projection(run.projection, run.student, run.teacher, fit_batches, run.setup)
    log.info("projection: least-squares start on %d batches, cosine to the teacher %s",
             min(PROJECTION_FIT_BATCHES, len(run.cursor.batches)), run.projection_fit)
