"""distill: losses decrease, KL paths, resume equivalence, two-process gloo, NaN handling, bad inputs, export.

Tiny teachers and students are built here from configs (the teachers with MiniLM's tokenizer); the data are
real shards made by `vocabshrink align` from WikiText-2 lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from safetensors.torch import load_file

from conftest import bert_template, tiny_bert
from vocabshrink import losses as L
from vocabshrink.errors import ConfigError, ModelError, ShardError, TrainingError
from vocabshrink.stages import distill as T
from vocabshrink.stages.distill import budget as B
from vocabshrink.stages.distill import loop as LOOP
from vocabshrink.stages.distill import objective as DL
from vocabshrink.stages.distill import resume as R

HERE = Path(__file__).resolve().parent


def make_shards(out: Path, lines: list[str], teacher_dir: Path, student_dir: Path, alignment: str = "both",
                **options) -> Path:
    """Real shards of `lines` (one document each, written to OUT.txt beside OUT) from `vocabshrink align`;
    `options` go to align (e.g. examples_per_shard, prompt)."""
    from vocabshrink.stages.align import align

    out.parent.mkdir(parents=True, exist_ok=True)
    corpus = out.parent / f"{out.name}.txt"
    corpus.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    align([str(corpus)], teacher=str(teacher_dir), student=str(student_dir), out=str(out), alignment=alignment,
          max_length=64, progress=False, **options)
    return out


# --- fixtures: tiny models from configs, real text ---------------------------------------------------------------

TEACHER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _own_copy(tok):
    """A copy of a tokenizer with BERT's post-processor and its own [CLS]/[SEP] ids."""
    from tokenizers import Tokenizer

    return bert_template(Tokenizer.from_str(tok.to_str()))




@pytest.fixture(scope="session")
def lines(data_dir) -> list[str]:
    text = (data_dir / "en" / "wikitext2" / "valid.txt").read_text(encoding="utf-8").splitlines()
    good = [ln.strip() for ln in text if 40 < len(ln.strip()) < 160 and not ln.strip().startswith("=")]
    return good[:200]


@pytest.fixture(scope="session")
def models(tmp_path_factory, minilm_path, wordpiece_student, lines):
    """Directories: a tiny MLM teacher and a head-less one (MiniLM's tokenizer), a tiny student, and shards."""
    root = tmp_path_factory.mktemp("distill")
    teacher = root / "teacher-mlm"
    tiny_bert(30522, 32, 2, seed=1).save_pretrained(teacher)
    bare = root / "teacher-bare"
    tiny_bert(30522, 32, 2, seed=1, mlm=False).save_pretrained(bare)
    for d in (teacher, bare):
        for name in TEACHER_FILES:
            if (minilm_path / name).exists():
                shutil.copy2(minilm_path / name, d / name)
    student = root / "student"
    tiny_bert(wordpiece_student.get_vocab_size(), 24, 2, seed=2).save_pretrained(student)
    _own_copy(wordpiece_student).save(str(student / "tokenizer.json"))
    (student / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "mask_token": "[MASK]", "unk_token": "[UNK]", "do_lower_case": True}))
    shards = make_shards(root / "shards", lines[:160], teacher, student)
    held_out = make_shards(root / "held-out", lines[160:200], teacher, student)
    return {"teacher": teacher, "bare": bare, "student": student, "shards": shards, "held_out": held_out,
            "minilm": minilm_path}


def _run(models, out, **kw):
    # explicit weights (the tests below predate the defaults; test_default_recipe checks those), and fp32 unless
    # a test asks: precision auto is bf16 on a CPU with native bf16, where two runs may round apart beyond the
    # tolerances of the exactness tests
    args = dict(teacher=models["teacher"], student=models["student"], data=[models["shards"]], out=out,
                batch_size=8, max_steps=4, lr=2e-3, warmup_steps=1, progress=False, seed=3, mlm_weight=1.0,
                cosine_weight=0.0, sentence_weight=0.0, precision="fp32")
    args.update(kw)
    return T.distill(**args)


