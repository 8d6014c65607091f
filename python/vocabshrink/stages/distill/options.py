"""distill's options: one dataclass that the CLI fills, `distill()` checks and the report records.

A new option is a field here and a click option in `cli.py`. Imports only `errors` and `models`.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError, ModelError, ShardError
from ...models import has_mlm_head

# Numeric options: (low, low is allowed, high, high is allowed); None is no bound. Checked before anything loads.
RANGES = {
    "max_steps": (1, True, None, False), "batch_size": (1, True, None, False), "grad_accum": (1, True, None, False),
    "eval_batches": (1, True, None, False), "keep_checkpoints": (1, True, None, False),
    "log_every": (1, True, None, False), "temperature": (0, False, None, False), "lr": (0, False, None, False),
    "warmup_steps": (0, True, None, False), "weight_decay": (0, True, None, False), "clip_norm": (0, True, None, False),
    "embedding_lr_scale": (0, True, None, False),
    "eval_every": (0, True, None, False), "checkpoint_every": (0, True, None, False),
    "checkpoint_minutes": (0, True, None, False), "max_minutes": (0, True, None, False),
    "seed": (0, True, 2**32 - 1, True),
    "mlm_probability": (0, False, 1, False), "max_length": (8, True, None, False),
}
CHOICES = {
    "mode": ("split", "offsets"), "schedule": ("linear", "cosine"), "projection_init": ("fit", "random"),
    "teacher_dtype": ("auto", "bf16", "fp16", "fp32"), "precision": ("auto", "fp32", "bf16"),
    "adamw": ("auto", "fused", "foreach", "for-loop"), "attention": ("auto", "sdpa", "eager"),
}
# Settings that must not change when a run is resumed (the others, e.g. max_steps, may).
RESUME_FIXED = ("mode", "layer_map", "batch_size", "grad_accum", "seed", "mlm_probability", "max_length",
                "mlm_weight", "mse_weight", "cosine_weight", "kl_weight", "match_weight", "sentence_weight",
                "similarity_weight", "temperature", "sum_probs",
                "lr", "embedding_lr_scale", "weight_decay", "warmup_steps", "schedule", "world_size")
# Fields that say where and how the run happens, not what it computes: left out of the recorded settings.
_NOT_SETTINGS = ("teacher", "student", "data", "out", "eval_data", "resume", "device", "progress", "log_every",
                 "teacher_cache")


@dataclass
class DistillOptions:
    """Everything `distill` takes; `mlm_weight=None` means 1 for a teacher with an MLM head, else 0."""

    teacher: str | Path
    student: str | Path
    data: Sequence[str | Path]
    out: str | Path
    eval_data: Sequence[str | Path] | None = None
    teacher_cache: Sequence[str | Path] | None = None  # cache-teacher folders read instead of a teacher forward
    mode: str = "split"
    layer_map: str | Sequence[tuple[int, int]] | None = None
    mlm_weight: float | None = None
    mse_weight: float = 1.0
    cosine_weight: float = 1.0
    kl_weight: float = 0.0
    match_weight: float = 0.0
    sentence_weight: float = 1.0
    similarity_weight: float = 0.0
    projection_init: str = "fit"
    temperature: float = 2.0
    sum_probs: bool = False
    batch_size: int = 64
    grad_accum: int = 1
    max_steps: int = 1000
    max_minutes: float = 0.0  # > 0: the loop's time budget; the step count (at most max_steps) follows the clock
    lr: float = 1e-3
    embedding_lr_scale: float = 1.0  # the word-embedding table's share of --lr; 0 freezes it
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "linear"
    clip_norm: float = 1.0
    mlm_probability: float = 0.15
    max_length: int | None = None
    seed: int = 0
    eval_every: int = 0
    eval_batches: int = 8
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 2
    resume: bool = False
    teacher_dtype: str = "auto"  # bf16 where the device computes it natively (same quality, faster), else fp32
    precision: str = "auto"
    adamw: str = "auto"  # torch's AdamW kernel; auto: fused on CPU and CUDA (one pass over each tensor)
    attention: str = "auto"  # the student's attention code; auto: eager for bf16 on CPU, else transformers' default
    device: str | None = None
    log_every: int = 10
    progress: bool = True

    @property
    def need_logits(self) -> bool:
        return self.kl_weight > 0 or self.match_weight > 0

    @property
    def need_sentences(self) -> bool:
        return self.sentence_weight > 0 or self.similarity_weight > 0

    def weights(self) -> dict[str, float | None]:
        return dict(mlm=self.mlm_weight, mse=self.mse_weight, cosine=self.cosine_weight, kl=self.kl_weight,
                    match=self.match_weight, sentence=self.sentence_weight, similarity=self.similarity_weight)

    def settings(self) -> dict[str, Any]:
        """What the run computes with, as recorded in checkpoints and the report (paths and logging left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_SETTINGS}

    def check(self) -> None:
        """ConfigError (ShardError/ModelError for a missing path) naming the first bad option; loads no model.

        Resolves `mlm_weight=None` from the teacher's config.json.
        """
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        if self.mlm_weight is None:  # the MLM loss trains the student's head against labels: worth it with a teacher head
            self.mlm_weight = 1.0 if has_mlm_head(self.teacher) else 0.0
        weights = self.weights()
        if not all(isinstance(w, (int, float)) and w >= 0 for w in weights.values()) \
                or not any(w > 0 for w in weights.values()):
            raise ConfigError(f"loss weights must be >= 0 and at least one > 0, got {weights}")
        _check_ranges(self)
        # --teacher-cache with the KL losses: whether the cache holds logits is checked where it is opened
        self._check_paths()

    def _check_paths(self) -> None:
        if not self.data:
            raise ConfigError("no --data shards given")
        for folder in [*self.data, *(self.eval_data or [])]:
            if not Path(folder).is_dir():
                raise ShardError(f"{folder}: no such shard folder; make one with `vocabshrink align`")
        for cache in self.teacher_cache or []:
            if not Path(cache).is_dir():
                raise ShardError(f"{cache}: no such teacher cache; make one with `vocabshrink cache-teacher`")
        if not Path(self.teacher).exists():
            raise ModelError(f"{self.teacher}: teacher not found")
        if not Path(self.student).is_dir():
            raise ModelError(f"{self.student}: student directory not found; make one with `vocabshrink init-student`")


def _check_ranges(options: DistillOptions) -> None:
    """Raise ConfigError naming the first option outside its range (NaN included)."""
    for name, (low, low_ok, high, high_ok) in RANGES.items():
        value = getattr(options, name)
        if value is None and name == "max_length":
            continue
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        fits = fits and (low is None or value > low or (low_ok and value == low))
        fits = fits and (high is None or value < high or (high_ok and value == high))
        if not fits:
            lo = "" if low is None else f"{'[' if low_ok else '('}{low}"
            hi = "inf)" if high is None else f"{high}{']' if high_ok else ')'}"
            raise ConfigError(f"--{name.replace('_', '-')} must be in {lo}, {hi}, got {value!r}")


# Each option's default, for checkpoints written before an option existed.
DEFAULTS = {f.name: f.default for f in fields(DistillOptions) if f.default is not MISSING}
