"""export: a distilled student as a sentence-transformers model in the teacher's space, with a model card.

`distill` calls `write_sentence_transformers` on its final folder; `vocabshrink export RUN --out DIR` does the
same for any checkpoint of a run. The folder stays a Hugging Face model (config.json, model.safetensors, the
tokenizer) and gains the sentence-transformers modules: the Transformer (the folder itself), the teacher's
pooling, the trained projection to the teacher's width as a `Dense` module, and the teacher's `Normalize` when it
has one. Files are written by hand (JSON and safetensors), so exporting needs no sentence-transformers install;
loading does: `SentenceTransformer(DIR)`.

Imports: errors, files, evaluate (the projection reader), tokenization; torch and transformers for checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..files import sha256_file, write_atomic, write_json_atomic

MEAN_POOLING = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from None


def teacher_modules(teacher: Path | None) -> tuple[dict[str, Any], bool, int | None]:
    """(pooling flags, normalises, max_seq_length) of a sentence-transformers teacher; mean pooling otherwise."""
    if teacher is None or not (teacher / "modules.json").is_file():
        return dict(MEAN_POOLING), False, None
    pooling, normalize = dict(MEAN_POOLING), False
    for module in _read_json(teacher / "modules.json"):
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            cfg_file = teacher / module.get("path", "") / "config.json"
            if cfg_file.is_file():
                pooling = {k: v for k, v in _read_json(cfg_file).items() if k != "word_embedding_dimension"}
        elif kind.endswith(".Normalize"):
            normalize = True
    max_len = None
    if (teacher / "sentence_bert_config.json").is_file():
        max_len = _read_json(teacher / "sentence_bert_config.json").get("max_seq_length")
    return pooling, normalize, max_len


PROMPT_CONFIG = "config_sentence_transformers.json"


def read_prompt(folder: str | os.PathLike) -> str:
    """The default prompt a sentence-transformers folder declares ("" when none)."""
    path = Path(folder) / PROMPT_CONFIG
    if not path.is_file():
        return ""
    config = _read_json(path)
    name = config.get("default_prompt_name")
    return str((config.get("prompts") or {}).get(name, "")) if name else ""


def write_sentence_transformers(folder: Path, teacher: Path | None, prompt: str = "",
                                project: bool = True) -> list[str]:
    """Add the sentence-transformers modules to a student folder; return the module types written.

    A `prompt` the student was trained with (align --prompt) becomes its default prompt, which
    `SentenceTransformer.encode` puts before every text. `project=False` leaves the projection out: the student's
    own mean-pooled space (better on Russian STS-B for a student trained with the sentence losses alone).
    """
    from .evaluate import _load_projection

    config = _read_json(folder / "config.json")
    width = int(config["hidden_size"])
    pooling, normalize, max_len = teacher_modules(teacher)
    max_len = min(int(max_len or 512), int(config.get("max_position_embeddings", 512)))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    write_json_atomic(folder / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False})
    write_json_atomic(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": width, **pooling})
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    projection = _load_projection(str(folder)) if project else None
    if projection is not None:
        weight, bias = projection
        if weight.shape[1] != width:
            raise ModelError(f"{folder}: the projection takes width {weight.shape[1]}, the student has {width}")
        from safetensors.numpy import save_file

        dense = folder / "2_Dense"
        dense.mkdir(parents=True, exist_ok=True)
        tensors = {"linear.weight": np.ascontiguousarray(weight)}
        if bias is not None:
            tensors["linear.bias"] = np.ascontiguousarray(bias)
        save_file(tensors, str(dense / "model.safetensors"))
        write_json_atomic(dense / "config.json", {"in_features": width, "out_features": int(weight.shape[0]),
                                                  "bias": bias is not None,
                                                  "activation_function": "torch.nn.modules.linear.Identity"})
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:
        n = len(modules)
        (folder / f"{n}_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": n, "name": str(n), "path": f"{n}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    write_atomic(folder / "modules.json", json.dumps(modules, indent=2) + "\n")
    if prompt:
        write_json_atomic(folder / PROMPT_CONFIG, {"prompts": {"query": prompt}, "default_prompt_name": "query"})
    return [m["type"].rsplit(".", 1)[-1] for m in modules]


def _front_matter(teacher: Path | None) -> dict[str, Any]:
    """language and license from the teacher's model card, when it has front matter."""
    card = teacher / "README.md" if teacher else None
    found: dict[str, Any] = {}
    if card is None or not card.is_file():
        return found
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return found
    key = None
    for line in text.split("---", 2)[1].splitlines():
        if line and not line.startswith((" ", "-")) and ":" in line:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("language", "license") and value:
                found[key] = value
        elif key == "language" and line.strip().startswith("- "):
            found.setdefault("language", []).append(line.strip()[2:])
    return found


