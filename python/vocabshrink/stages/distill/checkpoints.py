"""distill's checkpoints: `step-N/` folders of safetensors and JSON, written atomically, never unpickled."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from ...errors import ModelError, TrainingError

STATE_VERSION = 1


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = []
    for p in out.glob("step-*"):
        if p.is_dir() and p.name[5:].isdigit() and (p / "trainer_state.json").exists():
            found.append((int(p.name[5:]), p))
    return sorted(found)


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as safetensors tensors plus JSON, so that loading never unpickles."""
    sd = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for pid, extra in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    groups = meta["param_groups"]
    for g, current in zip(groups, optimizer.param_groups):
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        # the kernel is this run's --adamw, not the saved run's: the state is the same in all of them
        for key in ("fused", "foreach"):
            g[key] = current.get(key)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(out: Path, step: int, student: torch.nn.Module, projection: torch.nn.Module | None,
                    optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any], keep: int) -> Path:
    """Write `step-N/` into a temporary folder, rename it into place, then drop all but the last `keep`."""
    final = out / f"step-{step}"
    tmp = out / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(student, str(tmp / "model.safetensors"))
    if projection is not None:
        save_file({k: v.contiguous() for k, v in projection.state_dict().items()}, str(tmp / "projection.safetensors"))
    tensors, meta = _optimizer_to_files(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / "rng.safetensors"))
    np_state = np.random.get_state()
    py_state = random.getstate()
    full = dict(state, version=STATE_VERSION, step=step, optimizer=meta, scheduler=sched,
                rng={"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                     "python": [py_state[0], list(py_state[1]), py_state[2]]})
    # trainer_state.json last: its presence marks a complete checkpoint
    (tmp / "trainer_state.json").write_text(json.dumps(full, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def saved_settings(path: Path) -> dict[str, Any]:
    """The settings a checkpoint was written with ({} when its state cannot be read: loading then says why)."""
    try:
        return dict(json.loads((path / "trainer_state.json").read_text())["settings"])
    except (OSError, KeyError, ValueError, TypeError):
        return {}


def load_checkpoint(path: Path, student: torch.nn.Module, projection: torch.nn.Module | None,
                    optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device) -> dict[str, Any]:
    """Restore model, projection, optimizer, scheduler and RNG states; returns the trainer state."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        missing, unexpected = load_model(student, str(path / "model.safetensors"), strict=False, device=str(device))
        if unexpected or [k for k in missing if "decoder.weight" not in k]:
            raise ModelError(f"{path}/model.safetensors does not fit the student (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        if projection is not None:
            projection.load_state_dict(load_file(str(path / "projection.safetensors"), device=str(device)))
        _optimizer_from_files(optimizer, load_file(str(path / "optimizer.safetensors"), device=str(device)),
                              state["optimizer"])
        scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
        rng = load_file(str(path / "rng.safetensors"))
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as exc:
        raise TrainingError(f"{path}: cannot resume from this checkpoint ({exc}); delete it to resume from an "
                            "earlier one") from exc
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    np_state = state["rng"]["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    return state
