"""init-student: build the student model that distillation starts from, initialised from the teacher.

The student is always a `BertForMaskedLM` whose configuration derives from the
teacher's (BERT, DistilBERT, RoBERTa / XLM-R encoders) with overrides for the
number of layers, the width, the heads and the intermediate size, and with the
student tokenizer's vocabulary and special tokens.

Embeddings (`embedding_init="fvt"`, fast vocabulary transfer). Every student
token is split over the *teacher* vocabulary with the C++ splitter run the
other way (`Aligner.from_tokenizers(student, teacher)`), then:

- copied: the student token is also a teacher token (same surface, same
  word-start flag): the teacher's row is copied;
- subword mean: otherwise, the mean of the teacher rows of its split (a token
  with no split as it is, e.g. "Hello" against an uncased teacher, is split
  again after the teacher's normalizer: "hello");
- special: special tokens take the teacher row of the same role
  ([CLS] ~ <s>, [SEP] ~ </s>, [PAD], [MASK], [UNK]);
- fallback: a token the teacher cannot split (its split is the teacher's
  UNK), a special token with no teacher counterpart, or an unused slot: the
  mean teacher row plus small seeded Gaussian noise.

`embedding_init="contextual"` (Model2Vec's table as the start): the rows of
copied and subword-mean tokens become the teacher's contextual vector of the
token, the last layer averaged over [CLS] + its teacher pieces + [SEP] (how
Model2Vec builds its static table), centred and scaled to the mean and mean
norm of the fvt rows they replace (the student's first layer reads the input
space, whose scale against the position rows the embedding LayerNorm
assumes); special and fallback rows stay fvt's. `embedding_init=
"contextual-fit"`: copied tokens keep the teacher's own row, and each
subword-mean token takes its contextual vector mapped into the input space by
the affine least-squares fit (ridge) of the copied tokens' rows from their
contextual vectors; the mean of piece rows, which knows nothing of how the
pieces combine, is what this replaces. Either way the rows then go through the
width map P like fvt's.

`embedding_init="random"` keeps the seeded random rows of a fresh model.
`embedding_init="auto"` (the default): fvt for a student of the teacher's
shape (every layer, full width: a trimmed teacher, whose copied rows then
reproduce the teacher exactly), contextual for a smaller student, where it
was measured better (benchmarks/RESULTS.md, "Embedding starts").

Width (`reduce`). A student as wide as the teacher keeps the teacher's
coordinates (nothing is projected). A narrower student of width d uses a
linear map P (H x d, orthonormal columns) on the hidden dimension, applied
consistently to every weight that reads from or writes to the residual
stream:

- `pca`: P holds the top-d principal directions of the teacher's word
  embeddings (numpy SVD of the centred matrix). Embedding rows (word,
  position, token type) become x @ P; a Linear reading the hidden state
  (query, key, value, intermediate, MLM transform) becomes W @ P; a Linear
  writing it (attention output, FFN output, MLM transform) becomes P.T @ W
  with bias b @ P. A LayerNorm's bias is projected like any hidden vector
  (b @ P); its gain, a diagonal matrix, becomes the diagonal of
  P.T diag(g) P, i.e. sum_i P[i, j]**2 * g[i]. LayerNorm's own centring and
  scaling do not commute with P, so a narrower student is an approximation
  that distillation then trains.
- Heads: the student keeps whole teacher heads in order (the first
  `heads` of them) and, within each, the first `hidden/heads` dimensions of
  its query/key/value rows and of the matching attention-output columns. By
  default `heads` is chosen so that the head size stays the teacher's
  (384 wide with 32-dim heads -> 256 wide with 8 heads), so kept heads are
  whole and only their input is projected. More heads than the teacher, or
  larger heads, cannot be initialised from it (use `layer_init="random"`).
- Intermediate size: the student keeps the first `intermediate` FFN neurons
  (rows of the first FFN Linear, columns of the second); by default the
  teacher's ratio to the width is kept.
- `truncate`: reproduces the slicing of the paper's code for comparison:
  every tensor is cut to the student's shape by keeping its leading entries
  (W[:out, :in], x[:d]); for embeddings this equals P = the first d unit
  vectors.

Layers (`layer_init`, `layer_map`): `select` copies teacher layers (default
evenly spaced, rounded to the nearest layer: 0,2,5 of 6, DistilBERT's
0,2,4,7,9,11 of 12); `average` averages groups of consecutive teacher layers
(default: the teacher's layers cut into `layers` near-equal runs, as the
paper's code did); `random` keeps the seeded random layers. `layer_map` names
the teacher layers per student layer: "0,2,4" or, to average, "0+1,2+3,4+5".

MLM head: the decoder is tied to the word embeddings; when the teacher has an
MLM head its transform comes across through P and its output bias through the
same token mapping as the embeddings (fallback tokens take the mean bias).
Without one (e.g. a sentence-embedding `BertModel`) the head starts random.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, CorpusError, ModelError, TokenizerError
from ..models import WEIGHT_FILES, encoder

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta")
SUPPORTED_ARCHITECTURES = (
    "BertModel, BertForMaskedLM, DistilBertModel, DistilBertForMaskedLM, RobertaModel, RobertaForMaskedLM, "
    "XLMRobertaModel, XLMRobertaForMaskedLM"
)
EMBEDDING_INITS = ("auto", "fvt", "contextual", "contextual-fit", "random")
# Student tokens per teacher forward when the contextual starts embed the vocabulary.
CONTEXT_BATCH = 512
# Ridge of the contextual-fit map, relative to the mean diagonal of the normal matrix.
CONTEXT_RIDGE = 1e-3
# contextual-fit needs this many copied tokens per input dimension of its map, or it keeps the fvt rows.
FIT_TOKENS_PER_DIM = 2
REDUCTIONS = ("pca", "truncate")
LAYER_INITS = ("select", "average", "random")
# Fallback rows: mean teacher row + noise of this many per-dimension standard deviations.
FALLBACK_NOISE = 0.1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json")

# Canonical layer tensor names -> (BERT/RoBERTa suffix, DistilBERT suffix).
_LAYER_KEYS = {
    "q": ("attention.self.query", "attention.q_lin"),
    "k": ("attention.self.key", "attention.k_lin"),
    "v": ("attention.self.value", "attention.v_lin"),
    "o": ("attention.output.dense", "attention.out_lin"),
    "ln1": ("attention.output.LayerNorm", "sa_layer_norm"),
    "i": ("intermediate.dense", "ffn.lin1"),
    "f": ("output.dense", "ffn.lin2"),
    "ln2": ("output.LayerNorm", "output_layer_norm"),
}
# MLM head tensors: family -> (dense, layer norm, output bias).
_HEAD_KEYS = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
    "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
}
_COPIED, _SUBWORD, _SPECIAL, _FALLBACK = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------- teacher


@dataclass
class TeacherWeights:
    """A teacher's tensors under family-independent names (float32, CPU)."""

    family: str  # "bert" | "distilbert" | "roberta"
    architecture: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    hidden_act: str
    layer_norm_eps: float
    hidden_dropout: float
    attention_dropout: float
    initializer_range: float
    word: "torch.Tensor"  # [V, H]
    position: "torch.Tensor"  # [P, H], usable rows only (RoBERTa's offset removed)
    token_type: "torch.Tensor | None"  # [T, H]
    emb_ln: tuple["torch.Tensor", "torch.Tensor"]
    layer: list[dict[str, "torch.Tensor"]]  # "q.weight", "q.bias", ..., "ln2.bias"
    head: dict[str, "torch.Tensor"] | None  # "dense.weight", "dense.bias", "ln.weight", "ln.bias", "bias"
    parameters: int
    embedding_parameters: int