def _params(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# --- helpers -----------------------------------------------------------------------------------------------------


def test_parse_layer_map():
    assert T.parse_layer_map(None, 3, 6) == [(3, 6)]
    assert T.parse_layer_map("3:6,0:0", 3, 6) == [(3, 6), (0, 0)]
    assert T.parse_layer_map("-1:-1,1:2", 3, 6) == [(3, 6), (1, 2)]
    with pytest.raises(ConfigError, match="out of range"):
        T.parse_layer_map("4:6", 3, 6)
    with pytest.raises(ConfigError, match="STUDENT:TEACHER"):
        T.parse_layer_map("3-6", 3, 6)


def test_lr_schedule():
    """transformers' schedules: warmup from 0 over 2 steps, then linear or cosine decay to 0 at step 10."""
    def lrs(kind):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched, out = T.schedule(opt, kind, warmup_steps=2, max_steps=10), []
        for _ in range(11):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    linear, cosine = lrs("linear"), lrs("cosine")
    assert [linear[s] for s in (0, 1, 2, 6, 10)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    assert cosine[6] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0) and cosine[2] == 1.0


def test_global_batches_are_seeded_full_and_disjoint():
    lengths = np.random.default_rng(0).integers(5, 50, size=103)
    a = T.global_batches(lengths, 8, seed=1, epoch=0)
    assert len(a) == 103 // 8 and all(len(b) == 8 for b in a)
    flat = np.concatenate(a)
    assert len(set(flat.tolist())) == len(flat)
    assert all(np.array_equal(x, y) for x, y in zip(a, T.global_batches(lengths, 8, seed=1, epoch=0)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, T.global_batches(lengths, 8, seed=1, epoch=1)))


# --- training ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_split_mode_trains_exports_and_reports(models, tmp_path):
    out = tmp_path / "run"
    report = _run(models, out, mse_weight=1.0, cosine_weight=0.5, layer_map="2:2,0:0", checkpoint_every=2,
                  keep_checkpoints=1, eval_data=[models["held_out"]], eval_every=4, eval_batches=2, log_every=1)
    assert report.steps == 4 and report.examples_seen == 32 and report.teacher_tokens_seen > 0
    assert set(report.final_losses) == {"mlm", "mse", "cosine"}
    assert all(np.isfinite(v) for v in report.final_losses.values())
    # last K checkpoints kept, no temporary folder left
    assert [p.name for p in out.iterdir() if p.name.startswith(("step-", ".tmp"))] == ["step-4"]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    ev = report.evaluation
    assert {"eval_mlm_loss", "eval_mlm_accuracy", "eval_hidden_mse", "eval_hidden_cosine"} <= set(ev)
    assert 0.0 <= ev["eval_mlm_accuracy"] <= 1.0
    assert -1.0 <= ev["eval_teacher_agreement"] <= 1.0
    # the export: Hugging Face loads it as it is; the projection is described in its config
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    final = out / "final"
    model = AutoModelForMaskedLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert model(**tok(["a test sentence"], return_tensors="pt")).logits.shape[-1] == model.config.vocab_size
    desc = json.loads((final / "config.json").read_text())["vocabshrink_projection"]
    assert desc["in_features"] == 24 and desc["out_features"] == 32 and desc["embedding_key"] == "s2_t2"
    from safetensors.torch import load_file

    proj = load_file(str(final / "projection.safetensors"))
    assert proj["maps.s2_t2.weight"].shape == (32, 24) and "maps.s0_t0.bias" in proj
    saved = json.loads((out / "training_report.json").read_text())
    assert saved["steps"] == 4 and saved["final_dir"] == str(final)


@pytest.mark.slow
def test_kl_paths_with_an_mlm_teacher(models, tmp_path):
    for mode, sum_probs in (("split", False), ("offsets", True)):
        report = _run(models, tmp_path / f"{mode}-{sum_probs}", mode=mode, max_steps=2, mlm_weight=0.5,
                      mse_weight=1.0, kl_weight=1.0, match_weight=1.0, sum_probs=sum_probs, temperature=2.0)
        assert set(report.final_losses) == {"mlm", "mse", "kl", "match"}, mode
        assert report.final_losses["kl"] > 0 and report.final_losses["match"] > 0, (mode, report.final_losses)


@pytest.mark.slow
def test_loss_decreases_with_the_minilm_teacher(models, tmp_path):
    """A few steps against the real teacher on real text: the hidden-state loss goes down.

    From a random projection start; the fitted start (the default) begins lower than that, on its fit batches.
    """
    out = tmp_path / "minilm"
    _run(models, out, teacher=models["minilm"], max_steps=12, batch_size=4, lr=3e-3, mlm_weight=0.0,
         mse_weight=1.0, cosine_weight=1.0, log_every=1, projection_init="random")
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    fitted = _run(models, tmp_path / "fitted", teacher=models["minilm"], max_steps=1, batch_size=4, lr=3e-3,
                  mlm_weight=0.0, mse_weight=1.0, cosine_weight=1.0)
    assert fitted.final_loss < 0.8 * losses[0], (fitted.final_loss, losses[0])


def _run_until_first_checkpoint(models, out, monkeypatch, **kw):
    """A run interrupted (KeyboardInterrupt) right after writing its first checkpoint."""
    real_save = R.save_checkpoint

    def save_then_die(out, step, *args, **kwargs):
        real_save(out, step, *args, **kwargs)
        raise KeyboardInterrupt(f"killed after step {step}")

    with monkeypatch.context() as m:
        m.setattr(R, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            _run(models, out, **kw)


@pytest.mark.slow
def test_resume_is_exact(models, tmp_path, monkeypatch):
    """4 steps straight == 2 steps, an interruption, and --resume for the rest (CPU, one process)."""
    kw = dict(mse_weight=1.0, cosine_weight=0.3, max_steps=4, checkpoint_every=2, keep_checkpoints=5)
    _run(models, tmp_path / "straight", **kw)
    _run_until_first_checkpoint(models, tmp_path / "halves", monkeypatch, **kw)
    assert [p.name for p in (tmp_path / "halves").glob("step-*")] == ["step-2"]
    with pytest.raises(ConfigError, match="different settings"):
        _run(models, tmp_path / "halves", **{**kw, "lr": 1e-3}, resume=True)
    resumed = _run(models, tmp_path / "halves", **kw, resume=True)
    assert resumed.resumed_from_step == 2
    a, b = _params(tmp_path / "straight" / "final"), _params(tmp_path / "halves" / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pa = (tmp_path / "straight" / "final" / "projection.safetensors").read_bytes()
    assert pa == (tmp_path / "halves" / "final" / "projection.safetensors").read_bytes()
    # the optimizer state too: the step-4 checkpoints agree
    oa = load_file(str(tmp_path / "straight" / "step-4" / "optimizer.safetensors"))
    ob = load_file(str(tmp_path / "halves" / "step-4" / "optimizer.safetensors"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


@pytest.mark.slow
def test_resume_with_an_embedding_rate_and_from_an_older_checkpoint(models, tmp_path, monkeypatch):
    """--embedding-lr-scale 0.5 (a third optimizer group) resumes exactly; another scale is refused by name before
    anything loads; a checkpoint written before the option existed (no key) resumes at the default."""
    kw = dict(mse_weight=1.0, cosine_weight=0.3, max_steps=4, checkpoint_every=2, keep_checkpoints=5,
              embedding_lr_scale=0.5)
    _run(models, tmp_path / "straight", **kw)
    for name, scale in (("halves", 0.5), ("old", 1.0)):
        _run_until_first_checkpoint(models, tmp_path / name, monkeypatch, **{**kw, "embedding_lr_scale": scale})
    with pytest.raises(ConfigError, match="different settings.*embedding_lr_scale"):
        _run(models, tmp_path / "halves", **{**kw, "embedding_lr_scale": 1.0}, resume=True)
    _run(models, tmp_path / "halves", **kw, resume=True)
    a, b = _params(tmp_path / "straight" / "final"), _params(tmp_path / "halves" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_file = tmp_path / "old" / "step-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["settings"]["embedding_lr_scale"]  # as an earlier version wrote it
    state_file.write_text(json.dumps(state))
    assert _run(models, tmp_path / "old", **{**kw, "embedding_lr_scale": 1.0}, resume=True).resumed_from_step == 2


KILLABLE = """
import json, sys, time
from vocabshrink.stages import distill as T
from vocabshrink.stages.distill import resume as R
real = R.save_checkpoint
def slow_save(*args, **kwargs):  # time for the test to kill the run between its checkpoints
    path = real(*args, **kwargs)
    time.sleep(0.5)
    return path
R.save_checkpoint = slow_save
T.distill(**json.loads(sys.argv[1]))
"""


@pytest.mark.slow
def test_sigkill_after_a_timed_checkpoint_then_resume_gives_the_same_weights(models, tmp_path, capsys):
    """Checkpoints by wall time are on by default; a run killed -9 resumes to the weights of an unbroken run."""
    import signal
    import time

    kw = dict(mse_weight=1.0, cosine_weight=0.3, max_steps=12, keep_checkpoints=2)
    straight = _run(models, tmp_path / "straight", **kw)
    assert [p.name for p in (tmp_path / "straight").glob("step-*")] == ["step-12"]  # the default keeps the end
    assert straight.settings["checkpoint_minutes"] == 10.0
    # checkpoint_minutes=1e-6: a checkpoint after every step
    args = dict(teacher=str(models["teacher"]), student=str(models["student"]), data=[str(models["shards"])],
                out=str(tmp_path / "killed"), batch_size=8, lr=2e-3, warmup_steps=1, progress=False, seed=3,
                checkpoint_minutes=1e-6, mlm_weight=1.0, sentence_weight=0.0, precision="fp32", **kw)
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, json.dumps(args)], env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 120
    while not list((tmp_path / "killed").glob("step-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = T.list_checkpoints(tmp_path / "killed")
    assert saved and saved[-1][0] < 12 and not (tmp_path / "killed" / "final").exists()
    with pytest.raises(ConfigError, match="pass --resume"):
        _run(models, tmp_path / "killed", **kw)
    capsys.readouterr()
    resumed = _run(models, tmp_path / "killed", **kw, resume=True)
    assert f"resuming from {saved[-1][1]} (step {saved[-1][0]} of 12)" in capsys.readouterr().err
    assert resumed.resumed_from_step == saved[-1][0]
    a, b = _params(tmp_path / "straight" / "final"), _params(tmp_path / "killed" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(T.list_checkpoints(tmp_path / "killed")) <= 2


def test_budget_plans_the_steps_the_rest_of_the_time_holds():
    b = B.Budget(seconds=60.0, used_before=0.0, first_step=0, started=0.0)
    assert b.plan(done=20, now=10.0, max_steps=1000) == 120  # 2 steps a second, 50 s left
    assert b.plan(done=20, now=10.0, max_steps=100) == 100  # --max-steps still bounds it
    assert b.plan(done=20, now=60.0, max_steps=1000) == 20  # spent: stop now
    assert b.plan(done=0, now=0.0, max_steps=1000) == 1000  # nothing timed yet
    resumed = B.Budget(seconds=60.0, used_before=30.0, first_step=40, started=100.0)
    assert resumed.plan(done=60, now=110.0, max_steps=1000) == 100  # 20 s left at this session's 2 steps a second


def test_a_stretched_schedule_continues_where_it_was():
    """Re-planned at step 4 from 10 steps to 20, the linear schedule goes on from there and reaches 0 at 20."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = T.schedule(opt, "linear", warmup_steps=2, max_steps=10)
    for _ in range(4):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(6 / 8)
    sched = T.schedule(opt, "linear", warmup_steps=2, max_steps=20, last_epoch=3)
    assert sched.get_last_lr()[0] == pytest.approx(16 / 18)
    for _ in range(16):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.0)


def _timed_steps(monkeypatch, seconds_of):
    """A fake clock for the budget that each step advances by `seconds_of(step_index)`; re-plans every 2 steps."""
    now = {"t": 1000.0}
    real_step = LOOP.step

    def timed(run, step_index):
        now["t"] += seconds_of(step_index)
        return real_step(run, step_index)

    monkeypatch.setattr(B, "time", type("Clock", (), {"time": staticmethod(lambda: now["t"])}))
    monkeypatch.setattr(B, "REPLAN_EVERY", 2)
    monkeypatch.setattr(LOOP, "step", timed)
    return now


def _lrs(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}


@pytest.mark.slow
def test_max_minutes_ends_on_time_with_the_rate_decayed_after_a_slowdown(models, tmp_path, monkeypatch):
    """12 s of budget at 1 s a step, 2 s from step 5 on: planned 12 steps, re-planned to 8, which end at 12 s
    with the learning rate at 0 (a plan fixed at the start would have run 12 steps, 20 s)."""
    now = _timed_steps(monkeypatch, lambda i: 1.0 if i < 4 else 2.0)
    start = now["t"]
    report = _run(models, tmp_path / "budget", max_steps=1000, max_minutes=0.2, log_every=1,
                  checkpoint_minutes=0.0)
    assert report.steps == 8 and report.settings["max_minutes"] == 0.2
    assert now["t"] - start == 12.0
    lrs = _lrs(tmp_path / "budget")
    assert max(lrs) == 8 and lrs[8] == pytest.approx(0.0) and lrs[2] > 0
    with pytest.raises(ConfigError, match="--max-minutes"):
        _run(models, tmp_path / "bad", max_minutes=-1.0)


@pytest.mark.slow
def test_a_max_minutes_run_resumes_its_budget_and_plan(models, tmp_path, monkeypatch):
    """Interrupted at its step-4 checkpoint and resumed, a budgeted run ends like the unbroken one: same steps,
    same rates, same weights (the checkpoint holds the seconds spent and the plan)."""
    kw = dict(max_steps=1000, max_minutes=0.2, log_every=1, checkpoint_every=4, keep_checkpoints=5,
              checkpoint_minutes=0.0)
    _timed_steps(monkeypatch, lambda i: 1.0)
    straight = _run(models, tmp_path / "straight", **kw)
    _run_until_first_checkpoint(models, tmp_path / "halves", monkeypatch, **kw)
    state = json.loads((tmp_path / "halves" / "step-4" / "trainer_state.json").read_text())
    assert state["loop_seconds"] == 4.0 and state["planned_steps"] == 12
    resumed = _run(models, tmp_path / "halves", **kw, resume=True)
    assert straight.steps == resumed.steps == 12 and resumed.resumed_from_step == 4
    a_lr, b_lr = _lrs(tmp_path / "straight"), _lrs(tmp_path / "halves")
    assert all(a_lr[s] == pytest.approx(b_lr[s]) for s in range(1, 13))
    a, b = _params(tmp_path / "straight" / "final"), _params(tmp_path / "halves" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_default_recipe(models, tmp_path):
    """The measured recipe (benchmarks/RESULTS.md): MSE + cosine + sentence; MLM only with a teacher MLM head."""
    kw = dict(data=[models["shards"]], batch_size=8, max_steps=1, warmup_steps=1, progress=False)
    bare = T.distill(teacher=models["bare"], student=models["student"], out=tmp_path / "bare", **kw)
    assert set(bare.final_losses) == {"mse", "cosine", "sentence"} and bare.settings["mlm_weight"] == 0.0
    mlm = T.distill(teacher=models["teacher"], student=models["student"], out=tmp_path / "mlm", **kw)
    assert set(mlm.final_losses) == {"mlm", "mse", "cosine", "sentence"} and mlm.settings["mlm_weight"] == 1.0
    defaults = T.DistillOptions.__dataclass_fields__
    assert defaults["batch_size"].default == 64 and defaults["lr"].default == 1e-3


def test_embedding_lr_scale_freezes_or_slows_the_word_table(models, tmp_path):
    """0 leaves the word table as init-student wrote it while the layers train; 0.5 moves it half as far."""
    def tensor(params: dict[str, torch.Tensor], suffix: str) -> torch.Tensor:
        return next(v for k, v in params.items() if k.endswith(suffix))

    start = _params(models["student"])
    words, query = "word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"
    moved = {}
    for scale in (0.0, 0.5, 1.0):
        _run(models, tmp_path / f"s{scale}", max_steps=1, warmup_steps=0, embedding_lr_scale=scale,
             checkpoint_minutes=0)
        final = _params(tmp_path / f"s{scale}" / "final")
        moved[scale] = (tensor(final, words) - tensor(start, words)).abs().max().item()
        assert not torch.equal(tensor(final, query), tensor(start, query)), scale
    assert moved[0.0] == 0.0
    assert moved[0.5] == pytest.approx(moved[1.0] / 2, rel=0.05), moved


def test_precision_auto_is_the_native_type_and_bf16_trains_like_fp32(models, tmp_path):
    """auto resolves as the teacher's type does (bf16 on a CPU that computes it natively) and is recorded; a bf16
    student's losses follow the fp32 one's."""
    from vocabshrink.models import resolve_dtype

    kw = dict(max_steps=3, checkpoint_minutes=0, mse_weight=1.0)
    runs = {p: _run(models, tmp_path / p, precision=p, **kw) for p in ("auto", "fp32", "bf16")}
    assert runs["auto"].settings["precision"] == resolve_dtype("auto")
    assert runs["fp32"].settings["precision"] == "fp32" and runs["bf16"].settings["precision"] == "bf16"
    assert runs["auto"].final_loss == runs[resolve_dtype("auto")].final_loss
    assert runs["bf16"].final_loss == pytest.approx(runs["fp32"].final_loss, rel=0.05)
    assert runs["bf16"].final_loss != runs["fp32"].final_loss  # autocast really ran in bf16


def test_adamw_kernels_train_alike_and_auto_is_fused_on_cpu():
    """--adamw picks torch's AdamW implementation: the three agree to rounding after a few steps on the same
    gradients, and auto is the fused kernel on CPU."""
    from vocabshrink.stages.distill.prepare import adamw_kernel

    assert adamw_kernel("auto", torch.device("cpu")) == {"fused": True}
    assert adamw_kernel("auto", torch.device("meta")) == {"foreach": False}
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(50, 8, generator=gen), torch.randn(8, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(5)]
    finals = {}
    for choice in ("fused", "foreach", "for-loop"):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01, **adamw_kernel(choice, torch.device("cpu")))
        for g in grads:
            for p, gp in zip(params, g):
                p.grad = gp.clone()
            opt.step()
        finals[choice] = [p.detach() for p in params]
        assert not torch.equal(finals[choice][0], start[0])
    for choice in ("foreach", "for-loop"):
        for a, b in zip(finals["fused"], finals[choice]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_adamw_choice_is_recorded_resumes_across_kernels_and_bad_values_are_refused(models, tmp_path,
                                                                                    monkeypatch):
    """A run resumed with another --adamw continues on that kernel from the saved state (not the saved run's
    kernel), ending near the unbroken run; an unknown kernel is refused before anything loads."""
    kw = dict(mse_weight=1.0, max_steps=4, checkpoint_every=2, keep_checkpoints=5)
    straight = _run(models, tmp_path / "straight", **kw)
    assert straight.settings["adamw"] == "auto"
    _run_until_first_checkpoint(models, tmp_path / "halves", monkeypatch, **kw, adamw="for-loop")
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["fused"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    resumed = _run(models, tmp_path / "halves", **kw, resume=True)
    assert resumed.resumed_from_step == 2 and seen == [True, True]
    a, b = _params(tmp_path / "straight" / "final"), _params(tmp_path / "halves" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="--adamw must be one of"):
        _run(models, tmp_path / "bad", adamw="sgd")


def test_attention_auto_is_eager_for_bf16_on_cpu_only():
    from vocabshrink.stages.distill.prepare import attention_kernel

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attention_kernel("auto", "bf16", cpu) == "eager"
    assert attention_kernel("auto", "fp32", cpu) is None  # transformers' default: sdpa where the model has it
    assert attention_kernel("auto", "bf16", cuda) is None
    assert attention_kernel("sdpa", "bf16", cpu) == "sdpa" and attention_kernel("eager", "fp32", cuda) == "eager"
    with pytest.raises(ConfigError, match="--attention must be one of"):
        attention_kernel("flash", "fp32", cpu)


@pytest.mark.slow
def test_attention_choice_trains_alike_is_recorded_and_not_saved(models, tmp_path, monkeypatch):
    """The student's attention code is the one asked for (auto: eager under bf16 on CPU); eager and sdpa train
    to the same weights within rounding; the saved student does not carry the choice; a bad value is refused,
    and a model without the asked kernel is a clear error."""
    from vocabshrink.stages.distill import prepare

    loaded = []
    real_load = prepare.load_student

    def spy(*args, **kwargs):
        loaded.append(real_load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(prepare, "load_student", spy)
    kw = dict(mse_weight=1.0, max_steps=3, precision="fp32", checkpoint_minutes=0)
    runs = {a: _run(models, tmp_path / a, attention=a, **kw) for a in ("sdpa", "eager")}
    assert [m.config._attn_implementation for m in loaded] == ["sdpa", "eager"]
    assert runs["eager"].settings["attention"] == "eager" and runs["sdpa"].settings["attention"] == "sdpa"
    a, b = _params(tmp_path / "sdpa" / "final"), _params(tmp_path / "eager" / "final")
    start = _params(models["student"])
    assert any(k in start and not torch.equal(a[k], start[k]) for k in a)  # it trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    saved = json.loads((tmp_path / "eager" / "final" / "config.json").read_text())
    assert not any("attn" in key for key in saved)
    bf16 = _run(models, tmp_path / "bf16", mse_weight=1.0, max_steps=1, precision="bf16", checkpoint_minutes=0)
    assert bf16.settings["attention"] == "eager" and loaded[-1].config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match="--attention must be one of"):
        _run(models, tmp_path / "bad", attention="flash")
    assert len(loaded) == 3  # refused before the student loads

    def unsupported(self, kernel):
        raise ValueError(f"{type(self).__name__} does not support {kernel}")

    monkeypatch.setattr(type(loaded[0]), "set_attn_implementation", unsupported)
    with pytest.raises(ModelError, match="cannot run --attention eager"):
        _run(models, tmp_path / "unsupported", attention="eager", **kw)


@pytest.mark.slow
def test_checkpoints_can_be_switched_off(models, tmp_path):
    _run(models, tmp_path / "none", checkpoint_minutes=0, max_steps=2)
    assert not list((tmp_path / "none").glob("step-*")) and (tmp_path / "none" / "final").is_dir()


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(models, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = L.mlm_loss

    def poisoned(logits, labels, reduction="mean"):
        calls["n"] += 1
        value = real(logits, labels, reduction)
        return value * float("nan") if calls["n"] >= 3 else value

    monkeypatch.setattr(L, "mlm_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"step 2: the loss is nan .*step-2"):
        _run(models, out, checkpoint_every=2, max_steps=6)
    assert (out / "step-2" / "trainer_state.json").exists() and not (out / "final").exists()
    monkeypatch.setattr(L, "mlm_loss", real)
    report = _run(models, out, checkpoint_every=2, max_steps=4, resume=True)
    assert report.resumed_from_step == 2 and np.isfinite(report.final_loss)


def _one_batch(models, mode: str, student_dir=None, teacher_dir=None, shards=None):
    """A collated batch of 8 examples from the test shards, with the models in eval mode (no dropout)."""
    from vocabshrink.models import load_student, load_teacher
    from vocabshrink.tokenization import load_tokenizer

    teacher_dir, student_dir = teacher_dir or models["teacher"], student_dir or models["student"]
    t_tok, s_tok = load_tokenizer(teacher_dir), load_tokenizer(student_dir)
    ds, _, collate = T.open_data([shards or models["shards"]], t_tok, s_tok, mode=mode, mlm_probability=0.15,
                                 max_length=None, seed=0)
    batch = T.collate(collate, ds, np.arange(8), 0)
    student = load_student(student_dir, torch.device("cpu")).eval()
    teacher = load_teacher(teacher_dir, need_logits=False, dtype=torch.float32, device=torch.device("cpu"))
    return batch, student, teacher


def _setup(mode: str, **weights) -> "DL.LossSetup":
    w = {**dict(mlm=0.0, mse=0.0, cosine=0.0, kl=0.0, match=0.0, sentence=0.0, similarity=0.0), **weights}
    return DL.LossSetup(mode, [(2, 2)], w["mlm"], w["mse"], w["cosine"], w["kl"], w["match"], 2.0, False, None, None,
                       sentence_weight=w["sentence"], sentence_pair=(2, 2), similarity_weight=w["similarity"])


NO_AUTOCAST = torch.autocast("cpu", enabled=False)

@pytest.mark.slow

def test_mlm_head_on_masked_positions_equals_the_full_head(models, monkeypatch):
    """The head runs on the masked rows only; the loss (and its gradient) is the full-logits loss."""
    batch, student, teacher = _one_batch(models, "split")
    setup = _setup("split", mlm=1.0)
    fast = DL.loss_sums(student, None, teacher, batch, setup, NO_AUTOCAST)["mlm"]
    fast.backward()
    g_fast = student.bert.encoder.layer[0].attention.self.query.weight.grad.clone()
    student.zero_grad()
    monkeypatch.setattr(DL, "mlm_head", lambda model: None)  # falls back to the whole model's logits
    full = DL.loss_sums(student, None, teacher, batch, setup, NO_AUTOCAST)["mlm"]
    full.backward()
    g_full = student.bert.encoder.layer[0].attention.self.query.weight.grad
    assert int((batch["mlm_labels"] != -100).sum()) > 0
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_fast, g_full, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["split", "offsets"])
def test_a_student_equal_to_the_teacher_has_zero_hidden_and_sentence_losses(models, mode, lines, tmp_path):
    """Teacher as its own student (same vocabulary: the split is the identity, every chunk one token)."""
    shards = make_shards(tmp_path / "self", lines[:16], models["teacher"], models["teacher"])
    batch, student, teacher = _one_batch(models, mode, student_dir=models["teacher"], shards=shards)
    sums = DL.loss_sums(student, None, teacher, batch, _setup(mode, mse=1.0, cosine=1.0, sentence=1.0, similarity=1.0),
                        NO_AUTOCAST)
    counts = DL.row_counts(batch, _setup(mode, mse=1.0, sentence=1.0))
    assert set(sums) == {"mse", "cosine", "sentence", "similarity"} and float(counts[5]) == 8
    assert float(counts[6]) == 8 * 7  # ordered pairs of different sentences
    for name in sums:  # with the MLM loss off, offsets mode feeds the student unmasked text too
        assert abs(float(sums[name].detach())) < 1e-4, (mode, name, float(sums[name].detach()))
    # a different student is measurably away from the teacher
    batch, student, teacher = _one_batch(models, mode)
    proj = L.HiddenProjection(24, 32, [(2, 2)])
    sums = DL.loss_sums(student, proj, teacher, batch, _setup(mode, sentence=1.0, similarity=1.0), NO_AUTOCAST)
    assert 0.05 < float(sums["sentence"].detach()) / 8 < 2.0
    assert 1e-4 < float(sums["similarity"].detach()) / 56 < 4.0


def test_projection_fit_is_the_least_squares_solution(models):
    batch, student, teacher = _one_batch(models, "split")
    setup = _setup("split", mse=1.0)
    proj = L.HiddenProjection(24, 32, [(2, 2), (0, 0)])
    fit = DL.fit_projection(proj, student, teacher, [batch], setup, ridge=1e-3)
    assert set(fit) == {"s2_t2", "s0_t0"} and all(-1.0 <= v <= 1.0 for v in fit.values())
    # the same positions, gathered independently, solved by numpy's least squares
    with torch.no_grad():
        split = batch["split"]
        s_h = student.bert(input_ids=split.student_ids, attention_mask=split.student_mask.long(),
                           output_hidden_states=True).hidden_states[2]
        t_h = teacher.bert(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"],
                           output_hidden_states=True).hidden_states[2]
        keep = batch["teacher_attention_mask"].bool() & split.teacher_keep.bool()
        x = L.span_mean(s_h, split)[keep].double().numpy()
        y = t_h[keep].double().numpy()
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    # ridge regression by hand: LayerNorm outputs are nearly collinear with the bias column, so plain least squares
    # is ill-posed (huge weights); the bias is not penalised
    a = x1.T @ x1
    a[:-1, :-1] += 1e-3 * np.diag(a)[:-1].mean() * np.eye(x.shape[1])
    w = np.linalg.solve(a, x1.T @ y)
    assert np.abs(w).max() < 100
    got = proj.maps["s2_t2"]
    fitted = x @ got.weight.detach().double().numpy().T + got.bias.detach().double().numpy()
    np.testing.assert_allclose(fitted, x1 @ w, rtol=1e-3, atol=1e-3 * np.abs(y).max())
    # and it beats the random start it replaced on the hidden-state MSE
    fresh = L.HiddenProjection(24, 32, [(2, 2), (0, 0)])
    loss = lambda p: float(DL.loss_sums(student, p, teacher, batch, _setup("split", mse=1.0), NO_AUTOCAST)["mse"].detach())  # noqa: E731
    assert loss(proj) < 0.5 * loss(fresh)


@pytest.mark.slow
def test_sentence_loss_and_fitted_projection_in_a_run(models, tmp_path):
    out = tmp_path / "sentence"
    report = _run(models, out, mode="offsets", mlm_weight=0.0, mse_weight=0.0, sentence_weight=1.0,
                  layer_map="1:1", eval_data=[models["held_out"]], eval_batches=2)
    assert set(report.final_losses) == {"sentence"} and np.isfinite(report.final_losses["sentence"])
    assert set(report.projection_fit) == {"s1_t1", "s2_t2"}  # the sentence pair joins the layer map's
    assert "eval_sentence_cosine" in report.evaluation
    sim = _run(models, tmp_path / "similarity", mlm_weight=0.0, mse_weight=0.0, similarity_weight=1.0,
               eval_data=[models["held_out"]], eval_batches=2)
    assert set(sim.final_losses) == {"similarity"} and "s2_t2" in sim.projection_fit  # projected and raw spaces
    assert sim.evaluation["eval_similarity_mse"] >= 0
    desc = json.loads((out / "final" / "config.json").read_text())["vocabshrink_projection"]
    assert desc["embedding_key"] == "s2_t2"
    random_start = _run(models, tmp_path / "random", projection_init="random", max_steps=1)
    assert random_start.projection_fit is None
    with pytest.raises(ConfigError, match="projection-init"):
        _run(models, tmp_path / "bad", projection_init="pca")


# --- bad inputs ------------------------------------------------------------------------------------------------

@pytest.mark.slow

def test_bad_inputs(models, tmp_path):
    with pytest.raises(ModelError, match="init-student"):
        _run(models, tmp_path / "a", student=tmp_path / "no-such-student")
    with pytest.raises(ModelError, match="no MLM head"):
        _run(models, tmp_path / "b", teacher=models["bare"], kl_weight=1.0)
    with pytest.raises(ModelError, match="no MLM head"):
        _run(models, tmp_path / "b2", teacher=models["minilm"], match_weight=1.0)
    with pytest.raises(ConfigError, match="divisible"):
        _run(models, tmp_path / "c", batch_size=6, grad_accum=4)
    with pytest.raises(ConfigError, match="--mode"):
        _run(models, tmp_path / "d", mode="dense")
    with pytest.raises(ConfigError, match="at least one"):
        _run(models, tmp_path / "e", mlm_weight=0.0, mse_weight=0.0)
    with pytest.raises(ConfigError, match="layer-map"):
        _run(models, tmp_path / "f", layer_map="9:9")
    with pytest.raises(TrainingError, match="no checkpoint"):
        _run(models, tmp_path / "g", resume=True)
    with pytest.raises(ShardError):
        _run(models, tmp_path / "h", data=[tmp_path / "no-shards"])
    with pytest.raises(ShardError, match="fewer than one batch"):
        _run(models, tmp_path / "i", batch_size=4096)
    _run(models, tmp_path / "j", max_steps=1)
    with pytest.raises(ConfigError, match="earlier run"):
        _run(models, tmp_path / "j", max_steps=1)

@pytest.mark.slow

def test_shards_from_another_student_tokenizer_are_refused(models, tmp_path, wordpiece_student, data_dir):
    from conftest import train_student

    other = tmp_path / "other-student"
    tok = train_student("wordpiece", [str(data_dir / "en" / "wikitext2" / "valid.txt")], 500)
    tiny_bert(tok.get_vocab_size(), 24, 1, seed=4).save_pretrained(other)
    _own_copy(tok).save(str(other / "tokenizer.json"))
    with pytest.raises(ShardError):
        _run(models, tmp_path / "k", student=other)

@pytest.mark.slow

def test_corrupted_checkpoint_is_a_clear_error(models, tmp_path):
    out = tmp_path / "corrupt"
    _run(models, out, max_steps=2, checkpoint_every=2)
    shutil.rmtree(out / "final")
    (out / "step-2" / "optimizer.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TrainingError, match="cannot resume"):
        _run(models, out, max_steps=4, checkpoint_every=2, resume=True)


# --- two processes under torchrun (gloo) ---------------------------------------------------------------------------

WORKER = """
import json
from safetensors.torch import load_file

from vocabshrink.stages.distill import budget as B
from vocabshrink.stages.distill import loop as LOOP
from vocabshrink.stages.distill import objective as DL
from vocabshrink.stages import distill as T
T.distill(**json.loads({args!r}))
"""


@pytest.mark.slow
def test_two_gloo_processes_match_one(models, tmp_path):
    args = dict(teacher=str(models["teacher"]), student=str(models["student"]), data=[str(models["shards"])],
                batch_size=8, max_steps=3, lr=2e-3, warmup_steps=1, progress=False, seed=5,
                mse_weight=1.0, cosine_weight=0.5, precision="fp32")  # bf16 rounds the two sums differently
    one = tmp_path / "one"
    T.distill(**args, out=one, grad_accum=2)  # the same 2 x 4 split of each global batch, in one process
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(args=json.dumps({**args, "out": str(tmp_path / "two")})))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "two" / "training_report.json").read_text())
    assert report["world_size"] == 2 and report["examples_seen"] == 24
    a, b = _params(one / "final"), _params(tmp_path / "two" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_cli_runs_and_reports_errors(models, tmp_path):
    from click.testing import CliRunner

    from vocabshrink.cli import cli

    base = ["distill", "--teacher", str(models["teacher"]), "--data", str(models["shards"]), "--batch-size", "4",
            "--max-steps", "1", "--no-progress"]
    ok = CliRunner().invoke(cli, [*base, "--student", str(models["student"]), "--out", str(tmp_path / "run"),
                                  "--sentence-weight", "0.5", "--projection-init", "random"])
    assert ok.exit_code == 0, ok.output
    printed = json.loads(ok.output[ok.output.index("{"):])
    assert printed["steps"] == 1 and printed["settings"]["sentence_weight"] == 0.5
    assert "sentence" in printed["final_losses"] and printed["projection_fit"] is None
    # --no-progress silences transformers' "Loading weights" bars too
    from transformers.utils import logging as hf_logging

    assert "Loading weights" not in ok.output
    hf_logging.enable_progress_bar()
    bad = CliRunner().invoke(cli, [*base, "--student", str(tmp_path / "nope"), "--out", str(tmp_path / "run2")])
    assert bad.exit_code == 1 and "init-student" in bad.output and "Traceback" not in bad.output


# --- export: a sentence-transformers model in the teacher's space ----------------------------------------------


@pytest.fixture(scope="module")
def st_run(models, tmp_path_factory):
    """A 2-step run against a teacher that carries MiniLM's sentence-transformers modules (mean pooling, Normalize)."""
    root = tmp_path_factory.mktemp("st")
    teacher = root / "teacher"
    shutil.copytree(models["bare"], teacher)
    for name in ("modules.json", "sentence_bert_config.json", "README.md"):
        shutil.copy2(models["minilm"] / name, teacher / name)
    shutil.copytree(models["minilm"] / "1_Pooling", teacher / "1_Pooling")
    out = root / "run"
    report = _run(models, out, teacher=teacher, mlm_weight=0.0, mse_weight=1.0, sentence_weight=1.0, max_steps=2,
                  checkpoint_every=1)
    return teacher, out, report


def test_final_loads_as_a_sentence_transformer_with_the_embeddings_evaluate_scores(st_run, lines):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from vocabshrink.stages.evaluate import _load_projection, _project
    from vocabshrink.agreement import embed
    from vocabshrink.tokenization import load_tokenizer
    from transformers import AutoModel

    teacher, out, report = st_run
    final = out / "final"
    assert report.sentence_transformers == ["Transformer", "Pooling", "Dense", "Normalize"]
    modules = json.loads((final / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense", "3_Normalize"]
    texts = lines[:12]
    got = SentenceTransformer(str(final), device="cpu").encode(texts, convert_to_numpy=True)
    raw = embed(AutoModel.from_pretrained(final), load_tokenizer(final), texts, max_length=512)
    want = _project(raw, _load_projection(str(final)))
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert got.shape == (12, 32)  # the teacher's width
    np.testing.assert_allclose(got, want, atol=1e-5)
    card = (final / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers") and "license: apache-2.0" in card
    assert "vocabshrink distill --teacher" in card and "--sentence-weight 1.0" in card


def test_export_a_checkpoint_and_bad_requests(st_run, tmp_path):
    pytest.importorskip("sentence_transformers")
    from click.testing import CliRunner
    from sentence_transformers import SentenceTransformer

    from vocabshrink.cli import cli
    from vocabshrink.stages.export import export

    teacher, out, _ = st_run
    rep = export(out, tmp_path / "step1", checkpoint="step-1")
    assert rep.checkpoint == "step-1" and rep.modules[-2:] == ["Dense", "Normalize"]
    assert "model.safetensors" in rep.files and "2_Dense/model.safetensors" in rep.files
    e1 = SentenceTransformer(str(tmp_path / "step1"), device="cpu").encode(["a test sentence"])
    e2 = SentenceTransformer(str(out / "final"), device="cpu").encode(["a test sentence"])
    assert e1.shape == e2.shape and not np.allclose(e1, e2)  # one more step of training between them
    res = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "final-copy")])
    assert res.exit_code == 0 and "final" in res.output and "Dense" in res.output, res.output
    for args, message in ((["--checkpoint", "step-9"], "no checkpoint 'step-9' (have: step-1, step-2)"),
                          (["--checkpoint", "latest"], "no checkpoint 'latest'"),
                          ([], "exists; pass --overwrite")):
        res = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "final-copy"), *args])
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "no such run folder" in res.output


def test_export_without_the_projection_is_the_raw_mean_pooled_student(st_run, tmp_path):
    """--no-projection: no Dense module; the embedding is the student's own mean-pooled last layer (normalised
    like the teacher's), and the model card says it is not in the teacher's space."""
    pytest.importorskip("sentence_transformers")
    from click.testing import CliRunner
    from sentence_transformers import SentenceTransformer

    from transformers import AutoModel

    from vocabshrink.agreement import embed
    from vocabshrink.cli import cli
    from vocabshrink.tokenization import load_tokenizer

    _, out, _ = st_run
    res = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "raw"), "--no-projection"])
    assert res.exit_code == 0 and "Dense" not in res.output and "Pooling" in res.output, res.output
    assert not (tmp_path / "raw" / "2_Dense").exists()
    assert "not the teacher's space" in (tmp_path / "raw" / "README.md").read_text()
    texts = ["a test sentence", "another, longer test sentence for the pooling"]
    got = SentenceTransformer(str(tmp_path / "raw"), device="cpu").encode(texts)
    raw = embed(AutoModel.from_pretrained(str(tmp_path / "raw")), load_tokenizer(tmp_path / "raw"), texts)
    raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    assert got.shape == raw.shape and np.abs(got - raw).max() < 1e-4
