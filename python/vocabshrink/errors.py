"""Errors a user can cause: the CLI prints their message and exits non-zero."""

from __future__ import annotations


class VocabshrinkError(Exception):
    """Base class: the message names the file, line or id and says what to do."""


class TokenizerError(VocabshrinkError):
    """A tokenizer cannot be loaded or is not supported."""


class CorpusError(VocabshrinkError):
    """A corpus is missing, empty or not valid text."""


class ShardError(VocabshrinkError):
    """A shard or manifest is corrupt, incomplete or made by other tokenizers."""


class ModelError(VocabshrinkError):
    """A model cannot be loaded, or its architecture or configuration is not supported."""


class ConfigError(VocabshrinkError):
    """Options that contradict each other or are out of range."""


class TrainingError(VocabshrinkError):
    """Training cannot go on (e.g. a non-finite loss)."""
