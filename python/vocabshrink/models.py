"""Model loading: one loader for teachers and students, and the rules every stage loads by.

The rules, in one place: local Hugging Face directories (config.json + weights);
safetensors weights (transformers reads a `pytorch_model.bin` only with
`weights_only=True`, never a general unpickle); no `trust_remote_code` unless the
caller passes it; an MLM head kept when the checkpoint has one (`head="auto"`).
Also the parts of a loaded model that several stages run alone: its bare `encoder`
and its `mlm_head`. Imports only `errors`; torch and transformers load on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ModelError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_MLM_SUFFIXES = ("ForMaskedLM", "ForPreTraining")


def architectures(path: str | os.PathLike) -> list[str]:
    """The `architectures` of a model directory's config.json, read without transformers ([] when unreadable)."""
    try:
        archs = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [str(a) for a in archs]


def has_mlm_head(path: str | os.PathLike) -> bool:
    """Whether the config names an architecture with an MLM head (*ForMaskedLM, *ForPreTraining)."""
    return any(a.endswith(_MLM_SUFFIXES) for a in architectures(path))


def read_config(path: str | os.PathLike, *, trust_remote_code: bool = False) -> Any:
    """transformers' config of a model directory; ModelError naming the file when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, JSON errors...
        raise ModelError(f"{Path(path) / 'config.json'}: cannot read the model configuration ({exc})") from exc


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers reports keys it ignores (e.g. BERT's `position_ids` buffer) on every load: errors only."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_model(path: str | os.PathLike, *, head: str = "auto", dtype: Any = None, device: Any = None,
               trust_remote_code: bool = False, output_loading_info: bool = False) -> Any:
    """A model directory as a transformers model, in eval mode.

    head: "mlm" (AutoModelForMaskedLM), "base" (AutoModel) or "auto" (the MLM class when the config names an
    MLM architecture). With `output_loading_info`, returns (model, info) as transformers does.
    """
    from transformers import AutoModel, AutoModelForMaskedLM

    if head not in ("auto", "mlm", "base"):
        raise ValueError(f"head must be 'auto', 'mlm' or 'base', got {head!r}")
    src = Path(path)
    if not (src / "config.json").exists():
        raise ModelError(f"{src}: no config.json; pass a Hugging Face model directory")
    mlm = head == "mlm" or (head == "auto" and any(a.endswith("ForMaskedLM") for a in architectures(src)))
    cls = AutoModelForMaskedLM if mlm else AutoModel
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "output_loading_info": output_loading_info}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        with _quiet_loading():
            loaded = cls.from_pretrained(str(src), **kwargs)
    except Exception as exc:
        raise ModelError(f"{src}: cannot load the model ({exc})") from exc
    model = loaded[0] if output_loading_info else loaded
    model.eval()
    if device is not None:
        model.to(device)
    return loaded


def load_teacher(path: str | os.PathLike, *, need_logits: bool, dtype: Any, device: Any) -> Any:
    """The frozen teacher for distillation; with `need_logits`, its trained MLM head is required."""
    src = Path(path)
    if not (src / "config.json").exists():
        raise ModelError(f"{src}: no config.json; pass a Hugging Face model directory as --teacher")
    if need_logits:
        if not has_mlm_head(src):
            archs = architectures(src)
            raise ModelError(f"{src}: the KL losses need teacher logits, but this teacher ({', '.join(archs) or '?'}) "
                             "has no MLM head; set --kl-weight 0 and --match-weight 0, or use a *ForMaskedLM teacher")
        model, info = load_model(src, head="mlm", dtype=dtype, output_loading_info=True)
        head_missing = [k for k in info.get("missing_keys", []) if "bert." not in k and "embeddings" not in k]
        if head_missing:
            raise ModelError(f"{src}: the MLM head's weights are missing ({head_missing[:3]}...); the KL losses need "
                             "a trained head: set --kl-weight 0 and --match-weight 0")
    else:
        model = load_model(src, head="auto", dtype=dtype)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_student(path: str | os.PathLike, device: Any) -> Any:
    """A student directory (from init-student or distill) as a float32 masked language model on `device`."""
    import torch

    src = Path(path)
    if not (src / "config.json").exists():
        raise ModelError(f"{src}: no student model here (config.json missing); make one with `vocabshrink "
                         "init-student --teacher T --tokenizer TOK --out DIR`")
    try:
        model = load_model(src, head="mlm", dtype=torch.float32)
    except ModelError as exc:
        raise ModelError(f"{src}: cannot load the student as a masked language model ({exc.__cause__})") from exc
    return model.to(device)  # in eval mode, as from_pretrained leaves it: distill switches to train()


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX): there a bf16 teacher runs 1.9x faster
    with states within 1e-4 of fp32 (benchmarks/RESULTS.md); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: Any = "cpu") -> str:
    """The compute type "auto" stands for, for the teacher and the student alike: bf16 on a GPU that supports it
    or a CPU with native bfloat16, else fp32. Other names are returned unchanged."""
    if name != "auto":
        return name
    import torch

    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16() else "fp32"


def encoder(model: Any) -> Any:
    """The bare encoder of a *ForMaskedLM (or the model itself): hidden states without the vocabulary head."""
    return getattr(model, model.base_model_prefix, model) if hasattr(model, "base_model_prefix") else model


def mlm_head(model: Any) -> Any:
    """The vocabulary head of a *ForMaskedLM (BERT's `cls`, RoBERTa's `lm_head`), or None for other layouts."""
    import torch

    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    return None
