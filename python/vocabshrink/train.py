"""distill: train a reduced-vocabulary student against a teacher.

Read top to bottom: setup (processes, models, data, optimizer, resume), the
step (losses summed over micro-batches, gradients summed over ranks, clip,
update), evaluation, checkpointing, and the final export.

One process: `distill(...)`. Many: `torchrun --nproc-per-node N -m vocabshrink
distill ...` (gloo on CPU, NCCL on GPU); every rank takes a disjoint slice of
each global batch, and rank 0 alone logs and writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from . import losses as L
from .agreement import mean_pool, teacher_agreement
from .aligner import Aligner
from .checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from .distill_losses import (COMPONENTS, LossSetup, active_components, combine, encoder, fit_projection, loss_sums,
                             num_layers, row_counts)
from .errors import ConfigError, ModelError, ShardError, TrainingError
from .files import write_atomic
from .tokenization import load_tokenizer

log = logging.getLogger(__name__)

PROJECTION_FIT_BATCHES = 4  # global batches for the least-squares start of the projection
# Settings that must not change when a run is resumed (the others, e.g. max_steps, may).
_RESUME_FIXED = ("mode", "layer_map", "batch_size", "grad_accum", "seed", "mlm_probability", "max_length",
                 "mlm_weight", "mse_weight", "cosine_weight", "kl_weight", "match_weight", "sentence_weight",
                 "similarity_weight", "temperature", "sum_probs",
                 "lr", "weight_decay", "warmup_steps", "schedule", "world_size")


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


# --- small helpers -----------------------------------------------------------------------------------------------


def parse_layer_map(spec: str | Sequence[tuple[int, int]] | None, student_layers: int,
                    teacher_layers: int) -> list[tuple[int, int]]:
    """'3:6,0:0' -> [(3, 6), (0, 0)]; index 0 is the embedding output, negatives count from the last layer.

    Default: the last student layer to the last teacher layer.
    """
    if spec is None or spec == "":
        return [(student_layers, teacher_layers)]
    if isinstance(spec, str):
        pairs = []
        for part in spec.split(","):
            try:
                s, t = (int(x) for x in part.split(":"))
            except ValueError:
                raise ConfigError(f"--layer-map: {part!r} is not STUDENT:TEACHER (e.g. '3:6,0:0')") from None
            pairs.append((s, t))
    else:
        pairs = [(int(s), int(t)) for s, t in spec]
    out = []
    for s, t in pairs:
        s2 = s + student_layers + 1 if s < 0 else s
        t2 = t + teacher_layers + 1 if t < 0 else t
        if not (0 <= s2 <= student_layers and 0 <= t2 <= teacher_layers):
            raise ConfigError(f"--layer-map: {s}:{t} is out of range; the student has layers 0..{student_layers} and "
                              f"the teacher 0..{teacher_layers} (0 = embedding output)")
        out.append((s2, t2))
    if len(set(out)) != len(out):
        raise ConfigError(f"--layer-map: a pair appears twice in {spec!r}")
    return out


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str) -> float:
    """Linear warmup to 1, then linear or cosine decay to 0 at max_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def global_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's global batches: a seeded shuffle, then examples of similar length grouped together.

    Sorting inside windows of 50 batches keeps padding low while the order of
    batches stays random. Only full batches are kept, so that every rank gets
    the same number of examples per step.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def _seed_everything(*key: int) -> None:
    seq = np.random.SeedSequence(list(key))
    s = int(seq.generate_state(1, dtype=np.uint64)[0] % (2**63))
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        out[k] = v.to(device) if hasattr(v, "to") else v
    return out


# --- data: vocabshrink.data provides the shards' Dataset and the collate callable --------------------------------


