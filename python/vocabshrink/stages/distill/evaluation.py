"""distill's held-out metrics: MLM, hidden-state distances and teacher agreement on a few fixed batches.

Imports `agreement`, `losses` and the objective.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ... import losses as L
from ...agreement import mean_pool, teacher_agreement
from ...teacher_cache import CachedTeacher
from .batches import to_device
from .objective import COMPONENTS, LossSetup, Teacher, encoder, loss_sums, row_counts, teacher_sentences


@torch.no_grad()
def held_out_metrics(student: torch.nn.Module, projection: L.HiddenProjection | None, teacher: Teacher,
                     batches: Sequence[dict[str, Any]], setup: LossSetup, device: torch.device) -> dict[str, float]:
    """MLM loss and accuracy, hidden MSE and cosine to the teacher, and teacher agreement on held-out batches."""
    student.eval()
    # hidden metrics need comparable widths: equal ones, or the trained projection
    hidden = 1.0 if projection is not None or student.config.hidden_size == teacher.config.hidden_size else 0.0
    if isinstance(teacher, CachedTeacher) and not {t for _, t in setup.layer_map} <= set(teacher.layers):
        hidden = 0.0  # a cache made for the sentence losses alone holds no token states
    hidden_setup = LossSetup(**{**setup.__dict__, "mse_weight": hidden, "cosine_weight": hidden, "mlm_weight": 1.0,
                                "kl_weight": 0.0, "match_weight": 0.0})
    totals = torch.zeros(len(COMPONENTS), dtype=torch.float64)
    counts = torch.zeros(len(COMPONENTS), dtype=torch.float64)
    correct = 0
    t_emb, s_emb = [], []
    for batch in batches:
        batch = to_device(batch, device)
        sums = loss_sums(student, projection, teacher, batch, hidden_setup, torch.autocast("cpu", enabled=False))
        counts += row_counts(batch, hidden_setup)
        for i, name in enumerate(COMPONENTS):
            if name in sums:
                totals[i] += float(sums[name])
        own = student(input_ids=batch["student_input_ids"], attention_mask=batch["student_attention_mask"])
        labels = batch["mlm_labels"]
        correct += int(((own.logits.argmax(-1) == labels) & (labels != -100)).sum())
        t_emb.append(teacher_sentences(teacher, batch).cpu())
        s_emb.append(_sentence_embedding(student, batch, "student_original_ids", "student_attention_mask"))
    student.train()
    metrics = _metrics(totals, counts, correct, hidden, setup)
    agreement = _teacher_agreement(torch.cat(t_emb), torch.cat(s_emb)) if t_emb else None
    if agreement is not None:
        metrics["eval_teacher_agreement"] = agreement
    return metrics


def _sentence_embedding(model: torch.nn.Module, batch: dict[str, Any], ids: str, mask: str) -> torch.Tensor:
    """Mean-pooled last layer over the unmasked text (the sentence embedding teacher agreement compares)."""
    last = encoder(model)(input_ids=batch[ids], attention_mask=batch[mask]).last_hidden_state
    return mean_pool(last.float(), batch[mask]).cpu()


def _metrics(totals: torch.Tensor, counts: torch.Tensor, correct: int, hidden: float,
             setup: LossSetup) -> dict[str, float]:
    metrics = {
        "eval_mlm_loss": float(totals[0] / max(counts[0], 1)),
        "eval_mlm_accuracy": correct / max(float(counts[0]), 1.0),
    }
    if hidden:
        metrics["eval_hidden_mse"] = float(totals[1] / max(counts[1], 1))
        metrics["eval_hidden_cosine"] = 1.0 - float(totals[2] / max(counts[2], 1))
    if setup.sentence_weight > 0:
        metrics["eval_sentence_cosine"] = 1.0 - float(totals[5] / max(counts[5], 1))
    if setup.similarity_weight > 0:
        metrics["eval_similarity_mse"] = float(totals[6] / max(counts[6], 1))
    return metrics


def _teacher_agreement(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> float | None:
    """The metric of `vocabshrink.agreement`, on sentence embeddings gathered over the evaluation batches."""
    if teacher_emb.shape[0] < 3:
        return None
    return float(teacher_agreement(teacher_emb.numpy(), student_emb.numpy()))
