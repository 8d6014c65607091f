"""distill's setup: processes, tokenizers, models, the losses' setup, data and optimizer, gathered in a `Run`.

Imports the shared layers (`models`, `tokenization`, `losses`) and the package's own modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ... import losses as L
from ...errors import ConfigError, ModelError, ShardError
from ...models import load_student, load_teacher, read_config, resolve_dtype
from ...teacher_cache import CachedTeacher, open_cache, read_cache_manifest
from ...tokenization import load_tokenizer
from . import distributed
from .batches import Cursor, collate, open_data
from .objective import LossSetup, Teacher, num_layers
from .options import CHOICES, DistillOptions

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Run:
    """Everything one distill run holds while it trains; `setup()` makes it, the loop updates it."""

    opts: DistillOptions
    settings: dict[str, Any]
    out: Path
    rank: int
    world: int
    device: torch.device
    micro: int  # examples per micro-batch on this rank
    autocast: Any
    teacher: Teacher  # the frozen model, or its cache over `dataset`
    eval_teacher: Teacher | None  # the same over the held-out data
    student: torch.nn.Module
    projection: L.HiddenProjection | None
    setup: LossSetup
    dataset: Any
    collator: Any
    cursor: Cursor
    eval_batches: list[dict[str, Any]] | None
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    started: float = field(default_factory=time.time)
    total_steps: int = 0  # the run's last step: --max-steps, or the plan of a --max-minutes budget
    seconds_before: float = 0.0  # loop seconds of the sessions before a resume (the budget's used part)
    resumed_from: int | None = None
    projection_fit: dict[str, float] | None = None
    last_loss: float | None = None
    last_parts: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_layer_map(spec: str | Sequence[tuple[int, int]] | None, student_layers: int,
                    teacher_layers: int) -> list[tuple[int, int]]:
    """'3:6,0:0' -> [(3, 6), (0, 0)]; index 0 is the embedding output, negatives count from the last layer.

    Default: the last student layer to the last teacher layer.
    """
    if spec is None or spec == "":
        return [(student_layers, teacher_layers)]
    pairs = _layer_pairs(spec) if isinstance(spec, str) else [(int(s), int(t)) for s, t in spec]
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


def _layer_pairs(spec: str) -> list[tuple[int, int]]:
    pairs = []
    for part in spec.split(","):
        try:
            s, t = (int(x) for x in part.split(":"))
        except ValueError:
            raise ConfigError(f"--layer-map: {part!r} is not STUDENT:TEACHER (e.g. '3:6,0:0')") from None
        pairs.append((s, t))
    return pairs


def setup(opts: DistillOptions) -> Run:
    """Processes, models, losses, data, optimizer and schedule for checked options (`opts.check()` first)."""
    started = time.time()
    settings = opts.settings()
    rank, world, dev = distributed.setup(opts.device)
    settings["world_size"] = world
    if opts.batch_size % (world * opts.grad_accum):
        raise ConfigError(f"--batch-size {opts.batch_size} must be divisible by processes x --grad-accum "
                          f"({world} x {opts.grad_accum})")
    # the same rule as the teacher's: on this 2-core AVX512-BF16 CPU a bf16 student step is 1.5x faster with
    # the same STS-B after 1,500 steps (benchmarks/RESULTS.md)
    settings["precision"] = resolve_dtype(opts.precision, dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=settings["precision"] == "bf16")

    teacher_tok, student_tok = load_tokenizer(Path(opts.teacher)), load_tokenizer(Path(opts.student))
    dataset, lengths, collator = open_data(opts.data, teacher_tok, student_tok, mode=opts.mode,
                                           mlm_probability=opts.mlm_probability, max_length=opts.max_length,
                                           seed=opts.seed)
    if len(dataset) < opts.batch_size:
        raise ShardError(f"{', '.join(map(str, opts.data))}: {len(dataset)} examples, fewer than one batch "
                         f"({opts.batch_size}); use more data or a smaller --batch-size")
    student = load_student(opts.student, dev)
    _set_attention(student, attention_kernel(opts.attention, settings["precision"], dev), opts.student)
    settings["attention"] = student.config._attn_implementation
    t_layers = _teacher_layers(opts)
    pairs = parse_layer_map(opts.layer_map, num_layers(student), t_layers)
    settings["layer_map"] = [list(p) for p in pairs]
    settings["teacher_states"] = "cache" if opts.teacher_cache else "forward"
    settings["teacher_dtype"] = resolve_dtype(opts.teacher_dtype, dev)
    if dataset.settings.get("prompt"):  # align's prompt: the exported student is told to apply it
        settings["prompt"] = dataset.settings["prompt"]
    hidden_layers = sorted({t for _, t in pairs}) if opts.mse_weight > 0 or opts.cosine_weight > 0 else []
    teacher = _teacher(opts, dataset, hidden_layers, dev, settings["teacher_dtype"])
    _check_vocabularies(opts, teacher, student, teacher_tok, student_tok)
    projection = _projection(opts, student, teacher, pairs, dev)
    loss_setup = _loss_setup(opts, pairs, student, teacher, dataset, dev)
    micro = opts.batch_size // (world * opts.grad_accum)
    eval_batches, eval_teacher = _eval_batches(opts, teacher_tok, student_tok, micro, teacher)
    words = student.get_input_embeddings().weight
    if opts.embedding_lr_scale == 0:  # frozen: no gradient is computed for the largest tensor at all
        words.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    if projection is not None:
        params += list(projection.parameters())
    optimizer, scheduler = _optimizer(opts, params, words)
    return Run(opts, settings, Path(opts.out), rank, world, dev, micro, autocast, teacher, eval_teacher, student,
               projection, loss_setup, dataset, collator, Cursor(lengths, opts.batch_size, opts.seed), eval_batches,
               params, optimizer, scheduler, started=started, total_steps=opts.max_steps)


def _teacher_layers(opts: DistillOptions) -> int:
    """The teacher's layer count, from its cache or its config (the model is not loaded yet)."""
    if opts.teacher_cache:
        return int(read_cache_manifest(Path(opts.teacher_cache[0]))["teacher"]["config"]["num_hidden_layers"])
    return int(read_config(opts.teacher).num_hidden_layers)


