"""vocabshrink: distil BERT-family encoders into small students with a reduced vocabulary.

The public API is re-exported here: each stage function and its report (build_vocab, align, audit (the
inspect command), init_student, cache_teacher, distill with DistillOptions, evaluate, export, demo), the core's face
(Aligner, Alignment, ...), span_mean/chunk_mean and the losses module, and the data pipeline (ShardDataset,
Collator). Everything else is internal; ARCHITECTURE.md has the map. Heavy modules (torch, transformers) load on
first use, so that `import vocabshrink` and the CLI's `--help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    CorpusError,
    ModelError,
    ShardError,
    TokenizerError,
    TrainingError,
    VocabshrinkError,
)

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    "Aligner": "aligner",
    "Alignment": "aligner",
    "TorchAlignment": "aligner",
    "ChunkAlignment": "aligner",
    "AlignmentBuffers": "aligner",
    "TokenScheme": "tokenization",
    "load_tokenizer": "tokenization",
    "detect_scheme": "tokenization",
    "fingerprint": "tokenization",
    "build_vocab": "stages.build_vocab",
    "VocabReport": "stages.build_vocab",
    "init_student": "stages.init_student",
    "InitReport": "stages.init_student",
    "teacher_agreement": "agreement",
    "span_mean": "losses",
    "chunk_mean": "losses",
    "align": "stages.align",
    "AlignReport": "stages.align",
    "ShardDataset": "data",
    "LengthGroupedSampler": "data",
    "Collator": "data",
    "audit": "stages.inspect",
    "AuditReport": "stages.inspect",
    "cache_teacher": "stages.cache_teacher",
    "CacheReport": "stages.cache_teacher",
    "distill": "stages.distill",
    "DistillOptions": "stages.distill",
    "TrainingReport": "stages.distill",
    "evaluate": "stages.evaluate",
    "EvalReport": "stages.evaluate",
    "sweep": "stages.sweep",
    "SweepReport": "stages.sweep",
    "export": "stages.export",
    "ExportReport": "stages.export",
    "demo": "stages.demo",
    "DemoReport": "stages.demo",
    "SplitTable": "aligner",
    "load_model": "models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vocabshrink' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConfigError",
    "CorpusError",
    "ModelError",
    "ShardError",
    "TokenizerError",
    "TrainingError",
    "VocabshrinkError",
    *_LAZY,
]
