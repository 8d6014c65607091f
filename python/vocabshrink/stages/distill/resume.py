"""distill's resume and checkpoints: pick up the newest `step-N/` of a run, or refuse to overwrite one.

Imports the package's `checkpoints` (the files) and `options` (what must not change).
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from ...errors import ConfigError, TrainingError
from .checkpoints import list_checkpoints, load_checkpoint, save_checkpoint, saved_settings
from .options import DEFAULTS, RESUME_FIXED
from .prepare import Run

log = logging.getLogger(__name__)


def resume(run: Run) -> None:
    """Restore the newest checkpoint with --resume; without it, refuse a folder that holds an earlier run."""
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):  # left by an interrupted write
        if run.is_main:
            shutil.rmtree(stale, ignore_errors=True)
    existing = list_checkpoints(out)
    if not run.opts.resume:
        if existing or (out / "final").exists():
            raise ConfigError(f"{out}: holds an earlier run (step-N/ or final/); pass --resume or another --out")
        return
    if not existing:
        raise TrainingError(f"{out}: no checkpoint (step-N/) to resume from; run without --resume")
    ckpt_step, ckpt = existing[-1]
    saved = saved_settings(ckpt)
    if saved:  # checked before loading: a changed option (e.g. --embedding-lr-scale) changes the optimizer's groups
        _check_same_settings(ckpt, saved, run.settings)
    state = load_checkpoint(ckpt, run.student, run.projection, run.optimizer, run.scheduler, run.device)
    cursor = run.cursor
    cursor.epoch, cursor.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
    cursor.examples_seen, cursor.tokens_seen = state["examples_seen"], state["teacher_tokens_seen"]
    cursor.shuffle()  # the resumed epoch's batches
    run.resumed_from = ckpt_step
    if run.opts.max_minutes > 0:  # the budget goes on from the plan and the seconds the checkpoint recorded
        run.seconds_before = float(state.get("loop_seconds", 0.0))
        run.total_steps = max(ckpt_step, min(run.opts.max_steps, int(state.get("planned_steps", run.total_steps))))
    if run.is_main:
        print(f"distill: resuming from {ckpt} (step {ckpt_step} of {run.total_steps})", file=sys.stderr, flush=True)


def _check_same_settings(ckpt: Path, saved: dict, now: dict) -> None:
    # a setting newer than the checkpoint was at its default when the checkpoint was written
    fixed = {k: saved.get(k, DEFAULTS.get(k)) for k in RESUME_FIXED}
    changed = {k: (fixed[k], now.get(k)) for k in RESUME_FIXED if fixed[k] != now.get(k)}
    if changed:
        raise ConfigError(f"{ckpt}: --resume with different settings {changed}; resume with the original ones")
    if saved.get("max_steps") != now["max_steps"]:
        log.warning("resuming with --max-steps %d instead of %d: the learning-rate schedule changes from here",
                    now["max_steps"], saved.get("max_steps"))


def start_step(run: Run) -> int:
    """The first step to run: 0, or the step of the checkpoint resumed from."""
    return run.resumed_from or 0


def save(run: Run, done: int, loss: float, loop_seconds: float = 0.0) -> Path:
    """A `step-N/` checkpoint of the student, projection, optimizer, schedule, data position and RNG (rank 0);
    `loop_seconds` (the loop's time so far) and the planned last step let a `--max-minutes` run resume its budget."""
    c = run.cursor
    state = {"settings": run.settings, "teacher": str(run.opts.teacher), "student": str(run.opts.student),
             "data": [str(p) for p in run.opts.data], "out": str(run.out), "epoch": c.epoch,
             "batch_in_epoch": c.batch_in_epoch, "examples_seen": c.examples_seen,
             "teacher_tokens_seen": c.tokens_seen, "loss": loss, "loop_seconds": round(loop_seconds, 3),
             "planned_steps": run.total_steps}
    return save_checkpoint(run.out, done, run.student, run.projection, run.optimizer, run.scheduler, state,
                           run.opts.keep_checkpoints)
