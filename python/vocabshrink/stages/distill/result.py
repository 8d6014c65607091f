"""distill's result: the last evaluation, `final/` (Hugging Face + sentence-transformers) and the report.

Imports the `export` stage for the folder it writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...files import write_atomic
from ..export import export_student, finish_folder
from . import distributed
from .checkpoints import list_checkpoints
from .evaluation import held_out_metrics
from .prepare import Run


@dataclass
class TrainingReport:
    """What `distill` did; written to `OUT/training_report.json`."""

    teacher: str
    student: str
    data: list[str]
    out: str
    final_dir: str
    projection: str | None
    steps: int
    resumed_from_step: int | None
    world_size: int
    device: str
    examples_seen: int
    teacher_tokens_seen: int
    elapsed_s: float
    tokens_per_s: float
    final_loss: float | None
    final_losses: dict[str, float]
    evaluation: dict[str, float] | None
    checkpoints: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    projection_fit: dict[str, float] | None = None  # cosine of the least-squares start per map, on its fit data
    sentence_transformers: list[str] | None = None  # the modules final/ holds for SentenceTransformer(final)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def finish(run: Run, loop_seconds: float, tokens_at_start: int) -> TrainingReport:
    """Evaluate once more if the loop did not, write final/ and the report (rank 0); every rank returns it."""
    opts = run.opts
    if run.eval_batches is not None and run.last_eval is None and run.is_main:
        run.last_eval = held_out_metrics(run.student, run.projection, run.eval_teacher, run.eval_batches, run.setup,
                                         run.device)
    final = run.out / "final"
    projection_path = export_student(run.student, run.projection, Path(opts.student), final) if run.is_main else None
    report = TrainingReport(
        teacher=str(opts.teacher), student=str(opts.student), data=[str(p) for p in opts.data], out=str(run.out),
        final_dir=str(final), projection=projection_path, steps=run.total_steps, resumed_from_step=run.resumed_from,
        world_size=run.world, device=str(run.device), examples_seen=run.cursor.examples_seen,
        teacher_tokens_seen=run.cursor.tokens_seen, elapsed_s=round(time.time() - run.started, 3),
        tokens_per_s=round((run.cursor.tokens_seen - tokens_at_start) / max(loop_seconds, 1e-9), 1),
        final_loss=run.last_loss, final_losses=run.last_parts, evaluation=run.last_eval,
        checkpoints=[str(p) for _, p in list_checkpoints(run.out)], settings=run.settings,
        projection_fit=run.projection_fit,
    )
    if run.is_main:
        # sentence-transformers modules (the teacher's pooling, the projection as Dense) and the model card
        teacher = Path(opts.teacher)
        report.sentence_transformers = finish_folder(final, teacher if teacher.is_dir() else None,
                                                     json.loads(report.to_json()))
        write_atomic(run.out / "training_report.json", report.to_json())
    distributed.barrier(run.world)
    return report
