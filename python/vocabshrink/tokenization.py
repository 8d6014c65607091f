"""Load tokenizers, detect their token scheme and special-token roles, fingerprint them."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from tokenizers import Tokenizer

from .errors import TokenizerError

TokenizerLike = Union[str, Path, Tokenizer, Any]  # Any: a transformers PreTrainedTokenizerFast

METASPACE = "\u2581"
ROLES = ("cls", "sep", "pad", "mask", "unk", "bos", "eos")
# Roles that stand in for each other across families (BERT [CLS] ~ RoBERTa <s>).
ROLE_FALLBACK = {"cls": "bos", "bos": "cls", "sep": "eos", "eos": "sep"}
_ROLE_BY_CONTENT = {
    "[CLS]": "cls", "<s>": "bos", "[SEP]": "sep", "</s>": "eos", "[PAD]": "pad", "<pad>": "pad",
    "[MASK]": "mask", "<mask>": "mask", "[UNK]": "unk", "<unk>": "unk", "[BOS]": "bos", "[EOS]": "eos",
    "<|endoftext|>": "eos",
}
# Reserved slots that no text ever produces: they have no surface.
UNUSED_SLOT = re.compile(r"^(\[unused\d+\]|<unused\d+>|\[UNUSED_\d+\])$")


@dataclass(frozen=True)
class TokenScheme:
    """How a tokenizer's vocabulary strings mark word starts (see DESIGN.md, "Token schemes")."""

    name: str  # "wordpiece" | "metaspace" | "bytelevel"
    continuation_prefix: str = "##"
    metaspace_replacement: str = METASPACE
    byte_fallback: bool = False


def load_tokenizer(source: TokenizerLike) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a directory, a tokenizer.json, a Tokenizer or a fast HF tokenizer.

    Returns a private copy with padding and truncation switched off: a teacher's
    tokenizer.json may pad every encoding to a fixed length, which must never
    leak silently into alignment or evaluation.
    """
    if isinstance(source, Tokenizer):
        tok = Tokenizer.from_str(source.to_str())
    elif isinstance(source, (str, Path)):
        path = Path(source)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            if not path.exists() and isinstance(source, str) and "/" in source and not source.startswith((".", "/")):
                return load_tokenizer(_from_hub(source))
            raise TokenizerError(
                f"{file}: no tokenizer.json found; pass a Hugging Face tokenizer or model directory "
                "that has one (slow, vocab.txt-only tokenizers are not supported)"
            )
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise TokenizerError(f"{file}: not a valid tokenizer.json ({exc})") from exc
    elif hasattr(source, "backend_tokenizer"):
        tok = Tokenizer.from_str(source.backend_tokenizer.to_str())
    else:
        raise TokenizerError(
            f"cannot use {type(source).__name__} as a tokenizer: pass a directory, a tokenizer.json path, "
            "a tokenizers.Tokenizer or a fast transformers tokenizer"
        )
    tok.no_padding()
    tok.no_truncation()
    return tok


def _from_hub(repo_id: str) -> Any:
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(repo_id)
    except Exception as exc:
        raise TokenizerError(f"{repo_id}: not a local path, and loading it from the hub failed ({exc})") from exc


def tokenizer_json(tok: Tokenizer) -> dict:
    return json.loads(tok.to_str())


def _walk(node: Any, kind: str) -> list[dict]:
    """Components of type `kind` in a (possibly nested Sequence) pre-tokenizer/decoder."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == kind:
        return [node]
    found = []
    for key in ("pretokenizers", "decoders", "normalizers", "processors"):
        for child in node.get(key) or []:
            found += _walk(child, kind)
    return found


def _state(component: Any) -> dict | None:
    """A tokenizer component (pre-tokenizer, decoder, model) as JSON, without serialising the whole tokenizer."""
    if component is None:
        return None
    raw = component.__getstate__()
    return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def _model_info(tok: Tokenizer) -> tuple[str, dict]:
    """The model's type and its small settings (Unigram keeps them only in its full state)."""
    model = tok.model
    mtype = type(model).__name__
    if mtype == "Unigram":
        state = _state(model) or {}
        return mtype, {k: v for k, v in state.items() if k != "vocab"}
    info = {}
    for key in ("continuing_subword_prefix", "byte_fallback", "unk_token", "end_of_word_suffix"):
        info[key] = getattr(model, key, None)
    return mtype, info