def open_data(paths: Sequence[str | Path], teacher_tokenizer: Any, student_tokenizer: Any, aligner: Aligner,
              *, mode: str, mlm_probability: float, max_length: int | None, seed: int) -> tuple[Any, np.ndarray, Any]:
    """(dataset, per-example lengths, collate callable) over shard folders made by `vocabshrink align`."""
    from . import data as data_mod

    dataset = data_mod.ShardDataset([str(p) for p in paths], teacher_tokenizer, student_tokenizer)
    need = "split" if mode == "split" else "chunks"
    if not getattr(dataset, f"has_{need}"):
        raise ShardError(f"{paths[0]}: these shards were aligned with --alignment {dataset.alignment}, but --mode "
                         f"{mode} needs {'split' if mode == 'split' else 'offsets'} data; align again with "
                         "--alignment both, or change --mode")
    extra = {} if max_length is None else {"max_length": max_length}
    collate = data_mod.Collator.from_dataset(dataset, table=aligner, mlm_probability=mlm_probability, seed=seed,
                                             split=mode == "split", chunks=mode == "offsets", **extra)
    return dataset, np.asarray(dataset.lengths("max")), collate


def _collate(collate: Any, dataset: Any, indices: np.ndarray, epoch: int) -> dict[str, Any]:
    """A batch; MLM masks depend on (seed, epoch, example indices) alone, so resume and any rank split repeat them."""
    if hasattr(collate, "set_epoch"):
        collate.set_epoch(epoch)
    return collate([dataset[int(i)] for i in indices])


# --- models ------------------------------------------------------------------------------------------------------