def _teacher(opts: DistillOptions, dataset: Any, hidden_layers: list[int], dev: torch.device,
             dtype: str) -> Teacher:
    """The frozen teacher in `dtype` (resolved), or its cache over the training shards (the teacher's weights
    then stay unloaded, the KL losses included: a cache without logits is refused by `open_cache` then)."""
    if opts.teacher_cache:
        return open_cache(opts.teacher_cache, dataset, opts.teacher, layers=hidden_layers, logits=opts.need_logits)
    return load_teacher(opts.teacher, need_logits=opts.need_logits, dtype=_DTYPES[dtype], device=dev)


def _check_vocabularies(opts: DistillOptions, teacher: Teacher, student: torch.nn.Module, teacher_tok: Any,
                        student_tok: Any) -> None:
    """Both models hold an embedding for every token of their tokenizers."""
    s_vocab = student_tok.get_vocab_size(with_added_tokens=True)
    if student.config.vocab_size < s_vocab:
        raise ModelError(f"{opts.student}: the model has {student.config.vocab_size} embeddings but its tokenizer "
                         f"{s_vocab} tokens; re-run init-student")
    t_vocab = teacher_tok.get_vocab_size(with_added_tokens=True)
    if teacher.config.vocab_size < t_vocab:
        raise ModelError(f"{opts.teacher}: the teacher model has {teacher.config.vocab_size} embeddings but its "
                         f"tokenizer {t_vocab} tokens")


def _projection(opts: DistillOptions, student: torch.nn.Module, teacher: Teacher,
                pairs: list[tuple[int, int]], dev: torch.device) -> L.HiddenProjection | None:
    """The student -> teacher width map, when the widths differ and a loss compares hidden states."""
    s_width, t_width = int(student.config.hidden_size), int(teacher.config.hidden_size)
    if s_width == t_width or not (opts.mse_weight > 0 or opts.cosine_weight > 0 or opts.need_sentences):
        return None
    torch.manual_seed(opts.seed)
    sentence_pair = (num_layers(student), num_layers(teacher))
    proj_pairs = pairs if not opts.need_sentences or sentence_pair in pairs else [*pairs, sentence_pair]
    return L.HiddenProjection(s_width, t_width, proj_pairs).to(dev)


def _loss_setup(opts: DistillOptions, pairs: list[tuple[int, int]], student: torch.nn.Module,
                teacher: Teacher, dataset: Any, dev: torch.device) -> LossSetup:
    """The losses' weights and, for the KL losses, the reduce map and shared vocabulary from align's split table."""
    reduce_map = shared = None
    if opts.need_logits:
        offsets, ids = dataset.table()
        reduce_map = L.ReduceMap(offsets, ids).to(dev)
        t_vocab = len(offsets) - 1
        if teacher.config.vocab_size != reduce_map.teacher_vocab_size:
            raise ModelError(f"{opts.teacher}: {teacher.config.vocab_size} output logits but {t_vocab} tokenizer "
                             "tokens; the KL losses need them equal")
        sh_t, sh_s = L.shared_vocabulary(offsets, ids, dataset.student_info["roles"].get("unk"))
        shared = torch.full((t_vocab,), -1, dtype=torch.int64)
        shared[sh_t] = sh_s
        shared = shared.to(dev)
    return LossSetup(opts.mode, pairs, opts.mlm_weight, opts.mse_weight, opts.cosine_weight, opts.kl_weight,
                     opts.match_weight, opts.temperature, opts.sum_probs, reduce_map, shared,
                     sentence_weight=opts.sentence_weight, sentence_pair=(num_layers(student), num_layers(teacher)),
                     similarity_weight=opts.similarity_weight)