def model_card(folder: Path, *, teacher: Path | None, base_model: str, command: str, training: dict | None,
               evaluation: dict | None, title: str | None = None, projected: bool = True) -> str:
    """A Hugging Face model card (README.md) for an exported student."""
    meta = _front_matter(teacher)
    lang = meta.get("language", "en")
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             f"base_model: {base_model}", f"license: {meta.get('license', 'apache-2.0')}"]
    lines += ["language:"] + [f"- {x}" for x in (lang if isinstance(lang, list) else [lang])]
    lines += ["tags:", "- sentence-transformers", "- feature-extraction", "- distillation", "- vocabshrink", "---", ""]
    config = _read_json(folder / "config.json")
    params = param_count(folder / "model.safetensors")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    title = title or folder.name
    lines += [f"# {title}: a distilled, reduced-vocabulary student of {base_model}", "",
              f"Made with [vocabshrink](https://pypi.org/project/vocabshrink/) from `{base_model}`: a "
              f"{config['num_hidden_layers']}-layer, {config['hidden_size']}-wide BERT with a "
              f"{config['vocab_size']:,}-token vocabulary. " + (
                  "Its embeddings live in the teacher's space (a `Dense` projection to the teacher's width follows "
                  "the pooling), so it can stand in for the teacher." if projected else
                  f"Its embeddings are its own mean-pooled states ({config['hidden_size']} wide, not the "
                  "teacher's space): compare them with each other, not with the teacher's."), "",
              "```python", "from sentence_transformers import SentenceTransformer", "",
              f'model = SentenceTransformer("{title}")',
              'embeddings = model.encode(["A man is playing a guitar.", "Someone plays music."])', "```", "",
              "## Size", "", "| | |", "|---|---|", f"| parameters (encoder) | {params:,} |",
              f"| files on disk | {size / 2**20:.1f} MiB |", ""]
    if training:
        lines += ["## Training", "", f"- steps: {training.get('steps')}, examples seen: "
                  f"{training.get('examples_seen')}, teacher tokens: {training.get('teacher_tokens_seen')}",
                  f"- wall time: {training.get('elapsed_s', 0) / 60:.1f} min on {training.get('device')}",
                  f"- final losses: {json.dumps(training.get('final_losses'))}", ""]
    lines += ["The command that made it:", "", "```", command, "```", ""]
    if evaluation:
        lines += ["## Evaluation", "", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in evaluation.items()]
        lines.append("")
    return "\n".join(lines)


def param_count(path: Path) -> int:
    """Parameters of the encoder in a model.safetensors (an MLM head's `cls.*` left out)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys() if not k.startswith("cls."))


def command_line(settings: dict[str, Any], teacher: str, student: str, data: list[str], out: str) -> str:
    """The `vocabshrink distill` command a training report's settings stand for."""
    parts = ["vocabshrink distill", f"--teacher {teacher}", f"--student {student}"]
    parts += [f"--data {d}" for d in data] + [f"--out {out}"]
    for key, value in settings.items():
        if key == "world_size" or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif key == "layer_map":
            parts.append(f"{flag} " + ",".join(f"{s}:{t}" for s, t in value))
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def finish_folder(folder: Path, teacher: Path | None, training: dict | None, title: str | None = None,
                  project: bool = True) -> list[str]:
    """sentence-transformers modules and the model card, for a folder `distill` or `export` wrote."""
    prompt = ((training or {}).get("settings") or {}).get("prompt", "")
    modules = write_sentence_transformers(folder, teacher, prompt, project=project)
    command = "(not recorded)"
    if training:
        command = command_line(training.get("settings", {}), training["teacher"], training["student"],
                               training["data"], training["out"])
    card = model_card(folder, teacher=teacher, base_model=str(teacher.name if teacher else "unknown"),
                      command=command, training=training, evaluation=(training or {}).get("evaluation"), title=title,
                      projected="Dense" in modules)
    write_atomic(folder / "README.md", card)
    return modules


