"""The losses of one distillation micro-batch: teacher and student passes, each component summed over its rows.

`distill` (vocabshrink.train) calls `loss_sums` per micro-batch, sums `row_counts` over micro-batches and ranks,
and `combine`s the two into the step's loss; `fit_projection` gives the width projection its least-squares start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

from ... import losses as L
from ...agreement import mean_pool
from ...models import encoder, mlm_head  # noqa: F401  (encoder: also read from here by evaluation and benchmarks)
from ...teacher_cache import CachedTeacher, TeacherOutput

# The teacher the losses read: a frozen model, or its states cached by `cache-teacher`.
Teacher = Union[torch.nn.Module, CachedTeacher]


def num_layers(model: torch.nn.Module) -> int:
    return int(model.config.num_hidden_layers)


@dataclass
class LossSetup:
    """What the step needs besides the models: weights, the layer pairs and the vocabulary maps."""

    mode: str
    layer_map: list[tuple[int, int]]
    mlm_weight: float
    mse_weight: float
    cosine_weight: float
    kl_weight: float
    match_weight: float
    temperature: float
    sum_probs: bool
    reduce_map: L.ReduceMap | None
    shared_teacher: torch.Tensor | None  # teacher id -> student id for shared tokens, as a lookup table (-1: none)
    sentence_weight: float = 0.0
    sentence_pair: tuple[int, int] = (-1, -1)  # (student layer, teacher layer) whose mean-pooled states are compared
    similarity_weight: float = 0.0  # in-batch cosine-similarity matrices of the sentence embeddings

    @property
    def need_sentences(self) -> bool:
        return self.sentence_weight > 0 or self.similarity_weight > 0

    @property
    def need_hidden(self) -> bool:
        return self.mse_weight > 0 or self.cosine_weight > 0

    @property
    def need_states(self) -> bool:
        """Whether the passes must return per-layer hidden states."""
        return self.need_hidden or self.need_sentences

    @property
    def need_logits(self) -> bool:
        return self.kl_weight > 0 or self.match_weight > 0

    @property
    def weights(self) -> dict[str, float]:
        """Each loss component's weight, by the names of COMPONENTS."""
        return dict(zip(COMPONENTS, (self.mlm_weight, self.mse_weight, self.cosine_weight, self.kl_weight,
                                     self.match_weight, self.sentence_weight, self.similarity_weight)))


COMPONENTS = ("mlm", "mse", "cosine", "kl", "match", "sentence", "similarity")


def _rows(batch: dict[str, Any], setup: LossSetup) -> dict[str, torch.Tensor]:
    """Boolean masks of the rows each loss averages over (known before any forward pass)."""
    t_mask = batch["teacher_attention_mask"].bool()
    rows: dict[str, torch.Tensor] = {"mlm": batch["mlm_labels"] != -100}
    if setup.mode == "split":
        split = batch["split"]
        pos = t_mask & split.teacher_keep.bool()
        rows["hidden"] = pos
        rows["kl"] = pos
        if setup.shared_teacher is not None:
            single = (split.span_end - split.span_start) == 1
            shared = setup.shared_teacher.to(t_mask.device)[batch["teacher_input_ids"]] >= 0
            rows["match"] = pos & single & shared
    else:
        chunks = batch["chunks"]
        rows["hidden"] = chunks.chunk_mask.bool()
        b, c = chunks.chunk_mask.shape
        t_count = (chunks.teacher_indptr[1:] - chunks.teacher_indptr[:-1]).view(b, c)
        s_count = (chunks.student_indptr[1:] - chunks.student_indptr[:-1]).view(b, c)
        one_teacher = rows["hidden"] & (t_count == 1)
        rows["kl"] = one_teacher
        rows["match"] = torch.zeros_like(one_teacher)
        nnz_t, nnz_s = chunks.teacher_indices.numel(), chunks.student_indices.numel()
        if setup.shared_teacher is not None and nnz_t and nnz_s:
            # a chunk of one token on each side, the same shared token on both: identically tokenized
            first_t = chunks.teacher_indices[chunks.teacher_indptr[:-1].long().clamp(max=nnz_t - 1)].long()
            first_s = chunks.student_indices[chunks.student_indptr[:-1].long().clamp(max=nnz_s - 1)].long()
            t_ids = batch["teacher_input_ids"].reshape(-1)[first_t].view(b, c)
            s_ids = batch["student_original_ids"].reshape(-1)[first_s].view(b, c)
            mapped = setup.shared_teacher.to(t_ids.device)[t_ids]
            rows["match"] = one_teacher & (s_count == 1) & (mapped == s_ids) & (mapped >= 0)
    return rows