def _family(model_type: str) -> str:
    return "roberta" if model_type in ("roberta", "xlm-roberta") else model_type


def load_teacher(teacher: str | os.PathLike, *, trust_remote_code: bool = False) -> tuple[Any, TeacherWeights]:
    """Load a local teacher directory -> (the transformers model, its weights under canonical names)."""
    from ..models import load_model, read_config

    path = Path(teacher)
    if not path.is_dir():
        raise ModelError(f"{path}: no such model directory; pass a Hugging Face model directory with config.json")
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: config.json is missing; pass a Hugging Face model directory")
    config = read_config(path, trust_remote_code=trust_remote_code)
    arch = (getattr(config, "architectures", None) or [type(config).__name__.replace("Config", "Model")])[0]
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_TYPES:
        raise ModelError(
            f"{path}: the teacher is a {arch} (model_type {model_type!r}), which init-student does not support; "
            f"supported teachers: {SUPPORTED_ARCHITECTURES}"
        )
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ModelError(f"{path}: position_embedding_type {config.position_embedding_type!r} is not supported "
                         "(the student uses absolute position embeddings)")
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise ModelError(f"{path}: no model weights (model.safetensors or pytorch_model.bin) found")
    model = load_model(path, head="mlm" if arch.endswith("ForMaskedLM") else "base",
                       trust_remote_code=trust_remote_code)
    return model, _canonical(model, _family(model_type), arch)


def _canonical(model: Any, family: str, arch: str) -> TeacherWeights:
    cfg = model.config
    full = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    base_prefix = getattr(model, "base_model_prefix", "")
    has_head = model is not model.base_model
    base = {(k[len(base_prefix) + 1:] if has_head and k.startswith(base_prefix + ".") else k): v
            for k, v in full.items()}
    distil = family == "distilbert"
    if distil:
        hidden, layers, heads, inter = cfg.dim, cfg.n_layers, cfg.n_heads, cfg.hidden_dim
        act, eps, hd, ad = cfg.activation, 1e-12, cfg.dropout, cfg.attention_dropout
        layer_prefix = "transformer.layer"
    else:
        hidden, layers, heads, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, \
            cfg.intermediate_size
        act, eps = cfg.hidden_act, cfg.layer_norm_eps
        hd, ad = cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob
        layer_prefix = "encoder.layer"
    if not isinstance(act, str):
        raise ModelError(f"the teacher's activation {act!r} is not a named activation; cannot copy it")
    position = base["embeddings.position_embeddings.weight"]
    if family == "roberta":
        # RoBERTa numbers positions from padding_idx + 1; the student numbers them from 0.
        position = position[cfg.pad_token_id + 1:]
    layer = []
    for n in range(layers):
        out = {}
        for name, (bert_key, distil_key) in _LAYER_KEYS.items():
            key = f"{layer_prefix}.{n}.{distil_key if distil else bert_key}"
            for part in ("weight", "bias"):
                out[f"{name}.{part}"] = base[f"{key}.{part}"]
        layer.append(out)
    head = None
    if has_head:
        dense, ln, bias = _HEAD_KEYS[family]
        head = {"dense.weight": full[f"{dense}.weight"], "dense.bias": full[f"{dense}.bias"],
                "ln.weight": full[f"{ln}.weight"], "ln.bias": full[f"{ln}.bias"], "bias": full[bias]}
    word = base["embeddings.word_embeddings.weight"]
    token_type = base.get("embeddings.token_type_embeddings.weight")
    emb_params = word.numel() + base["embeddings.position_embeddings.weight"].numel() + \
        (token_type.numel() if token_type is not None else 0)
    return TeacherWeights(
        family=family, architecture=arch, hidden=hidden, layers=layers, heads=heads, intermediate=inter,
        hidden_act=act, layer_norm_eps=float(eps), hidden_dropout=float(hd), attention_dropout=float(ad),
        initializer_range=float(getattr(cfg, "initializer_range", 0.02)),
        word=word, position=position, token_type=token_type,
        emb_ln=(base["embeddings.LayerNorm.weight"], base["embeddings.LayerNorm.bias"]),
        layer=layer, head=head, parameters=sum(p.numel() for p in model.parameters()),
        embedding_parameters=emb_params,
    )


# ---------------------------------------------------------------------------------------------- tokens