@dataclass
class ExportReport:
    """What `export` wrote."""

    run: str
    checkpoint: str
    out: str
    modules: list[str]
    params: int
    files: dict[str, str]  # file -> sha256

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def export(run: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str | None = None,
           overwrite: bool = False, project: bool = True) -> ExportReport:
    """Write the student of a distill run (its final/ folder, or `checkpoint` like "step-500") to `out`; with
    `project=False` without the projection to the teacher's width."""
    from .distill.checkpoints import list_checkpoints

    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run folder (the --out of `vocabshrink distill`)")
    saved = dict(list_checkpoints(run))
    if checkpoint is None and not (run / "final").is_dir():
        if not saved:
            raise ConfigError(f"{run}: neither final/ nor any step-N/ checkpoint to export")
        checkpoint = f"step-{max(saved)}"
    if checkpoint is not None and (not checkpoint.startswith("step-") or not checkpoint[5:].isdigit()
                                   or int(checkpoint[5:]) not in saved):
        have = ", ".join(f"step-{s}" for s in sorted(saved)) or "none"
        raise ConfigError(f"{run}: no checkpoint {checkpoint!r} (have: {have})")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; pass --overwrite or choose another --out")
    report_file = run / "training_report.json"
    training = _read_json(report_file) if report_file.is_file() else _training_from_state(saved)
    if checkpoint is None:
        source, name = run / "final", "final"
    else:
        source, name = _checkpoint_folder(run, saved[int(checkpoint[5:])], training), checkpoint
    teacher = Path(training["teacher"]) if training else None
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("README.md", "modules.json", "*_Pooling", "*_Dense",
                                                                 "*_Normalize", "sentence_bert_config.json",
                                                                 PROMPT_CONFIG))
    if source.name.startswith(".tmp-"):
        shutil.rmtree(source, ignore_errors=True)
    modules = finish_folder(tmp, teacher if teacher and teacher.is_dir() else None, training, title=out.name,
                            project=project)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    files = {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    return ExportReport(str(run), name, str(out), modules, param_count(out / "model.safetensors"), files)


def _training_from_state(saved: dict[int, Path]) -> dict | None:
    """What a run's newest checkpoint records of its command, when the run has no training report yet."""
    if not saved:
        return None
    state = _read_json(saved[max(saved)] / "trainer_state.json")
    if "teacher" not in state:
        return None
    return {k: state.get(k) for k in ("teacher", "student", "data", "out", "settings")} | {"steps": state["step"]}


def _checkpoint_folder(run: Path, ckpt: Path, training: dict | None) -> Path:
    """A final/-like folder built from a step-N/ checkpoint and the run's student directory."""
    import torch
    from safetensors.torch import load_file, load_model

    from .. import losses as L
    from ..models import load_student

    student_dir = Path(training["student"]) if training and training.get("student") else None
    if student_dir is None or not student_dir.is_dir():
        raise ConfigError(f"{ckpt}: the run's student folder {student_dir} is gone; export needs its config and "
                          "tokenizer")
    model = load_student(student_dir, torch.device("cpu"))
    load_model(model, str(ckpt / "model.safetensors"), strict=False)
    projection = None
    if (ckpt / "projection.safetensors").is_file():
        tensors = load_file(str(ckpt / "projection.safetensors"))
        pairs = sorted({tuple(int(x) for x in k.split(".")[1][1:].split("_t")) for k in tensors})
        width_t, width_s = next(v.shape for v in tensors.values() if v.ndim == 2)
        projection = L.HiddenProjection(int(width_s), int(width_t), [tuple(p) for p in pairs])
        projection.load_state_dict(tensors)
    folder = run / f".tmp-export-{ckpt.name}"
    export_student(model, projection, student_dir, folder)
    return folder


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "added_tokens.json")


def export_student(student: Any, projection: Any, student_dir: Path, final: Path) -> str | None:
    """The student as a Hugging Face directory (+ projection.safetensors, described in config.json), atomically."""
    from safetensors.torch import save_file

    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    if projection is not None:
        student.config.vocabshrink_projection = _projection_entry(student, projection)
    student.save_pretrained(tmp, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        if (student_dir / name).exists():
            shutil.copy2(student_dir / name, tmp / name)
    proj_path = None
    if projection is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()},
                  str(tmp / "projection.safetensors"))
        proj_path = str(final / "projection.safetensors")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return proj_path


def _projection_entry(student: Any, projection: Any) -> dict[str, Any]:
    """How config.json describes projection.safetensors: widths, layer pairs, and which key gives embeddings."""
    s_layers = int(student.config.num_hidden_layers)
    # the student's last layer, paired with the deepest teacher layer it is trained against
    last = sorted(p for p in projection.layer_map if p[0] == s_layers)[-1:] or projection.layer_map[-1:]
    return {
        "file": "projection.safetensors",
        "in_features": projection.student_width,
        "out_features": projection.teacher_width,
        "layer_map": [list(p) for p in projection.layer_map],
        "keys": {projection.key(*p): list(p) for p in projection.layer_map},
        "embedding_key": projection.key(*last[0]),
        "usage": "teacher_space = hidden @ W[key].weight.T + W[key].bias, keys 'maps.<key>.weight'/'.bias'",
    }