def row_counts(batch: dict[str, Any], setup: LossSetup) -> torch.Tensor:
    """Rows per loss component (as COMPONENTS), float64, for normalising sums across ranks."""
    rows = _rows(batch, setup)
    n_pairs = len(setup.layer_map)
    hidden = float(rows["hidden"].sum()) * n_pairs
    sentences = float((batch["teacher_attention_mask"].sum(1) > 0).sum())
    return torch.tensor([float(rows["mlm"].sum()), hidden, hidden, float(rows["kl"].sum()),
                         float(rows["match"].sum()) if "match" in rows else 0.0, sentences,
                         sentences * (sentences - 1)], dtype=torch.float64)


def _paired_states(s_states: Sequence[torch.Tensor], t_states: Sequence[torch.Tensor], pair: tuple[int, int],
                   batch: dict[str, Any], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher states of one layer pair on common rows: per teacher position (split mode, student
    states span-averaged) or per common chunk (offsets mode, both sides chunk-averaged); mask with `_rows`'s
    "hidden"."""
    s_layer, t_layer = pair
    s_h, t_h = s_states[s_layer].float(), t_states[t_layer].float()
    if mode == "split":
        return L.span_mean(s_h, batch["split"]), t_h
    return L.chunk_mean(s_h, batch["chunks"], "student"), L.chunk_mean(t_h, batch["chunks"], "teacher")


def loss_sums(student: torch.nn.Module, projection: L.HiddenProjection | None, teacher: Teacher,
              batch: dict[str, Any], setup: LossSetup, autocast: Any) -> dict[str, torch.Tensor]:
    """Each loss component summed over its rows (a weight of 0 skips the component's computation)."""
    sums: dict[str, torch.Tensor] = {}
    rows = _rows(batch, setup)
    need_teacher = setup.need_states or setup.need_logits
    t_out = teacher_outputs(teacher, batch, logits=setup.need_logits, states=setup.need_states) \
        if need_teacher else None
    own, own_states = _own_pass(student, batch, setup, autocast, sums)
    split_out = _split_pass(student, batch, setup, autocast) if setup.mode == "split" and need_teacher else None
    s_states = split_out.hidden_states if split_out is not None else own_states
    if setup.need_hidden:
        sums.update(_hidden_losses(s_states, t_out.hidden_states, projection, batch, setup, rows["hidden"]))
    if setup.need_sentences:
        sums.update(_sentence_losses(s_states, t_out, projection, batch, setup))
    if setup.need_logits:
        s_logits = split_out.logits if split_out is not None else own.logits
        sums.update(_logit_losses(s_logits, t_out.logits, batch, setup, rows))
    return sums


def teacher_outputs(teacher: Teacher, batch: dict[str, Any], *, logits: bool, states: bool) -> TeacherOutput:
    """The teacher's hidden states (and logits, pooled sentence embedding where known) for a batch: a forward
    pass of the model, or the rows of its cache (dense logits rebuilt from its top K only when asked for)."""
    if isinstance(teacher, CachedTeacher):
        return teacher.outputs(batch, logits=logits)
    with torch.no_grad():
        t_model = teacher if logits else encoder(teacher)
        out = t_model(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"],
                      output_hidden_states=states)
    return TeacherOutput(out.hidden_states, None, getattr(out, "logits", None))


def teacher_sentences(teacher: Teacher, batch: dict[str, Any]) -> torch.Tensor:
    """The teacher's sentence embeddings (mean-pooled last layer) of a batch, float32."""
    out = teacher_outputs(teacher, batch, logits=False, states=True)
    if out.pooled is not None:
        return out.pooled
    return mean_pool(out.hidden_states[-1].float(), batch["teacher_attention_mask"])


def _own_pass(student: torch.nn.Module, batch: dict[str, Any], setup: LossSetup, autocast: Any,
              sums: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """Pass 1: the student over its own tokens, MLM-masked when the MLM loss is on (else the text as it is).

    Returns (the output with logits, or None; its hidden states) and puts the MLM sum into `sums`. The
    vocabulary head runs on the masked positions only (15% of them) unless the offsets-mode KL needs every
    position's logits: at a 264-wide student the full head costs about as much as the encoder.
    """
    offsets = setup.mode == "offsets"
    offsets_hidden, offsets_logits = offsets and setup.need_hidden, offsets and setup.need_logits
    offsets_sentence = offsets and setup.need_sentences
    if not (setup.mlm_weight > 0 or offsets_hidden or offsets_logits or offsets_sentence):
        return None, None
    own_ids = batch["student_input_ids"] if setup.mlm_weight > 0 else batch["student_original_ids"]
    head = mlm_head(student)
    want_states = offsets_hidden or offsets_sentence
    with autocast:
        if head is None or offsets_logits:
            own = student(input_ids=own_ids, attention_mask=batch["student_attention_mask"],
                          output_hidden_states=want_states)
            if setup.mlm_weight > 0:
                sums["mlm"] = L.mlm_loss(own.logits, batch["mlm_labels"], reduction="sum")
            return own, own.hidden_states
        enc = encoder(student)(input_ids=own_ids, attention_mask=batch["student_attention_mask"],
                               output_hidden_states=want_states)
        if setup.mlm_weight > 0:
            labels = batch["mlm_labels"]
            picked = labels != -100
            sums["mlm"] = L.mlm_loss(head(enc.last_hidden_state[picked]), labels[picked], reduction="sum")
        return None, enc.hidden_states


def _split_pass(student: torch.nn.Module, batch: dict[str, Any], setup: LossSetup, autocast: Any) -> Any:
    """Pass 2 (split mode): the student over the teacher's tokens split by the student vocabulary."""
    split = batch["split"]
    model = student if setup.need_logits else encoder(student)
    with autocast:
        return model(input_ids=split.student_ids, attention_mask=split.student_mask.long(),
                     output_hidden_states=setup.need_states)


def _hidden_losses(s_states: Any, t_states: Any, projection: L.HiddenProjection | None, batch: dict[str, Any],
                   setup: LossSetup, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Token-level MSE and cosine of the mapped layers (student spans averaged onto teacher tokens)."""
    mse = cos = 0.0
    for s_layer, t_layer in setup.layer_map:
        s_h, t_h = _paired_states(s_states, t_states, (s_layer, t_layer), batch, setup.mode)
        if projection is not None:
            s_h = projection(s_h, s_layer, t_layer)
        if setup.mse_weight > 0:
            mse = mse + L.hidden_mse(s_h, t_h, mask, reduction="sum")
        if setup.cosine_weight > 0:
            cos = cos + L.hidden_cosine(s_h, t_h, mask, reduction="sum")
    out = {}
    if setup.mse_weight > 0:
        out["mse"] = mse
    if setup.cosine_weight > 0:
        out["cosine"] = cos
    return out


def _sentence_losses(s_states: Any, t_out: TeacherOutput, projection: L.HiddenProjection | None, batch: dict[str, Any],
                     setup: LossSetup) -> dict[str, torch.Tensor]:
    """The sentence-embedding cosine and the in-batch similarity loss, on mean-pooled last layers."""
    # the sentence embedding the way sentence-transformers and `evaluate` make it: the mean over all tokens
    s_layer, t_layer = setup.sentence_pair
    t_last = t_layer == len(t_out.hidden_states) - 1
    t_sent = t_out.pooled if t_out.pooled is not None and t_last else \
        mean_pool(t_out.hidden_states[t_layer].float(), batch["teacher_attention_mask"])
    s_mask = batch["split"].student_mask if setup.mode == "split" else batch["student_attention_mask"]
    s_sent = mean_pool(s_states[s_layer].float(), s_mask)
    present = batch["teacher_attention_mask"].sum(1) > 0
    projected = projection(s_sent, s_layer, t_layer) if projection is not None else None
    out = {}
    if setup.similarity_weight > 0:
        # the student's own space needs no projection; the projected one is what the exported model serves
        sim = L.similarity_loss(s_sent, t_sent, present, reduction="sum")
        if projected is not None:
            sim = 0.5 * (sim + L.similarity_loss(projected, t_sent, present, reduction="sum"))
        out["similarity"] = sim
    if setup.sentence_weight > 0:
        out["sentence"] = L.hidden_cosine(projected if projected is not None else s_sent, t_sent, present,
                                          reduction="sum")
    return out


def _logit_losses(s_logits: torch.Tensor, t_logits: torch.Tensor, batch: dict[str, Any], setup: LossSetup,
                  rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reduce-map KL and the shared-vocabulary KL, on student logits pooled onto teacher tokens or chunks."""
    t_logits = t_logits.float()
    if setup.mode == "split":
        pooled = L.span_mean(s_logits.float(), batch["split"])  # [B, Lt, V_S]
        t_rows = t_logits
    else:
        pooled = L.chunk_mean(s_logits.float(), batch["chunks"], "student")  # [B, C, V_S]
        t_rows = L.chunk_mean(t_logits, batch["chunks"], "teacher")  # one teacher token: its own logits
    out = {}
    if setup.kl_weight > 0:
        m = rows["kl"]
        out["kl"] = L.reduce_kl(pooled[m], t_rows[m], setup.reduce_map, setup.temperature, setup.sum_probs,
                                reduction="sum")
    if setup.match_weight > 0:
        m = rows["match"]
        shared_t = torch.nonzero(setup.shared_teacher >= 0).flatten()
        shared_s = setup.shared_teacher[shared_t]
        out["match"] = L.match_kl(pooled[m], t_rows[m], shared_t, shared_s, setup.temperature, reduction="sum")
    return out


def combine(sums: dict[str, torch.Tensor], counts: torch.Tensor, setup: LossSetup) -> tuple[torch.Tensor, dict]:
    """The weighted loss: each component's sum divided by its global row count (step, all ranks)."""
    weights = setup.weights
    total = torch.zeros((), dtype=torch.float32)
    parts = {}
    for i, name in enumerate(COMPONENTS):
        if name in sums:
            value = sums[name] / max(float(counts[i]), 1.0)
            total = total.to(value.device) + weights[name] * value
            parts[name] = value.detach()
    return total, parts


@torch.no_grad()
def fit_projection(projection: L.HiddenProjection, student: torch.nn.Module, teacher: Teacher,
                   batches: Sequence[dict[str, Any]], setup: LossSetup, ridge: float = 1e-3) -> dict[str, float]:
    """Start every map of `projection` at the affine least-squares fit of the teacher's states from the student's.

    A random projection makes the first steps train the student towards a random target, which moves the copied
    teacher layers away from the teacher before the projection has learned anything; the fit (ridge-regularised
    normal equations over the aligned positions of `batches`, unmasked text) gives a meaningful start instead.
    Returns the mean cosine between fitted and teacher states per map, on the fitting positions.
    """
    was_training = student.training
    student.eval()
    keys = [projection.key(*p) for p in projection.layer_map]
    xtx = {k: torch.zeros(projection.student_width + 1, projection.student_width + 1, dtype=torch.float64)
           for k in keys}
    xty = {k: torch.zeros(projection.student_width + 1, projection.teacher_width, dtype=torch.float64) for k in keys}
    samples: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in keys}
    for batch in batches:
        t_states = teacher_outputs(teacher, batch, logits=False, states=True).hidden_states
        if setup.mode == "split":
            split = batch["split"]
            s_states = encoder(student)(input_ids=split.student_ids, attention_mask=split.student_mask.long(),
                                        output_hidden_states=True).hidden_states
        else:
            s_states = encoder(student)(input_ids=batch["student_original_ids"],
                                        attention_mask=batch["student_attention_mask"],
                                        output_hidden_states=True).hidden_states
        mask = _rows(batch, setup)["hidden"]
        for pair, key in zip(projection.layer_map, keys):
            s_h, t_h = _paired_states(s_states, t_states, pair, batch, setup.mode)
            # the normal equations are accumulated on the CPU in float64, whatever device the models run on
            x, y = s_h[mask].cpu(), t_h[mask].cpu()
            x1 = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
            xtx[key] += x1.T @ x1
            xty[key] += x1.T @ y.double()
            samples[key].append((x1, y))
    fit = {}
    for key in keys:
        a = xtx[key].clone()
        d = a.shape[0] - 1
        if float(a[-1, -1]) < d:  # fewer positions than unknowns: keep the random start
            continue
        reg = ridge * float(torch.diagonal(a)[:-1].mean())
        a[:-1, :-1] += reg * torch.eye(d, dtype=torch.float64)
        w = torch.linalg.solve(a, xty[key])
        lin = projection.maps[key]
        lin.weight.copy_(w[:-1].T.to(lin.weight.dtype))
        lin.bias.copy_(w[-1].to(lin.bias.dtype))
        cos = [torch.nn.functional.cosine_similarity((x1 @ w).float(), y, dim=-1) for x1, y in samples[key]]
        fit[key] = round(float(torch.cat(cos).mean()), 4)
    student.train(was_training)
    return fit


def active_components(setup: LossSetup) -> set[str]:
    return {k for k, v in setup.weights.items() if v > 0}