def _has_mlm_head(teacher: Path) -> bool:
    """Whether the teacher's config names an architecture with an MLM head (read without loading the model)."""
    try:
        archs = json.loads((teacher / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith(("ForMaskedLM", "ForPreTraining")) for a in archs)


def _load_teacher(teacher: str | Path, need_logits: bool, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    path = Path(teacher)
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: no config.json; pass a Hugging Face model directory as --teacher")
    if need_logits:
        config = AutoConfig.from_pretrained(path)
        archs = config.architectures or []
        if not any(a.endswith("ForMaskedLM") or a.endswith("ForPreTraining") for a in archs):
            raise ModelError(f"{path}: the KL losses need teacher logits, but this teacher ({', '.join(archs) or '?'}) "
                             "has no MLM head; set --kl-weight 0 and --match-weight 0, or use a *ForMaskedLM teacher")
        model, info = AutoModelForMaskedLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
        head_missing = [k for k in info.get("missing_keys", []) if "bert." not in k and "embeddings" not in k]
        if head_missing:
            raise ModelError(f"{path}: the MLM head's weights are missing ({head_missing[:3]}...); the KL losses need "
                             "a trained head: set --kl-weight 0 and --match-weight 0")
    else:
        archs = AutoConfig.from_pretrained(path).architectures or []
        cls = AutoModelForMaskedLM if any(a.endswith("ForMaskedLM") for a in archs) else AutoModel
        model = cls.from_pretrained(path, dtype=dtype)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_student(student: str | Path, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForMaskedLM

    path = Path(student)
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: no student model here (config.json missing); make one with `vocabshrink "
                         "init-student --teacher T --tokenizer TOK --out DIR`")
    try:
        model = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the student as a masked language model ({exc})") from exc
    return model.to(device)


# --- distributed -------------------------------------------------------------------------------------------------


def _setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # The loss counts and step statistics are reduced as CPU tensors: on GPUs they go through gloo, the
        # gradients through NCCL (NCCL alone refuses CPU tensors).
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def _sum_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Sum gradients over ranks in one flat buffer.

    Each rank's loss is already divided by the global row count, so the sum is
    the gradient of the global loss. (We do not use DDP's wrapper: a step may
    run the student twice, over its own and over the split tokens, before one
    backward.)
    """
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


# --- evaluation --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(student: torch.nn.Module, projection: L.HiddenProjection | None, teacher: torch.nn.Module,
             batches: Sequence[dict[str, Any]], setup: LossSetup, device: torch.device) -> dict[str, float]:
    """MLM loss and accuracy, hidden MSE and cosine to the teacher, and teacher agreement on held-out batches."""
    student.eval()
    # hidden metrics need comparable widths: equal ones, or the trained projection
    hidden = 1.0 if projection is not None or student.config.hidden_size == teacher.config.hidden_size else 0.0
    hidden_setup = LossSetup(**{**setup.__dict__, "mse_weight": hidden, "cosine_weight": hidden, "mlm_weight": 1.0,
                                "kl_weight": 0.0, "match_weight": 0.0})
    totals = torch.zeros(len(COMPONENTS), dtype=torch.float64)
    counts = torch.zeros(len(COMPONENTS), dtype=torch.float64)
    correct = 0
    t_emb, s_emb = [], []
    for batch in batches:
        batch = _to_device(batch, device)
        sums = loss_sums(student, projection, teacher, batch, hidden_setup, torch.autocast("cpu", enabled=False))
        counts += row_counts(batch, hidden_setup)
        for i, name in enumerate(COMPONENTS):
            if name in sums:
                totals[i] += float(sums[name])
        own = student(input_ids=batch["student_input_ids"], attention_mask=batch["student_attention_mask"])
        labels = batch["mlm_labels"]
        correct += int(((own.logits.argmax(-1) == labels) & (labels != -100)).sum())
        # sentence embeddings for teacher agreement: mean-pooled last layers over unmasked text
        t_last = encoder(teacher)(input_ids=batch["teacher_input_ids"],
                                   attention_mask=batch["teacher_attention_mask"]).last_hidden_state
        s_last = encoder(student)(input_ids=batch["student_original_ids"],
                                   attention_mask=batch["student_attention_mask"]).last_hidden_state
        t_emb.append(mean_pool(t_last.float(), batch["teacher_attention_mask"]).cpu())
        s_emb.append(mean_pool(s_last.float(), batch["student_attention_mask"]).cpu())
    student.train()
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
    agreement = _teacher_agreement(torch.cat(t_emb), torch.cat(s_emb)) if t_emb else None
    if agreement is not None:
        metrics["eval_teacher_agreement"] = agreement
    return metrics


def _teacher_agreement(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> float | None:
    """The metric of `vocabshrink.agreement`, on sentence embeddings gathered over the evaluation batches."""
    if teacher_emb.shape[0] < 3:
        return None
    return float(teacher_agreement(teacher_emb.numpy(), student_emb.numpy()))


# --- export ------------------------------------------------------------------------------------------------------


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "added_tokens.json")


def export_student(student: torch.nn.Module, projection: L.HiddenProjection | None, student_dir: Path,
                   final: Path) -> str | None:
    """The student as a Hugging Face directory (+ projection.safetensors, described in config.json)."""
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    if projection is not None:
        s_layers = num_layers(student)
        # the student's last layer, paired with the deepest teacher layer it is trained against
        last = sorted(p for p in projection.layer_map if p[0] == s_layers)[-1:] or projection.layer_map[-1:]
        student.config.vocabshrink_projection = {
            "file": "projection.safetensors",
            "in_features": projection.student_width,
            "out_features": projection.teacher_width,
            "layer_map": [list(p) for p in projection.layer_map],
            "keys": {projection.key(*p): list(p) for p in projection.layer_map},
            "embedding_key": projection.key(*last[0]),
            "usage": "teacher_space = hidden @ W[key].weight.T + W[key].bias, keys 'maps.<key>.weight'/'.bias'",
        }
    student.save_pretrained(tmp, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        if (student_dir / name).exists():
            shutil.copy2(student_dir / name, tmp / name)
    proj_path = None
    if projection is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()},
                  str(tmp / "projection.safetensors"))
        proj_path = str(final / "projection.safetensors")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return proj_path


# --- the stage ---------------------------------------------------------------------------------------------------


# Numeric options: (low, low is allowed, high, high is allowed); None is no bound. Checked before anything loads.
_RANGES = {
    "max_steps": (1, True, None, False), "batch_size": (1, True, None, False), "grad_accum": (1, True, None, False),
    "eval_batches": (1, True, None, False), "keep_checkpoints": (1, True, None, False),
    "log_every": (1, True, None, False), "temperature": (0, False, None, False), "lr": (0, False, None, False),
    "warmup_steps": (0, True, None, False), "weight_decay": (0, True, None, False), "clip_norm": (0, True, None, False),
    "eval_every": (0, True, None, False), "checkpoint_every": (0, True, None, False),
    "checkpoint_minutes": (0, True, None, False), "seed": (0, True, 2**32 - 1, True),
    "mlm_probability": (0, False, 1, False), "max_length": (8, True, None, False),
}


def _check_ranges(settings: dict) -> None:
    """Raise ConfigError naming the first option outside its range (NaN included)."""
    for name, (low, low_ok, high, high_ok) in _RANGES.items():
        value = settings.get(name)
        if value is None and name == "max_length":
            continue
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        fits = fits and (low is None or value > low or (low_ok and value == low))
        fits = fits and (high is None or value < high or (high_ok and value == high))
        if not fits:
            lo = "" if low is None else f"{'[' if low_ok else '('}{low}"
            hi = "inf)" if high is None else f"{high}{']' if high_ok else ')'}"
            raise ConfigError(f"--{name.replace('_', '-')} must be in {lo}, {hi}, got {value!r}")


def _checkpoint_due(done: int, max_steps: int, every: int, minutes: float, last_saved: float, is_main: bool,
                    world: int) -> bool:
    """Every `every` steps, when `minutes` of wall time have passed since the last one, and at the end."""
    if every <= 0 and minutes <= 0:
        return False
    if done == max_steps or (every > 0 and done % every == 0):
        return True
    if minutes <= 0:
        return False
    # rank 0's clock decides, so that every rank saves (and waits) at the same step
    flag = torch.tensor([1.0 if is_main and time.time() - last_saved >= 60 * minutes else 0.0], dtype=torch.float64)
    _all_reduce(flag, world)
    return bool(flag.item() > 0)


def distill(
    *,
    teacher: str | Path,
    student: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    eval_data: Sequence[str | Path] | None = None,
    mode: str = "split",
    layer_map: str | Sequence[tuple[int, int]] | None = None,
    mlm_weight: float | None = None,
    mse_weight: float = 1.0,
    cosine_weight: float = 1.0,
    kl_weight: float = 0.0,
    match_weight: float = 0.0,
    sentence_weight: float = 1.0,
    similarity_weight: float = 0.0,
    projection_init: str = "fit",
    temperature: float = 2.0,
    sum_probs: bool = False,
    batch_size: int = 64,
    grad_accum: int = 1,
    max_steps: int = 1000,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 100,
    schedule: str = "linear",
    clip_norm: float = 1.0,
    mlm_probability: float = 0.15,
    max_length: int | None = None,
    seed: int = 0,
    eval_every: int = 0,
    eval_batches: int = 8,
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 10.0,
    keep_checkpoints: int = 2,
    resume: bool = False,
    teacher_dtype: str = "fp32",
    precision: str = "auto",
    device: str | None = None,
    log_every: int = 10,
    progress: bool = True,
) -> TrainingReport:
    """Distil `teacher` into the `student` directory on the shards in `data`; write checkpoints and the result to `out`.

    `batch_size` is the global batch of one optimizer step (all ranks, all
    accumulation micro-batches), so a run gives the same result on any number
    of processes.
    """
    settings = {k: v for k, v in locals().items() if k not in ("teacher", "student", "data", "out", "eval_data",
                                                                "resume", "device", "progress", "log_every")}
    started = time.time()
    out = Path(out)
    teacher_path, student_path = Path(teacher), Path(student)

    # ---- setup: options ---------------------------------------------------------------------------------------
    if mode not in ("split", "offsets"):
        raise ConfigError(f"--mode must be 'split' or 'offsets', got {mode!r}")
    if schedule not in ("linear", "cosine"):
        raise ConfigError(f"--schedule must be 'linear' or 'cosine', got {schedule!r}")
    if projection_init not in ("fit", "random"):
        raise ConfigError(f"--projection-init must be 'fit' or 'random', got {projection_init!r}")
    if mlm_weight is None:  # the MLM loss trains the student's head against labels: only worth it with a teacher head
        mlm_weight = settings["mlm_weight"] = 1.0 if _has_mlm_head(teacher_path) else 0.0
    weights = dict(mlm=mlm_weight, mse=mse_weight, cosine=cosine_weight, kl=kl_weight, match=match_weight,
                   sentence=sentence_weight, similarity=similarity_weight)
    if not all(w >= 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ConfigError(f"loss weights must be >= 0 and at least one > 0, got {weights}")
    _check_ranges({**settings, "log_every": log_every})
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if teacher_dtype not in dtypes:
        raise ConfigError(f"--teacher-dtype must be one of {sorted(dtypes)}, got {teacher_dtype!r}")
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"--precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if not data:
        raise ConfigError("no --data shards given")
    for folder in [*data, *(eval_data or [])]:
        if not Path(folder).is_dir():
            raise ShardError(f"{folder}: no such shard folder; make one with `vocabshrink align`")
    if not teacher_path.exists():
        raise ModelError(f"{teacher_path}: teacher not found")
    if not student_path.is_dir():
        raise ModelError(f"{student_path}: student directory not found; make one with `vocabshrink init-student`")

    # ---- setup: processes and devices -------------------------------------------------------------------------
    rank, world, dev = _setup_distributed(device)
    settings["world_size"] = world
    is_main = rank == 0
    if batch_size % (world * grad_accum):
        raise ConfigError(f"--batch-size {batch_size} must be divisible by processes x --grad-accum "
                          f"({world} x {grad_accum})")
    micro = batch_size // (world * grad_accum)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    # ---- setup: tokenizers, models, vocabulary maps ------------------------------------------------------------
    teacher_tok = load_tokenizer(teacher_path)
    student_tok = load_tokenizer(student_path)
    aligner = Aligner.from_tokenizers(teacher_path, student_path)
    need_logits = kl_weight > 0 or match_weight > 0
    t_model = _load_teacher(teacher_path, need_logits, dtypes[teacher_dtype], dev)
    s_model = _load_student(student_path, dev)
    if s_model.config.vocab_size < student_tok.get_vocab_size(with_added_tokens=True):
        raise ModelError(f"{student_path}: the model has {s_model.config.vocab_size} embeddings but its tokenizer "
                         f"{student_tok.get_vocab_size(with_added_tokens=True)} tokens; re-run init-student")
    t_vocab = teacher_tok.get_vocab_size(with_added_tokens=True)
    if t_model.config.vocab_size < t_vocab:
        raise ModelError(f"{teacher_path}: the teacher model has {t_model.config.vocab_size} embeddings but its "
                         f"tokenizer {t_vocab} tokens")
    pairs = parse_layer_map(layer_map, num_layers(s_model), num_layers(t_model))
    settings["layer_map"] = [list(p) for p in pairs]
    s_width, t_width = int(s_model.config.hidden_size), int(t_model.config.hidden_size)
    sentence_pair = (num_layers(s_model), num_layers(t_model))
    projection = None
    sentences = sentence_weight > 0 or similarity_weight > 0
    if s_width != t_width and (mse_weight > 0 or cosine_weight > 0 or sentences):
        torch.manual_seed(seed)
        proj_pairs = pairs if not sentences or sentence_pair in pairs else [*pairs, sentence_pair]
        projection = L.HiddenProjection(s_width, t_width, proj_pairs).to(dev)
    reduce_map = shared = None
    if need_logits:
        offsets, ids = aligner.table
        reduce_map = L.ReduceMap(offsets, ids).to(dev)
        if t_model.config.vocab_size != reduce_map.teacher_vocab_size:
            raise ModelError(f"{teacher_path}: {t_model.config.vocab_size} output logits but {t_vocab} tokenizer "
                             "tokens; the KL losses need them equal")
        sh_t, sh_s = L.shared_vocabulary(offsets, ids, aligner.student_roles.get("unk"))
        shared = torch.full((t_vocab,), -1, dtype=torch.int64)
        shared[sh_t] = sh_s
        shared = shared.to(dev)
    setup = LossSetup(mode, pairs, mlm_weight, mse_weight, cosine_weight, kl_weight, match_weight, temperature,
                      sum_probs, reduce_map, shared, sentence_weight=sentence_weight, sentence_pair=sentence_pair,
                      similarity_weight=similarity_weight)

    # ---- setup: data ------------------------------------------------------------------------------------------
    dataset, lengths, collate = open_data(data, teacher_tok, student_tok, aligner, mode=mode,
                                          mlm_probability=mlm_probability, max_length=max_length, seed=seed)
    if len(dataset) < batch_size:
        raise ShardError(f"{', '.join(map(str, data))}: {len(dataset)} examples, fewer than one batch "
                         f"({batch_size}); use more data or a smaller --batch-size")
    eval_set = None
    if eval_data:
        eval_set = open_data(eval_data, teacher_tok, student_tok, aligner, mode=mode,
                             mlm_probability=mlm_probability, max_length=max_length, seed=seed)

    # ---- setup: optimizer and schedule ------------------------------------------------------------------------
    params = [p for p in s_model.parameters() if p.requires_grad]
    if projection is not None:
        params += list(projection.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps=warmup_steps, max_steps=max_steps, schedule=schedule))

    # ---- setup: resume ----------------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):  # left by an interrupted write
        if is_main:
            shutil.rmtree(stale, ignore_errors=True)
    start_step, epoch, batch_in_epoch, examples_seen, tokens_seen = 0, 0, 0, 0, 0
    resumed_from = None
    existing = list_checkpoints(out)
    if resume:
        if not existing:
            raise TrainingError(f"{out}: no checkpoint (step-N/) to resume from; run without --resume")
        ckpt_step, ckpt = existing[-1]
        state = load_checkpoint(ckpt, s_model, projection, optimizer, scheduler, dev)
        changed = {k: (state["settings"].get(k), settings.get(k)) for k in _RESUME_FIXED
                   if state["settings"].get(k) != settings.get(k)}
        if changed:
            raise ConfigError(f"{ckpt}: --resume with different settings {changed}; resume with the original ones")
        if state["settings"].get("max_steps") != max_steps:
            log.warning("resuming with --max-steps %d instead of %d: the learning-rate schedule changes from here",
                        max_steps, state["settings"].get("max_steps"))
        start_step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        examples_seen, tokens_seen = state["examples_seen"], state["teacher_tokens_seen"]
        resumed_from = ckpt_step
        if is_main:
            print(f"distill: resuming from {ckpt} (step {ckpt_step} of {max_steps})", file=sys.stderr, flush=True)
    elif existing or (out / "final").exists():
        raise ConfigError(f"{out}: holds an earlier run (step-N/ or final/); pass --resume or another --out")

    metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8") if is_main else None
    writer = _tensorboard(out) if is_main else None
    batches = global_batches(lengths, batch_size, seed, epoch)
    if not batches:
        raise ShardError(f"{data}: no full batch of {batch_size} examples")

    def next_global_batch() -> np.ndarray:
        nonlocal epoch, batch_in_epoch, batches
        if batch_in_epoch >= len(batches):
            epoch, batch_in_epoch = epoch + 1, 0
            batches = global_batches(lengths, batch_size, seed, epoch)
        b = batches[batch_in_epoch]
        batch_in_epoch += 1
        return b

    eval_batches_cache = None
    if eval_set is not None:
        e_ds, e_len, e_collate = eval_set
        order = np.argsort(e_len, kind="stable")
        eb = [order[i:i + micro] for i in range(0, len(order), micro)][:eval_batches]
        eval_batches_cache = [_collate(e_collate, e_ds, idx, 0) for idx in eb]

    # ---- setup: the projection's start ------------------------------------------------------------------------
    # Every rank fits on the same global batches of epoch 0, so the start is the same on any number of processes.
    projection_fit = None
    if projection is not None and projection_init == "fit" and resumed_from is None:
        fit_batches = [_to_device(_collate(collate, dataset, g[i:i + micro], 0), dev)
                       for g in global_batches(lengths, batch_size, seed, 0)[:PROJECTION_FIT_BATCHES]
                       for i in range(0, len(g), micro)]
        projection_fit = fit_projection(projection, s_model, t_model, fit_batches, setup)
        del fit_batches
        log.info("projection: least-squares start on %d batches, cosine to the teacher %s",
                 min(PROJECTION_FIT_BATCHES, len(batches)), projection_fit)

    # ---- the loop ---------------------------------------------------------------------------------------------
    s_model.train()
    bar = None
    if is_main and progress:
        from .progress import progress_bar

        bar = progress_bar(True, total=max_steps, initial=start_step, desc="distill", unit="step", dynamic_ncols=True)
    last_parts: dict[str, float] = {}
    last_loss = None
    last_eval = None
    checkpoints: list[str] = []
    tokens_at_start, t0 = tokens_seen, time.time()
    last_saved = t0
    active = active_components(setup)
    try:
        for step in range(start_step, max_steps):

            # this rank's slice of every accumulation micro-batch of the global batch
            global_idx = next_global_batch()
            micro_batches = []
            for a in range(grad_accum):
                lo = (a * world + rank) * micro
                idx = global_idx[lo:lo + micro]
                micro_batches.append(_to_device(_collate(collate, dataset, idx, epoch), dev))
            counts = sum((row_counts(b, setup) for b in micro_batches), torch.zeros(len(COMPONENTS),
                                                                                    dtype=torch.float64))
            step_tokens = torch.tensor([sum(float(b["teacher_attention_mask"].sum()) for b in micro_batches)],
                                       dtype=torch.float64)
            _all_reduce(counts, world)

            # the step: gradients of the global loss, summed over micro-batches and ranks
            loss_value = torch.zeros((), dtype=torch.float64)
            parts_acc = {name: 0.0 for name in COMPONENTS}
            for a, b in enumerate(micro_batches):
                # dropout depends on (seed, step, global micro-batch) alone: resume is exact, and so is any split
                # of the global batch into processes x accumulation steps
                _seed_everything(seed, step, a * world + rank)
                sums = loss_sums(s_model, projection, t_model, b, setup, autocast)
                loss, parts = combine(sums, counts, setup)
                loss.backward()
                loss_value += float(loss.detach())
                for k, v in parts.items():
                    parts_acc[k] += float(v)
            stats = torch.tensor([float(loss_value), *[parts_acc[k] for k in COMPONENTS], float(step_tokens)],
                                 dtype=torch.float64)
            _all_reduce(stats, world)
            global_loss = float(stats[0])
            if not math.isfinite(global_loss):
                bad = {k: float(v) for k, v in zip(COMPONENTS, stats[1:1 + len(COMPONENTS)]) if not math.isfinite(float(v))}
                saved = list_checkpoints(out)
                last_ckpt = saved[-1][1] if saved else None
                raise TrainingError(
                    f"step {step}: the loss is {global_loss} (non-finite components: {bad or 'the total'}); the run "
                    f"stops. Last good checkpoint: {last_ckpt or 'none'}. Lower --lr, raise --warmup-steps or "
                    "--clip-norm, or check the data; resume with --resume")
            _sum_gradients(params, world)
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            examples_seen += batch_size
            tokens_seen += int(stats[-1])
            last_loss = global_loss
            last_parts = {k: float(v) for k, v in zip(COMPONENTS, stats[1:1 + len(COMPONENTS)]) if k in active}
            done = step + 1

            # logging (rank 0)
            if is_main:
                elapsed = max(time.time() - t0, 1e-9)
                tps = (tokens_seen - tokens_at_start) / elapsed
                record = {"step": done, "loss": global_loss, **{f"loss_{k}": v for k, v in last_parts.items()},
                          "lr": scheduler.get_last_lr()[0], "tokens_per_s": tps, "epoch": epoch}
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{global_loss:.4f}", tok_s=f"{tps:.0f}")
                if done % max(1, log_every) == 0 or done == max_steps:
                    _log_metrics(metrics_file, writer, record, done)

            # evaluation (rank 0; the others wait)
            if eval_batches_cache is not None and eval_every > 0 and (done % eval_every == 0 or done == max_steps):
                if is_main:
                    last_eval = evaluate(s_model, projection, t_model, eval_batches_cache, setup, dev)
                    _log_metrics(metrics_file, writer, {"step": done, **last_eval}, done)
                if world > 1:
                    dist.barrier()

            # checkpointing (rank 0; the others wait)
            if _checkpoint_due(done, max_steps, checkpoint_every, checkpoint_minutes, last_saved, is_main, world):
                last_saved = time.time()
                if is_main:
                    state = {"settings": settings, "teacher": str(teacher_path), "student": str(student_path),
                             "data": [str(p) for p in data], "out": str(out), "epoch": epoch,
                             "batch_in_epoch": batch_in_epoch,
                             "examples_seen": examples_seen, "teacher_tokens_seen": tokens_seen,
                             "loss": global_loss}
                    path = save_checkpoint(out, done, s_model, projection, optimizer, scheduler, state,
                                           keep_checkpoints)
                    checkpoints.append(str(path))
                if world > 1:
                    dist.barrier()
    finally:
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if writer is not None:
            writer.close()

    # ---- the result -------------------------------------------------------------------------------------------
    if eval_batches_cache is not None and last_eval is None and is_main:
        last_eval = evaluate(s_model, projection, t_model, eval_batches_cache, setup, dev)
    final = out / "final"
    projection_path = None
    if is_main:
        projection_path = export_student(s_model, projection, student_path, final)
    elapsed = time.time() - started
    report = TrainingReport(
        teacher=str(teacher_path), student=str(student_path), data=[str(p) for p in data], out=str(out),
        final_dir=str(final), projection=projection_path, steps=max_steps, resumed_from_step=resumed_from,
        world_size=world, device=str(dev), examples_seen=examples_seen, teacher_tokens_seen=tokens_seen,
        elapsed_s=round(elapsed, 3), tokens_per_s=round((tokens_seen - tokens_at_start) / max(time.time() - t0, 1e-9), 1),
        final_loss=last_loss, final_losses=last_parts, evaluation=last_eval,
        checkpoints=[str(p) for _, p in list_checkpoints(out)], settings=settings, projection_fit=projection_fit,
    )
    if is_main:
        # sentence-transformers modules (the teacher's pooling, the projection as Dense) and the model card
        from .export import finish_folder

        report.sentence_transformers = finish_folder(final, teacher_path if teacher_path.is_dir() else None,
                                                     json.loads(report.to_json()))
        write_atomic(out / "training_report.json", report.to_json())
    if world > 1:
        dist.barrier()
    return report


def _tensorboard(out: Path) -> Any:
    """A SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _log_metrics(file: Any, writer: Any, record: dict[str, Any], step: int) -> None:
    log.info("%s", " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    if file is not None:
        file.write(json.dumps(record) + "\n")
        file.flush()
    if writer is not None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                writer.add_scalar(k, v, step)
