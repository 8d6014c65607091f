"""distill's time budget (`--max-minutes`): the step count planned from the measured step time.

A plan fixed before the run (a few timed steps, then `--max-steps`) misses when the machine's speed changes
during the run: a 60-minute Russian run on a 2-core cloud CPU planned at 11,698 tokens/s ran at 10,224 and
ended 3.7 minutes late (benchmarks/RESULTS.md). Here the loop re-plans every `REPLAN_EVERY` steps from the speed
so far and stretches the learning-rate schedule to the plan, so the run ends on time with the rate decayed to its
end.

Imports `distributed` and `prepare` (the schedule).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from . import distributed
from .prepare import Run, schedule

REPLAN_EVERY = 20  # steps between plans: enough steps to time, few enough that a slowdown is caught early


@dataclass
class Budget:
    """The loop's clock: the whole budget, what earlier sessions of a resumed run used, and this session's start."""

    seconds: float
    used_before: float
    first_step: int
    started: float

    def spent(self, now: float) -> float:
        """Loop seconds used so far, earlier sessions included."""
        return self.used_before + max(0.0, now - self.started)

    def plan(self, done: int, now: float, max_steps: int) -> int:
        """The last step that fits: `done` plus the steps the rest of the budget holds at this session's speed,
        at most `max_steps`."""
        elapsed, steps = now - self.started, done - self.first_step
        left = self.seconds - self.spent(now)
        if left <= 0:
            return done
        if steps <= 0 or elapsed <= 0:
            return max_steps
        return max(done, min(max_steps, done + math.floor(left * steps / elapsed)))


def used(budget: Budget | None) -> float:
    """The budget's seconds spent so far (0 without one), for the checkpoint that a resume continues from."""
    return 0.0 if budget is None else budget.spent(time.time())


def start(run: Run, first_step: int) -> Budget | None:
    """This session's budget (None without --max-minutes); on resume, the schedule stretched to the saved plan."""
    if run.opts.max_minutes <= 0:
        return None
    budget = Budget(60.0 * run.opts.max_minutes, run.seconds_before, first_step, time.time())
    if run.total_steps != run.opts.max_steps:  # a resumed plan: the loaded schedule was built for --max-steps
        stretch(run, run.total_steps, first_step)
    return budget


def replan(run: Run, budget: Budget | None, done: int) -> None:
    """Every REPLAN_EVERY steps of this session: re-plan the run's last step from rank 0's clock, the same on every
    rank (the step decides when, never a rank's own clock: all ranks must meet in the reduce), and stretch the
    schedule to it."""
    if budget is None or (done - budget.first_step) % REPLAN_EVERY:
        return
    now = time.time()
    plan = torch.tensor([float(budget.plan(done, now, run.opts.max_steps)) if run.is_main else 0.0],
                        dtype=torch.float64)
    distributed.all_reduce(plan, run.world)  # rank 0's plan, the others add 0
    total = int(plan.item())
    if total != run.total_steps:
        stretch(run, total, done)


def stretch(run: Run, total: int, done: int) -> None:
    """The schedule for a run of `total` steps, continued at step `done` (transformers' schedule, rebuilt)."""
    run.total_steps = total
    run.scheduler = schedule(run.optimizer, run.opts.schedule, run.opts.warmup_steps, total, last_epoch=done - 1)