@dataclass
class TokenMap:
    """Student id s takes the mean of teacher rows `ids[offsets[s]:offsets[s+1]]`, unless `kinds[s]` is fallback."""

    offsets: np.ndarray  # int64 [V_student + 1]
    ids: np.ndarray  # int64 [nnz]
    kinds: np.ndarray  # uint8 [V_student]: 0 copied, 1 subword mean, 2 special, 3 fallback
    base_rows: np.ndarray  # int64: teacher rows whose mean is the fallback (no specials, no unused slots)

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.kinds, minlength=4)
        return {"copied": int(c[_COPIED]), "subword_mean": int(c[_SUBWORD]), "special": int(c[_SPECIAL]),
                "fallback": int(c[_FALLBACK])}

    def apply(self, rows: "torch.Tensor", noise: float = 0.0, seed: int = 0) -> "torch.Tensor":
        """Map a teacher-indexed tensor (V_teacher x ...) to the student vocabulary (V_student x ...).

        Fallback entries get the mean of `base_rows` plus Gaussian noise of
        `noise` per-dimension standard deviations (seeded).
        """
        import torch

        n = self.kinds.shape[0]
        lengths = np.diff(self.offsets)
        seg = torch.from_numpy(np.repeat(np.arange(n), lengths))
        gathered = rows[torch.from_numpy(self.ids)].double()
        out = torch.zeros((n, *rows.shape[1:]), dtype=torch.float64).index_add_(0, seg, gathered)
        shape = (n,) + (1,) * (rows.dim() - 1)
        out /= torch.from_numpy(np.maximum(lengths, 1)).double().reshape(shape)
        fallback = torch.from_numpy(self.kinds == _FALLBACK)
        if bool(fallback.any()):
            base = rows[torch.from_numpy(self.base_rows)].double()
            fill = base.mean(dim=0).expand(int(fallback.sum()), *rows.shape[1:]).clone()
            if noise > 0:
                gen = torch.Generator().manual_seed(seed)
                fill += torch.randn(fill.shape, generator=gen, dtype=torch.float64) * (noise * base.std(dim=0))
            out[fallback] = fill
        return out.to(rows.dtype)


def build_token_map(
    student: "Tokenizer",
    teacher: "Tokenizer",
    *,
    student_config: dict | None = None,
    teacher_config: dict | None = None,
) -> TokenMap:
    """Classify and split every student token over the teacher's vocabulary (see the module docstring)."""
    from .. import _core
    from ..aligner import Aligner, _role_map
    from ..tokenization import UNUSED_SLOT, special_ids

    # The aligner splits its first tokenizer into the second's pieces: here student -> teacher.
    al = Aligner(student, teacher, teacher_config=student_config, student_config=teacher_config)
    s_scheme, t_scheme = al.teacher_scheme, al.student_scheme
    s_roles, t_roles = al.teacher_roles, al.student_roles
    role_map = _role_map(s_roles, t_roles)
    t_unk = t_roles.get("unk", -1)
    offsets = al.table.offsets.astype(np.int64)
    ids = al.table.ids.astype(np.int64)
    n = len(al.teacher_vocab)
    kinds = np.full(n, _SUBWORD, dtype=np.uint8)
    lengths = np.diff(offsets)
    single = lengths == 1
    first = np.full(n, -1, dtype=np.int64)
    first[lengths > 0] = ids[offsets[:-1][lengths > 0]]
    kinds[(lengths == 0) | (single & (first == t_unk))] = _FALLBACK
    for sid in np.flatnonzero(single & (kinds != _FALLBACK)):
        s_tok, t_tok = al.teacher_vocab[sid], al.student_vocab[first[sid]]
        s_parsed = _core.parse_token(s_tok, s_scheme.name, s_scheme.continuation_prefix,
                                     s_scheme.metaspace_replacement)
        t_parsed = _core.parse_token(t_tok, t_scheme.name, t_scheme.continuation_prefix,
                                     t_scheme.metaspace_replacement)
        if s_parsed[2] and t_parsed[2] and s_parsed[:2] == t_parsed[:2]:
            kinds[sid] = _COPIED
    s_special = set(special_ids(student))
    unmatched = []
    for sid in s_special:
        if sid in role_map:
            kinds[sid] = _SPECIAL
        else:
            kinds[sid] = _FALLBACK
            unmatched.append(al.teacher_vocab[sid])
    unused = {sid for sid, tok in enumerate(al.teacher_vocab) if UNUSED_SLOT.match(tok) and sid not in s_special}
    kinds[list(unused)] = _FALLBACK
    # A cased student against an uncased teacher: "Hello" has no split as it is, but the teacher would
    # see "hello". Retry such tokens with the teacher's normalizer applied to the surface.
    retry = [sid for sid in np.flatnonzero(kinds == _FALLBACK) if sid not in s_special and sid not in unused]
    if retry and teacher.normalizer is not None:
        offsets, ids = _resplit_normalized(al, teacher, retry, kinds, offsets, ids)
    if unmatched:
        log.warning("student special tokens with no teacher counterpart start as fallback rows: %s", unmatched)
    t_special = set(special_ids(teacher))
    base_rows = np.array([i for i, tok in enumerate(al.student_vocab)
                          if tok and i not in t_special and not UNUSED_SLOT.match(tok)], dtype=np.int64)
    if base_rows.size == 0:
        base_rows = np.arange(len(al.student_vocab), dtype=np.int64)
    return TokenMap(offsets=offsets, ids=ids, kinds=kinds, base_rows=base_rows)


