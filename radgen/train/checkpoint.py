"""Training checkpoints: everything needed to continue a run to exactly the same losses.

`RUN/checkpoints/step-N/` holds

* ``trainable.safetensors`` — every parameter trained in any stage so far, plus buffers (frozen base
  weights are rebuilt from the recipe, so a LoRA checkpoint of a 7B model stays a few MB);
* ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` (fp16 loss scale), ``rng.pt`` (python, numpy,
  torch CPU and CUDA generator states, one entry per process);
* ``trainer_state.json`` — stage, step, data position (epoch + step in epoch), best metric, counts.

Each checkpoint is written into a temporary folder renamed into place (radgen.io.atomic_dir), so a
run killed mid-save leaves the previous checkpoint intact and never a half one.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from radgen.errors import WeightsError
from radgen.io import atomic_dir

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    global_step: int = 0  # optimizer steps done (skipped non-finite steps included)
    stage_index: int = 0
    stage_step: int = 0  # optimizer steps done inside the current stage
    epoch: int = 0  # data position inside the current stage
    step_in_epoch: int = 0
    samples_seen: int = 0
    skipped_steps: int = 0  # steps dropped for a non-finite loss or gradient
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    stopped_early: bool = False
    window_loss: float = 0.0  # running sum/count of losses since the last log row (so logged means resume exactly)
    window_steps: int = 0
    trained_names: list[str] = field(default_factory=list)  # parameters trained in any stage so far

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Tensors to save: the trained parameters and all persistent buffers (BatchNorm statistics...)."""
    wanted = set(names)
    params = {n for n, _ in model.named_parameters()}
    out = {}
    for name, tensor in model.state_dict().items():
        if name in wanted or name not in params:
            # clone: safetensors refuses tensors that share storage (tied embeddings)
            out[name] = tensor.detach().to("cpu").clone().contiguous()
    return out


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    rng_states: list[dict[str, Any]],
    keep: int,
) -> Path:
    path = Path(run_dir) / "checkpoints" / f"step-{state.global_step}"
    with atomic_dir(path) as tmp:
        save_file(model_state, str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        torch.save(rng_states, tmp / "rng.pt")
        # the state file goes last: a folder with it is complete (atomic_dir also guarantees that)
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")
    prune_checkpoints(run_dir, keep)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def load_state(path: Path) -> TrainerState:
    try:
        return TrainerState.from_json(json.loads((Path(path) / STATE_FILE).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise WeightsError(f"{path}: unreadable checkpoint ({err}); delete it to resume from the previous one") from None


def load_model_state(model: torch.nn.Module, path: Path, hint: str = "resume with the recipe that wrote it") -> int:
    """Load a checkpoint's (or saved model's) weights into `model`; returns how many tensors were loaded.

    `path` is a checkpoint folder (trainable.safetensors: what its stage trained) or a
    `save_pretrained` folder (model.safetensors: all weights, or those not from base checkpoints).
    Every tensor must exist in the model with the same shape; weights the file lacks keep their values.
    """
    path = Path(path)
    files = [path / "trainable.safetensors", path / "model.safetensors"]
    found = next((f for f in files if f.is_file()), None)
    if found is None:
        raise WeightsError(f"{path}: no trainable.safetensors or model.safetensors; pass a checkpoint folder (RUN/checkpoints/step-N) or a saved model (RUN/best)")
    if found.name == "model.safetensors":
        from radgen.models.persist import saved_weights

        tensors = saved_weights(path)  # LoRA of a saved model lives in its peft adapter/ folder
    else:
        tensors = load_file(str(found))
    own = model.state_dict()
    unknown = [k for k in tensors if k not in own]
    if unknown:
        raise WeightsError(f"{found}: has weights the model lacks (e.g. '{unknown[0]}'); {hint}")
    for name, tensor in tensors.items():
        if own[name].shape != tensor.shape:
            raise WeightsError(f"{found}: '{name}' has shape {tuple(tensor.shape)}, the model {tuple(own[name].shape)}; {hint}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
    return len(tensors)


def load_torch(path: Path) -> Any:
    # weights_only=False: optimizer/RNG states hold numpy arrays and python tuples; these files are
    # written by this module in the user's own run directory.
    return torch.load(path, map_location="cpu", weights_only=False)