def detect_scheme(tok: Tokenizer | TokenizerLike) -> TokenScheme:
    """Read the token scheme from the tokenizer's model, pre-tokenizer and decoder."""
    if not isinstance(tok, Tokenizer):
        tok = load_tokenizer(tok)
    mtype, model = _model_info(tok)
    byte_fallback = bool(model.get("byte_fallback", False))
    pre, dec = _state(tok.pre_tokenizer), _state(tok.decoder)
    if _walk(pre, "ByteLevel") or _walk(dec, "ByteLevel"):
        return TokenScheme("bytelevel", byte_fallback=byte_fallback)
    meta = _walk(pre, "Metaspace") or _walk(dec, "Metaspace")
    if meta:
        return TokenScheme("metaspace", metaspace_replacement=meta[0].get("replacement", METASPACE),
                           byte_fallback=byte_fallback)
    if mtype == "WordPiece":
        return TokenScheme("wordpiece", continuation_prefix=model.get("continuing_subword_prefix") or "##")
    if mtype == "BPE" and model.get("continuing_subword_prefix"):
        return TokenScheme("wordpiece", continuation_prefix=model["continuing_subword_prefix"],
                           byte_fallback=byte_fallback)
    if mtype == "Unigram":
        return TokenScheme("metaspace", byte_fallback=byte_fallback)
    raise TokenizerError(
        f"cannot tell how this {mtype} tokenizer marks word starts: supported are WordPiece (continuation "
        "prefix), Metaspace/SentencePiece and ByteLevel tokenizers"
    )


def vocab_list(tok: Tokenizer) -> list[str]:
    """Token strings indexed by id, added tokens included ("" for an id with no token)."""
    # id_to_token is twice as fast as inverting get_vocab(): no 30K-entry dict is built
    to_token = tok.id_to_token
    return [to_token(i) or "" for i in range(tok.get_vocab_size(with_added_tokens=True))]


def special_tokens(tok: Tokenizer, config: dict | None = None) -> dict[str, int]:
    """Role -> id of the tokenizer's special tokens.

    Roles come from `config` (a tokenizer_config.json / special_tokens_map.json
    mapping such as {"cls_token": "[CLS]"}) where given, else from the usual
    names of special tokens.
    """
    roles: dict[str, int] = {}
    for role in ROLES:
        value = (config or {}).get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            idx = tok.token_to_id(value)
            if idx is not None:
                roles[role] = idx
    for idx, added in sorted(tok.get_added_tokens_decoder().items()):
        role = _ROLE_BY_CONTENT.get(added.content)
        if role and added.special and role not in roles:
            roles[role] = idx
    _, model = _model_info(tok)
    unk = model.get("unk_token")
    if "unk" not in roles and isinstance(unk, str) and tok.token_to_id(unk) is not None:
        roles["unk"] = tok.token_to_id(unk)
    if "unk" not in roles and isinstance(model.get("unk_id"), int):
        roles["unk"] = model["unk_id"]
    return roles


def special_ids(tok: Tokenizer) -> list[int]:
    """Ids of every special added token (roles or not)."""
    return sorted(idx for idx, added in tok.get_added_tokens_decoder().items() if added.special)


def read_config(source: TokenizerLike) -> dict:
    """tokenizer_config.json merged with special_tokens_map.json, when `source` is a directory or HF tokenizer."""
    if hasattr(source, "special_tokens_map"):
        return {k: v for k, v in source.special_tokens_map.items() if isinstance(v, str)}
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        merged: dict = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            file = Path(source) / name
            if file.exists():
                try:
                    merged.update(json.loads(file.read_text(encoding="utf-8")))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise TokenizerError(f"{file}: not valid JSON ({exc})") from exc
        return merged
    return {}


def fingerprint(tok: Tokenizer | TokenizerLike) -> str:
    """sha256 of the canonical tokenizer.json, padding and truncation settings left out."""
    if not isinstance(tok, Tokenizer):
        tok = load_tokenizer(tok)
    return spec_fingerprint(tokenizer_json(tok))


def spec_fingerprint(spec: dict) -> str:
    """`fingerprint` of an already parsed tokenizer.json (`spec` is not modified)."""
    canon = json.dumps({k: v for k, v in spec.items() if k not in ("padding", "truncation")},
                       sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def prompt_tokens(source: TokenizerLike, prompt: str) -> list[str]:
    """The tokens of `prompt` under `source`, which a trimmed vocabulary must keep (align puts it before every
    text); stripped, as the space goes with the next word."""
    if not prompt.strip():
        return []
    return load_tokenizer(source).encode(prompt.strip(), add_special_tokens=False).tokens