def _resplit_normalized(al: Any, teacher: "Tokenizer", sids: list[int], kinds: np.ndarray, offsets: np.ndarray,
                        ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the surfaces of `sids`, normalised as the teacher normalises text; found splits become subword means."""
    from .. import _core

    scheme = al.teacher_scheme  # the student's scheme (the aligner runs student -> teacher)
    found: dict[int, list[int]] = {}
    for sid in sids:
        surface, word_start, valid = _core.parse_token(al.teacher_vocab[sid], scheme.name,
                                                       scheme.continuation_prefix, scheme.metaspace_replacement)
        if not valid or not surface:
            continue
        try:
            text = surface.decode("utf-8")
        except UnicodeDecodeError:  # a byte piece of a longer character
            continue
        normalized = teacher.normalizer.normalize_str(text)
        if normalized == text or not normalized:
            continue
        pieces = al.splitter.split(normalized.encode("utf-8"), word_start)
        if pieces and al.student_roles.get("unk", -1) not in pieces:
            found[int(sid)] = pieces
    if not found:
        return offsets, ids
    lengths = np.diff(offsets)
    parts = [ids[offsets[i]:offsets[i + 1]] for i in range(len(lengths))]
    for sid, pieces in found.items():
        parts[sid] = np.asarray(pieces, dtype=np.int64)
        lengths[sid] = len(pieces)
        kinds[sid] = _SUBWORD
    new_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    log.info("%d student tokens split after the teacher's normalizer (e.g. case folding)", len(found))
    return new_offsets, np.concatenate(parts).astype(np.int64)


def _check_student_tokenizer(tok: "Tokenizer", roles: dict[str, int], where: str) -> None:
    """The student is a masked LM: it needs [PAD] and [MASK], and its template's special ids must be its own."""
    missing = [r for r in ("pad", "mask") if r not in roles]
    if missing:
        raise TokenizerError(
            f"{where}: the student tokenizer has no {' and no '.join(missing)} token; a masked-LM student needs "
            "both: rebuild it with build-vocab (which adds the teacher's special tokens)"
        )
    enc = tok.encode("a", add_special_tokens=True)
    for token, idx, special in zip(enc.tokens, enc.ids, enc.special_tokens_mask):
        if special and tok.id_to_token(idx) != token:
            raise TokenizerError(
                f"{where}: the tokenizer's post-processor adds {token!r} as id {idx}, but id {idx} is "
                f"{tok.id_to_token(idx)!r} and {token!r} is id {tok.token_to_id(token)} in its vocabulary "
                "(a template copied from the teacher?); fix the post_processor's special token ids"
            )


class _EmbeddingStart:
    """The student's word rows in the teacher's input space, by `kind` (see the module docstring)."""

    def __init__(self, kind: str, token_map: "TokenMap | None", model_t: Any, t_tok: Any, seed: int) -> None:
        self.kind, self.token_map, self.model_t, self.t_tok, self.seed = kind, token_map, model_t, t_tok, seed
        self.notes: list[str] = []

    def rows(self, word: "torch.Tensor") -> "torch.Tensor":
        """[V_student, H] rows from the teacher's word embeddings `word` [V_teacher, H]."""
        assert self.token_map is not None
        fvt = self.token_map.apply(word, noise=FALLBACK_NOISE, seed=self.seed)
        if self.kind == "contextual":
            return self._contextual(fvt)
        if self.kind == "contextual-fit":
            return self._fitted(fvt)
        return fvt

    def _contextual(self, fvt: "torch.Tensor") -> "torch.Tensor":
        kinds = self.token_map.kinds
        sids = np.flatnonzero((kinds == _COPIED) | (kinds == _SUBWORD))
        if sids.size < 2:
            return fvt
        ctx = contextual_vectors(self.model_t, self.t_tok, self.token_map, sids).double()
        ref = fvt[torch_index(sids)].double()
        centred, ref_centred = ctx - ctx.mean(0), ref - ref.mean(0)
        scale = ref_centred.norm(dim=1).mean() / centred.norm(dim=1).mean().clamp(min=1e-12)
        out = fvt.clone()
        out[torch_index(sids)] = (centred * scale + ref.mean(0)).to(fvt.dtype)
        self.notes.append(f"contextual start: {sids.size} rows from the teacher's contextual vectors")
        return out

    def _fitted(self, fvt: "torch.Tensor") -> "torch.Tensor":
        import torch

        kinds = self.token_map.kinds
        copied, subword = np.flatnonzero(kinds == _COPIED), np.flatnonzero(kinds == _SUBWORD)
        width = fvt.shape[1]
        if copied.size < FIT_TOKENS_PER_DIM * width or subword.size == 0:
            self.notes.append(f"contextual-fit: {copied.size} copied tokens (fewer than {FIT_TOKENS_PER_DIM} x width "
                              f"{width} to fit the map) or no subword tokens; the fvt rows are kept")
            return fvt
        ctx = contextual_vectors(self.model_t, self.t_tok, self.token_map, np.concatenate([copied, subword]))
        x = torch.cat([ctx.double(), torch.ones(ctx.shape[0], 1, dtype=torch.float64)], dim=1)
        xc, xs = x[: copied.size], x[copied.size:]
        target = fvt[torch_index(copied)].double()
        normal = xc.T @ xc
        normal += torch.eye(normal.shape[0], dtype=torch.float64) * (CONTEXT_RIDGE * normal.diagonal().mean())
        a = torch.linalg.solve(normal, xc.T @ target)
        fit = torch.nn.functional.cosine_similarity(xc @ a, target, dim=1).mean()
        out = fvt.clone()
        out[torch_index(subword)] = (xs @ a).to(fvt.dtype)
        self.notes.append(f"contextual-fit: {subword.size} subword rows through a map fitted on {copied.size} "
                          f"copied tokens (mean cosine of the fit {float(fit):.3f})")
        return out


def torch_index(ids: np.ndarray) -> "torch.Tensor":
    import torch

    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def contextual_vectors(model_t: Any, t_tok: Any, token_map: TokenMap, sids: np.ndarray) -> "torch.Tensor":
    """Model2Vec's vector of each student token in `sids`: the teacher's last layer averaged over
    [CLS] + the token's teacher pieces + [SEP] (float32, [len(sids), H]), batched by length."""
    import torch

    from ..agreement import mean_pool

    frame = t_tok.encode("").ids  # the teacher's own framing: [CLS] [SEP] or <s> </s>
    head, tail = frame[:1], frame[1:2]
    limit = int(getattr(model_t.config, "max_position_embeddings", 512)) - 2
    seqs = [head + token_map.ids[token_map.offsets[s]:token_map.offsets[s + 1]].tolist()[:limit] + tail for s in sids]
    order = np.argsort([len(q) for q in seqs], kind="stable")
    pad = int(model_t.config.pad_token_id or 0)
    base = encoder(model_t)
    started = time.perf_counter()
    parts = []
    with torch.inference_mode():
        for lo in range(0, len(order), CONTEXT_BATCH):
            batch = [seqs[i] for i in order[lo:lo + CONTEXT_BATCH]]
            ids = torch.full((len(batch), len(batch[-1])), pad, dtype=torch.long)  # sorted: the last is longest
            mask = torch.zeros_like(ids)
            for row, q in enumerate(batch):
                ids[row, : len(q)] = torch.tensor(q)
                mask[row, : len(q)] = 1
            parts.append(mean_pool(base(input_ids=ids, attention_mask=mask).last_hidden_state.float(), mask))
    out = torch.cat(parts)[torch_index(np.argsort(order))]  # back from length order to the order of `sids`
    log.info("contextual vectors of %d student tokens in %.1f s", len(seqs), time.perf_counter() - started)
    return out


# ---------------------------------------------------------------------------------------------- width


def pca_projection(matrix: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Top-k principal directions of the rows of `matrix` (H x k, orthonormal) and the variance fraction kept."""
    x = np.asarray(matrix, dtype=np.float64)
    if not 1 <= k <= x.shape[1]:
        raise ConfigError(f"cannot project width {x.shape[1]} to {k}")
    x = x - x.mean(axis=0)
    # SVD of the H x H scatter matrix: the same directions as the SVD of the centred V x H matrix
    # (its right singular vectors), at a fraction of the cost for a large vocabulary.
    u, s2, _ = np.linalg.svd(x.T @ x, hermitian=True)
    p = u[:, :k].copy()
    # Deterministic signs: the largest entry of each direction is positive.
    signs = np.sign(p[np.abs(p).argmax(axis=0), np.arange(k)])
    p *= np.where(signs == 0, 1.0, signs)
    return p, float(s2[:k].sum() / max(s2.sum(), 1e-300))


def _variance_kept(matrix: np.ndarray, p: np.ndarray) -> float:
    x = np.asarray(matrix, dtype=np.float64)
    x = x - x.mean(axis=0)
    total = float((x * x).sum())
    y = x @ p
    return float((y * y).sum() / max(total, 1e-300))


class _Width:
    """Maps hidden-dimension tensors from the teacher's width to the student's `width`.

    With `p` (H x d) the map is the projection of the module docstring; without
    it (same width, or `truncate`) it keeps the leading `width` coordinates.
    """

    def __init__(self, p: "torch.Tensor | None", width: int) -> None:
        self.p, self.width = p, width

    def rows(self, x: "torch.Tensor") -> "torch.Tensor":
        """Vectors in the hidden space (embedding rows, biases of writers, a LayerNorm's bias)."""
        return x[..., : self.width] if self.p is None else x @ self.p

    def gain(self, g: "torch.Tensor") -> "torch.Tensor":
        """A LayerNorm gain: the diagonal of P.T diag(g) P."""
        return g[: self.width] if self.p is None else (self.p * self.p).T @ g

    def reader(self, w: "torch.Tensor") -> "torch.Tensor":
        """A Linear weight [out, H] that reads the hidden state."""
        return w[:, : self.width] if self.p is None else w @ self.p

    def writer(self, w: "torch.Tensor") -> "torch.Tensor":
        """A Linear weight [H, in] that writes the hidden state."""
        return w[: self.width] if self.p is None else self.p.T @ w


def _reduce_layer(layer: dict[str, "torch.Tensor"], width: _Width, reduce: str, t: TeacherWeights,
                  heads: int, inter: int) -> dict[str, "torch.Tensor"]:
    d = width.width
    if reduce == "truncate":
        shapes = {"q.weight": (d, d), "k.weight": (d, d), "v.weight": (d, d), "o.weight": (d, d),
                  "i.weight": (inter, d), "f.weight": (d, inter), "i.bias": (inter,)}
        return {k: v[tuple(slice(0, n) for n in shapes.get(k, (d,)))].clone() for k, v in layer.items()}
    import torch

    hd_t, hd_s = t.hidden // t.heads, d // heads
    rows = torch.cat([torch.arange(h * hd_t, h * hd_t + hd_s) for h in range(heads)])
    out = {}
    for name in ("q", "k", "v"):
        out[f"{name}.weight"] = width.reader(layer[f"{name}.weight"][rows])
        out[f"{name}.bias"] = layer[f"{name}.bias"][rows]
    out["o.weight"] = width.writer(layer["o.weight"][:, rows])
    out["o.bias"] = width.rows(layer["o.bias"])
    out["i.weight"] = width.reader(layer["i.weight"][:inter])
    out["i.bias"] = layer["i.bias"][:inter]
    out["f.weight"] = width.writer(layer["f.weight"][:, :inter])
    out["f.bias"] = width.rows(layer["f.bias"])
    for ln in ("ln1", "ln2"):
        out[f"{ln}.weight"] = width.gain(layer[f"{ln}.weight"])
        out[f"{ln}.bias"] = width.rows(layer[f"{ln}.bias"])
    return {k: v.contiguous().clone() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- layers


def evenly_spaced(n: int, total: int) -> list[int]:
    """n layer indices spread over 0..total-1, first and last included (12 -> 6: 0,2,4,7,9,11)."""
    return [int(x) for x in np.rint(np.linspace(0, total - 1, n))] if n > 1 else [0]


def parse_layer_map(spec: str | Sequence[Any] | None, teacher_layers: int) -> list[list[int]] | None:
    """ "0,2,4" or "0+1,2+3" (or a list of ints / lists) -> groups of teacher layers, checked against the teacher."""
    if spec is None:
        return None
    groups: list[list[int]] = []
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    for item in items:
        try:
            if isinstance(item, str):
                group = [int(x) for x in item.split("+")]
            elif isinstance(item, (list, tuple)):
                group = [int(x) for x in item]
            else:
                group = [int(item)]
        except ValueError:
            raise ConfigError(f"--layer-map {spec!r}: {item!r} is not a layer index; write e.g. 0,2,4 or 0+1,2+3")
        if not group:
            raise ConfigError(f"--layer-map {spec!r}: empty group")
        for layer in group:
            if not 0 <= layer < teacher_layers:
                raise ConfigError(f"--layer-map {spec!r}: layer {layer} does not exist; the teacher has "
                                  f"{teacher_layers} layers (0..{teacher_layers - 1})")
        groups.append(group)
    if not groups:
        raise ConfigError("--layer-map is empty; write e.g. 0,2,4")
    return groups


# ---------------------------------------------------------------------------------------------- report


@dataclass
class InitReport:
    """What init-student built; written as init_report.json beside the model."""

    teacher: str
    tokenizer: str
    out: str
    teacher_architecture: str
    student_architecture: str
    teacher_shape: dict[str, int]
    student_shape: dict[str, int]
    embedding_init: str
    reduce: str
    layer_init: str
    layer_map: list[list[int]] | None
    mlm_head: str  # "teacher" | "random"
    explained_variance: float  # share of the teacher's word-embedding variance kept by the width map
    coverage: dict[str, int]
    teacher_parameters: int
    teacher_embedding_parameters: int
    student_parameters: int
    student_embedding_parameters: int
    compression: float
    teacher_bytes: int
    student_bytes: int
    agreement: float | None = None
    eval_sentences: int = 0
    seed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def table(self) -> str:
        """Teacher beside student, as printed by the CLI."""
        ts, ss = self.teacher_shape, self.student_shape
        rows = [("", "teacher", "student"),
                ("architecture", self.teacher_architecture, self.student_architecture)]
        for key in ("layers", "hidden", "heads", "intermediate", "vocab"):
            rows.append((key, f"{ts[key]:,}", f"{ss[key]:,}"))
        rows += [
            ("parameters", f"{self.teacher_parameters:,}", f"{self.student_parameters:,}"),
            ("  in embeddings", f"{self.teacher_embedding_parameters:,}", f"{self.student_embedding_parameters:,}"),
            ("size on disk", _mb(self.teacher_bytes), _mb(self.student_bytes)),
            ("compression", "1.00x", f"{self.compression:.2f}x"),
        ]
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}" for a, b, c in rows]
        total = max(sum(self.coverage.values()), 1)
        cov = ", ".join(f"{k.replace('_', ' ')} {v:,} ({100 * v / total:.1f}%)" for k, v in self.coverage.items())
        lines.append(f"init: embeddings {self.embedding_init}, width {self.reduce} "
                     f"(variance kept {self.explained_variance:.3f}), layers {self.layer_init} "
                     f"{self.layer_map if self.layer_map is not None else ''}, MLM head {self.mlm_head}".rstrip())
        lines.append(f"coverage: {cov}")
        if self.agreement is not None:
            lines.append(f"teacher agreement ({self.eval_sentences} sentences): {self.agreement:.4f}")
        lines.append(f"wrote {self.out} in {self.seconds:.1f} s")
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _weights_bytes(path: Path) -> int:
    total = 0
    for f in path.iterdir():
        if f.is_file() and (f.name.endswith(".safetensors") or (f.name.startswith("pytorch_model") and
                                                                f.name.endswith(".bin"))):
            total += f.stat().st_size
    return total


# ---------------------------------------------------------------------------------------------- the stage


def _student_shape(t: TeacherWeights, layers: int | None, hidden: int | None, heads: int | None,
                   intermediate: int | None, layer_groups: list[list[int]] | None, layer_init: str,
                   reduce: str) -> tuple[int, int, int, int]:
    for name, value in (("--layers", layers), ("--hidden", hidden), ("--heads", heads),
                        ("--intermediate", intermediate)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if layers is None:
        layers = len(layer_groups) if layer_groups else max(1, t.layers // 2)
    if layer_groups is not None and len(layer_groups) != layers:
        raise ConfigError(f"--layer-map names {len(layer_groups)} student layers but --layers is {layers}")
    if layer_init != "random" and layer_groups is None and layers > t.layers:
        raise ConfigError(f"--layers {layers} exceeds the teacher's {t.layers} layers; pass --layer-map to "
                          "repeat teacher layers, or --layer-init random")
    hidden = t.hidden if hidden is None else hidden
    if hidden > t.hidden:
        raise ConfigError(f"--hidden {hidden} is wider than the teacher ({t.hidden}); a student can only be as "
                          "wide as its teacher or narrower")
    hd_t = t.hidden // t.heads
    if heads is None:
        if hidden == t.hidden:
            heads = t.heads
        elif hidden % hd_t == 0 and hidden // hd_t <= t.heads:
            heads = hidden // hd_t  # keep the teacher's head size: whole heads survive
        elif hidden % t.heads == 0:
            heads = t.heads
        else:
            raise ConfigError(f"--hidden {hidden}: pass --heads (a divisor of {hidden}); the teacher has "
                              f"{t.heads} heads of size {hd_t}")
    if hidden % heads:
        raise ConfigError(f"--heads {heads} does not divide --hidden {hidden}; choose heads so that "
                          f"hidden / heads is a whole head size (e.g. {hidden // hd_t or 1} heads of {hd_t})")
    if intermediate is None:
        intermediate = max(1, round(t.intermediate * hidden / t.hidden))
    if layer_init != "random":
        if intermediate > t.intermediate:
            raise ConfigError(f"--intermediate {intermediate} exceeds the teacher's {t.intermediate}; copied "
                              "layers can only keep or drop neurons (or pass --layer-init random)")
        if reduce == "pca" and (heads > t.heads or hidden // heads > hd_t):
            raise ConfigError(
                f"{heads} heads of size {hidden // heads} cannot be taken from the teacher's {t.heads} heads of "
                f"size {hd_t}: use at most {t.heads} heads of at most {hd_t} dims, --reduce truncate, or "
                "--layer-init random")
    return layers, hidden, heads, intermediate


def _prepare_out(out: Path) -> Path:
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not (out / "init_report.json").exists():
            raise ConfigError(f"{out}: folder exists and is not an init-student output; choose another --out "
                              "or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _commit_out(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` (an older init-student output is removed only now)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _copy_tokenizer(source: Path, dest: Path, roles: dict[str, int], tok: "Tokenizer", max_length: int) -> None:
    from ..tokenization import read_config

    if source.is_dir():
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, dest / name)
    else:
        shutil.copyfile(source, dest / "tokenizer.json")
    config = read_config(source) if source.is_dir() and (source / "tokenizer_config.json").exists() else {}
    if not config:
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
                  "clean_up_tokenization_spaces": False}
    # A config that lacks a role's token leaves AutoTokenizer without e.g. mask_token.
    for role, idx in roles.items():
        config.setdefault(f"{role}_token", tok.id_to_token(idx))
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")


def _read_sentences(eval_corpus: Any, limit: int) -> list[str]:
    from ..corpus import iter_lines

    sources = [eval_corpus] if isinstance(eval_corpus, (str, os.PathLike)) else list(eval_corpus)
    sentences = []
    for line in iter_lines(sources):
        if line.strip():
            sentences.append(line.strip())
            if len(sentences) >= limit:
                break
    if len(sentences) < 3:
        raise CorpusError(f"{', '.join(map(str, sources))}: teacher agreement needs at least 3 non-empty lines, "
                          f"found {len(sentences)}")
    return sentences


def init_student(
    *,
    teacher: str | os.PathLike,
    tokenizer: str | os.PathLike,
    out: str | os.PathLike,
    layers: int | None = None,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    embedding_init: str = "auto",
    reduce: str = "pca",
    layer_init: str = "select",
    layer_map: str | Sequence[Any] | None = None,
    eval_corpus: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    eval_sentences: int = 256,
    dropout: float | None = None,
) -> InitReport:
    """Build a `BertForMaskedLM` student in `out` from `teacher` and the student `tokenizer`; see the module doc.

    `eval_corpus` (optional): text whose first `eval_sentences` non-empty lines
    measure the teacher agreement of the initialised student. `dropout` (optional): the student's hidden and
    attention dropout instead of the teacher's.
    """
    from ..tokenization import load_tokenizer, read_config, special_tokens

    started = time.perf_counter()
    _check_options(embedding_init, reduce, layer_init, eval_sentences, dropout)
    teacher_path, tok_path, out_path = Path(teacher), Path(tokenizer), Path(out)
    s_tok = load_tokenizer(tok_path)
    s_cfg = read_config(tok_path)
    s_roles = special_tokens(s_tok, s_cfg)
    _check_student_tokenizer(s_tok, s_roles, str(tok_path))
    model_t, t = load_teacher(teacher_path, trust_remote_code=trust_remote_code)
    groups = parse_layer_map(layer_map, t.layers)
    n_layers, d, n_heads, n_inter = _student_shape(t, layers, hidden, heads, intermediate, groups, layer_init,
                                                   reduce)
    groups = _layer_groups(groups, layer_init, n_layers, t.layers)
    embedding_init = resolve_embedding_init(embedding_init, t, n_layers, d)
    tmp = _prepare_out(out_path)
    try:
        from_teacher = embedding_init != "random"
        t_tok, token_map = _teacher_tokens(teacher_path, t, s_tok, s_cfg, from_teacher or eval_corpus is not None,
                                           from_teacher)
        width, explained = _width_map(t, d, reduce)
        config = _student_config(t, s_tok, s_roles, n_layers, d, n_heads, n_inter, dropout)
        student = _random_student(config, seed)
        start = _EmbeddingStart(embedding_init, token_map, model_t, t_tok, seed)
        weights, mlm_head, notes = _initial_weights(t, width, start, groups, config, reduce, n_heads, n_inter)
        _load_weights(student, weights)
        agreement_value, n_sentences = None, 0
        if eval_corpus is not None:
            agreement_value, n_sentences = _agreement(model_t, t_tok, student, s_tok, eval_corpus, eval_sentences)
        student.save_pretrained(str(tmp))
        _copy_tokenizer(tok_path, tmp, s_roles, s_tok, config.max_position_embeddings)
        s_params = sum(p_.numel() for p_ in student.parameters())
        report = InitReport(
            teacher=str(teacher_path), tokenizer=str(tok_path), out=str(out_path),
            teacher_architecture=t.architecture, student_architecture="BertForMaskedLM",
            teacher_shape={"layers": t.layers, "hidden": t.hidden, "heads": t.heads,
                           "intermediate": t.intermediate, "vocab": int(t.word.shape[0])},
            student_shape={"layers": n_layers, "hidden": d, "heads": n_heads, "intermediate": n_inter,
                           "vocab": config.vocab_size},
            embedding_init=embedding_init, reduce=reduce, layer_init=layer_init, layer_map=groups,
            mlm_head=mlm_head, explained_variance=round(explained, 6),
            coverage=token_map.counts() if from_teacher else {"random": config.vocab_size},
            teacher_parameters=t.parameters, teacher_embedding_parameters=t.embedding_parameters,
            student_parameters=s_params, student_embedding_parameters=_embedding_parameters(student),
            compression=round(t.parameters / s_params, 4),
            teacher_bytes=_weights_bytes(teacher_path), student_bytes=_weights_bytes(tmp),
            agreement=agreement_value, eval_sentences=n_sentences, seed=seed, notes=notes,
        )
        report.seconds = round(time.perf_counter() - started, 3)
        (tmp / "init_report.json").write_text(report.to_json() + "\n", encoding="utf-8")
        _commit_out(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("init-student: wrote %s in %.1f s", out_path, report.seconds)
    return report


def resolve_embedding_init(embedding_init: str, t: TeacherWeights, n_layers: int, width: int) -> str:
    """`auto` -> fvt for a student of the teacher's shape (exact copies), contextual for a smaller one."""
    if embedding_init != "auto":
        return embedding_init
    return "fvt" if (n_layers, width) == (t.layers, t.hidden) else "contextual"


def _check_options(embedding_init: str, reduce: str, layer_init: str, eval_sentences: int,
                   dropout: float | None) -> None:
    for name, value, allowed in (("embedding_init", embedding_init, EMBEDDING_INITS),
                                 ("reduce", reduce, REDUCTIONS), ("layer_init", layer_init, LAYER_INITS)):
        if value not in allowed:
            raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}")
    if eval_sentences < 3:
        raise ConfigError(f"--eval-sentences must be at least 3, got {eval_sentences}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {dropout}")


def _layer_groups(groups: list[list[int]] | None, layer_init: str, n_layers: int,
                  teacher_layers: int) -> list[list[int]] | None:
    """The teacher layers each student layer starts from (None: random layers)."""
    if layer_init == "random":
        return None
    if groups is not None:
        return groups
    if layer_init == "select":
        return [[i] for i in evenly_spaced(n_layers, teacher_layers)]
    return [g.tolist() for g in np.array_split(np.arange(teacher_layers), n_layers)]


def _teacher_tokens(teacher_path: Path, t: TeacherWeights, s_tok: Any, s_cfg: dict, need_tokenizer: bool,
                    fvt: bool) -> tuple[Any, Any]:
    """(the teacher's tokenizer, the student -> teacher token map), each only when something needs it."""
    from ..tokenization import load_tokenizer, read_config

    t_tok = token_map = None
    if need_tokenizer or t.head is not None:
        t_tok = load_tokenizer(teacher_path)
        t_vocab = t_tok.get_vocab_size(with_added_tokens=True)
        if t_vocab > t.word.shape[0]:
            raise ModelError(f"{teacher_path}: its tokenizer has {t_vocab} tokens but the model only "
                             f"{t.word.shape[0]} embedding rows: the tokenizer does not belong to this model")
        if fvt or t.head is not None:
            token_map = build_token_map(s_tok, t_tok, student_config=s_cfg, teacher_config=read_config(teacher_path))
    return t_tok, token_map


def _width_map(t: TeacherWeights, d: int, reduce: str) -> tuple["_Width", float]:
    """The teacher -> student width map fitted on the teacher's word embeddings, and the variance it keeps."""
    import torch

    if d == t.hidden:
        return _Width(None, d), 1.0
    if reduce == "pca":
        p_np, explained = pca_projection(t.word.numpy(), d)
        return _Width(torch.from_numpy(p_np).float(), d), explained
    return _Width(None, d), _variance_kept(t.word.numpy(), np.eye(t.hidden)[:, :d])


def _student_config(t: TeacherWeights, s_tok: Any, s_roles: dict[str, int], n_layers: int, d: int, n_heads: int,
                    n_inter: int, dropout: float | None = None) -> Any:
    from transformers import BertConfig

    hidden_dropout, attention_dropout = (t.hidden_dropout, t.attention_dropout) if dropout is None else (dropout,) * 2

    config = BertConfig(
        vocab_size=s_tok.get_vocab_size(with_added_tokens=True), hidden_size=d, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, intermediate_size=n_inter, hidden_act=t.hidden_act,
        hidden_dropout_prob=hidden_dropout, attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=t.position.shape[0],
        type_vocab_size=t.token_type.shape[0] if t.token_type is not None else 2,
        initializer_range=t.initializer_range, layer_norm_eps=t.layer_norm_eps,
        pad_token_id=s_roles["pad"], bos_token_id=s_roles.get("cls", s_roles.get("bos")),
        eos_token_id=s_roles.get("sep", s_roles.get("eos")), tie_word_embeddings=True,
    )
    config.architectures = ["BertForMaskedLM"]
    return config


def _random_student(config: Any, seed: int) -> Any:
    """A seeded random BertForMaskedLM (the global RNG left as it was)."""
    import torch
    from transformers import BertForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = BertForMaskedLM(config)
    return student.eval()


def _initial_weights(t: TeacherWeights, width: "_Width", start: "_EmbeddingStart", groups: list[list[int]] | None,
                     config: Any, reduce: str, n_heads: int, n_inter: int) -> tuple[dict[str, Any], str, list[str]]:
    """(student weights taken from the teacher's, where the MLM head came from, notes)."""
    new = _embedding_weights(t, width, start, config)
    notes = list(start.notes)
    token_map = start.token_map
    for n, group in enumerate(groups or []):
        src = t.layer[group[0]] if len(group) == 1 else {
            k: _mean_of([t.layer[g][k] for g in group]) for k in t.layer[group[0]]}
        reduced = _reduce_layer(src, width, reduce, t, n_heads, n_inter)
        for name, (bert_key, _) in _LAYER_KEYS.items():
            for part in ("weight", "bias"):
                new[f"bert.encoder.layer.{n}.{bert_key}.{part}"] = reduced[f"{name}.{part}"]
    if t.head is None:
        return new, "random", notes + ["the teacher has no MLM head: the student's MLM transform starts random"]
    h = t.head
    new["cls.predictions.transform.dense.weight"] = width.writer(width.reader(h["dense.weight"]))
    new["cls.predictions.transform.dense.bias"] = width.rows(h["dense.bias"])
    new["cls.predictions.transform.LayerNorm.weight"] = width.gain(h["ln.weight"])
    new["cls.predictions.transform.LayerNorm.bias"] = width.rows(h["ln.bias"])
    new["cls.predictions.bias"] = token_map.apply(h["bias"])
    return new, "teacher", notes


def _mean_of(tensors: list[Any]) -> Any:
    import torch

    return torch.stack(tensors).mean(dim=0)


def _embedding_weights(t: TeacherWeights, width: "_Width", start: "_EmbeddingStart", config: Any) -> dict[str, Any]:
    import torch

    new: dict[str, Any] = {}
    if start.kind != "random":
        new["bert.embeddings.word_embeddings.weight"] = width.rows(start.rows(t.word))
    new["bert.embeddings.position_embeddings.weight"] = width.rows(t.position)
    if t.token_type is not None:
        new["bert.embeddings.token_type_embeddings.weight"] = width.rows(t.token_type)
    else:  # DistilBERT has no segments: zero rows leave the sum unchanged
        new["bert.embeddings.token_type_embeddings.weight"] = torch.zeros(config.type_vocab_size, width.width)
    new["bert.embeddings.LayerNorm.weight"] = width.gain(t.emb_ln[0])
    new["bert.embeddings.LayerNorm.bias"] = width.rows(t.emb_ln[1])
    return new


def _load_weights(student: Any, weights: dict[str, Any]) -> None:
    import torch

    sd = student.state_dict()
    with torch.no_grad():
        for key, value in weights.items():
            if sd[key].shape != value.shape:
                raise AssertionError(f"{key}: built {tuple(value.shape)}, student has {tuple(sd[key].shape)}")
            sd[key].copy_(value)


def _embedding_parameters(student: Any) -> int:
    sd = student.state_dict()
    return sum(sd[k].numel() for k in ("bert.embeddings.word_embeddings.weight",
                                       "bert.embeddings.position_embeddings.weight",
                                       "bert.embeddings.token_type_embeddings.weight"))


def _agreement(model_t: Any, t_tok: Any, student: Any, s_tok: Any, eval_corpus: Any,
               eval_sentences: int) -> tuple[float, int]:
    """Teacher agreement of the initialised student on the first lines of `eval_corpus`."""
    from ..agreement import agreement as measure_agreement
    from ..agreement import embed

    sentences = _read_sentences(eval_corpus, eval_sentences)
    t_emb = embed(model_t, t_tok, sentences, 32, 128, "cpu")
    value = measure_agreement(model_t, t_tok, student, s_tok, sentences, teacher_embeddings=t_emb, device="cpu")
    return value, len(sentences)