def _eval_batches(opts: DistillOptions, teacher_tok: Any, student_tok: Any, micro: int,
                  teacher: Teacher) -> tuple[list[dict[str, Any]] | None, Teacher | None]:
    """The held-out batches, shortest examples first, collated once; and the teacher over them."""
    if not opts.eval_data:
        return None, None
    dataset, lengths, collator = open_data(opts.eval_data, teacher_tok, student_tok, mode=opts.mode,
                                           mlm_probability=opts.mlm_probability, max_length=opts.max_length,
                                           seed=opts.seed)
    order = np.argsort(lengths, kind="stable")
    chosen = [order[i:i + micro] for i in range(0, len(order), micro)][:opts.eval_batches]
    batches = [collate(collator, dataset, idx, 0) for idx in chosen]
    if not isinstance(teacher, CachedTeacher):
        return batches, teacher
    try:
        return batches, teacher.for_dataset(dataset)
    except ShardError as exc:
        raise ShardError(f"--eval-data: {exc}; give the held-out shards to cache-teacher's --data too") from None


def _optimizer(opts: DistillOptions, params: list[torch.nn.Parameter],
               words: torch.nn.Parameter) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no decay on biases and norms; the word table at --embedding-lr-scale) and the schedule."""
    own_rate = words.requires_grad and opts.embedding_lr_scale != 1.0
    decay = [p for p in params if p.dim() >= 2 and not (own_rate and p is words)]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": opts.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if own_rate:  # a third group only then: checkpoints of runs at the default keep their two groups
        groups.append({"params": [words], "weight_decay": opts.weight_decay, "lr": opts.lr * opts.embedding_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=opts.lr, **adamw_kernel(opts.adamw, params[0].device))
    scheduler = schedule(optimizer, opts.schedule, opts.warmup_steps, opts.max_steps)
    return optimizer, scheduler


def attention_kernel(choice: str, precision: str, device: torch.device) -> str | None:
    """The student's attention implementation for --attention (None: transformers' default, sdpa where the model
    has it). auto is eager for bf16 on CPU: there torch's fused attention backward took 8x the fp32 one (14.5
    against 1.8 ms a layer for 64 x 25 tokens), which undid bf16's 2.5x faster matrix products; the eager
    matmul-softmax-matmul keeps them (benchmarks/RESULTS.md)."""
    if choice not in CHOICES["attention"]:
        raise ConfigError(f"--attention must be one of {', '.join(CHOICES['attention'])}, got {choice!r}")
    if choice != "auto":
        return choice
    return "eager" if precision == "bf16" and device.type == "cpu" else None


def _set_attention(student: torch.nn.Module, kernel: str | None, path: str | Path) -> None:
    """Switch the loaded student to `kernel` (None keeps what it loaded with)."""
    if kernel is None or kernel == student.config._attn_implementation:
        return
    try:
        student.set_attn_implementation(kernel)
    except (ValueError, ImportError) as exc:
        raise ModelError(f"{path}: this model cannot run --attention {kernel} ({exc}); pass another --attention "
                         "(auto picks eager for --precision bf16 on CPU)") from exc


# torch.optim.AdamW's keywords for each --adamw kernel
ADAMW_KERNELS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}


def adamw_kernel(choice: str, device: torch.device) -> dict[str, bool]:
    """torch.optim.AdamW's implementation keywords for --adamw. auto is fused where torch has the kernel (CPU,
    CUDA): on the 2-core CPU, clip + AdamW over the 5.9M-parameter Russian student take 7.1 ms fused against
    25.7 ms in torch's CPU default, a for-loop that passes over the word table about ten times
    (benchmarks/bench_optimizer.py)."""
    if choice == "auto":
        choice = "fused" if device.type in ("cpu", "cuda") else "for-loop"
    return ADAMW_KERNELS[choice]


def schedule(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, max_steps: int,
             last_epoch: int = -1) -> Any:
    """transformers' schedule: linear warmup from 0, then linear or cosine decay to 0 at max_steps (continued
    after `last_epoch` steps when given)."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = get_cosine_schedule_with_warmup if kind == "cosine" else get_linear_schedule_with_warmup
    return make(optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps, last_epoch=last_epoch)
