"""Training checkpoints: everything needed to continue a run to exactly the same losses.

`RUN/checkpoints/step-N/` holds

* ``trainable.safetensors`` — every parameter trained in any stage so far, plus buffers (frozen base
  weights are rebuilt from the recipe, so a LoRA checkpoint of a 7B model stays a few MB);
* ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` (fp16 loss scale), ``rng.pt`` (python, numpy,
  torch CPU and CUDA generator states, one entry per process);
* ``trainer_state.json`` — stage, step, data position (epoch + step in epoch), best metric, counts.

Each checkpoint is written into a temporary folder renamed into place (radgen.io.atomic_dir), so a
run killed mid-save leaves the previous checkpoint intact and never a half one; the orphaned
temporary folder is removed on the next resume (`remove_orphans`).

Loading never runs code from a checkpoint: the ``.pt`` files are read with
``torch.load(weights_only=True)`` (tensors and plain containers only), weights come from
safetensors and the state from JSON. `resumable_checkpoint` checks the newest checkpoint's files
before a resume and falls back, saying so, to the newest one that reads back.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from radgen.errors import WeightsError
from radgen.io import atomic_dir

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng.pt")  # scaler.pt only exists for fp16 runs
_STEP_DIR = re.compile(r"^step-(\d+)$")
# What atomic_dir leaves behind when killed: ".step-N.<random>.tmp" (being written) and ".step-N.old"
# (the previous copy of a folder being replaced).
_ORPHAN = re.compile(r"^\.step-\d+\.(.+\.tmp|old)$")


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
    def from_json(cls, data: Any) -> TrainerState:
        """Build from the parsed JSON; TypeError naming the first field of the wrong type."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name, value in values.items():
            if not _field_ok(cls.__dataclass_fields__[name].type, value):
                raise TypeError(f"field '{name}' has {type(value).__name__} value {str(value)[:40]!r}")
        return cls(**values)


def _field_ok(annotation: Any, value: Any) -> bool:
    # Annotations are strings (from __future__ import annotations); the dataclass above uses five.
    if value is None:
        return "None" in str(annotation)
    if isinstance(value, bool):
        return str(annotation).startswith("bool")
    if str(annotation).startswith("int"):
        return isinstance(value, int)
    if str(annotation).startswith("float"):
        return isinstance(value, (int, float))
    if str(annotation).startswith("list"):
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return False


def capture_rng() -> dict[str, Any]:
    # numpy's key array is stored as a tensor: weights_only loading needs no numpy globals then.
    kind, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, key, *rest = state["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else key  # older checkpoints kept the ndarray
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
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
    file = Path(path) / STATE_FILE
    try:
        return TrainerState.from_json(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        raise WeightsError(f"{file}: unreadable trainer state ({_one_line(err)}); delete {Path(path).name} to resume from the previous checkpoint") from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200] + ("..." if len(text) > 200 else "")


def check_safetensors(file: Path) -> None:
    """Read a safetensors header (and that the file covers every tensor it lists); WeightsError if not.

    Cheap: nothing but the header is read, so it can run before a model is built.
    """
    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{file}: unreadable safetensors file ({_one_line(err)}); the file is truncated or corrupt, "
                           "copy or save it again") from None


def check_checkpoint(path: Path) -> TrainerState:
    """Everything a resume reads, checked without loading tensors into memory; WeightsError naming the file."""
    path = Path(path)
    state = load_state(path)
    weights = path / "trainable.safetensors"
    if not weights.is_file():
        raise WeightsError(f"{weights}: missing; delete {path.name} to resume from the previous checkpoint")
    check_safetensors(weights)
    for name in TORCH_FILES + (("scaler.pt",) if (path / "scaler.pt").exists() else ()):
        load_torch(path / name, mmap=True)  # mmap: the archive and pickle are checked, tensors not read
    return state


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that reads back, or None when the run has none.

    A newer checkpoint that fails the check is named in a one-line warning and skipped (it stays on
    disk for inspection); WeightsError when checkpoints exist and none reads back.
    """
    checkpoints = list_checkpoints(run_dir)
    problems = []
    for path in reversed(checkpoints):
        try:
            check_checkpoint(path)
        except WeightsError as err:
            problems.append(str(err))
            continue
        for problem in problems:
            log.warning("checkpoint skipped: %s", problem)
        if problems:
            log.warning("falling back to %s (the newest checkpoint that reads back)", path)
        return path
    if problems:
        raise WeightsError(f"{Path(run_dir) / 'checkpoints'}: no checkpoint reads back ({len(problems)} tried; newest: {problems[0]})")
    return None


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete what a killed save left behind (".step-N.*.tmp", ".step-N.old"); returns what went.

    Only call it when no process of this run is saving (e.g. at the start of a resume).
    """
    root = Path(run_dir) / "checkpoints"
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if _ORPHAN.match(child.name):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                removed.append(child)
    return removed


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
    check_safetensors(found)
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


# Older checkpoints stored numpy's RNG key as an ndarray; these data-only constructors rebuild it.
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed the module
_NUMPY_ARRAY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _NUMPY_CORE.multiarray._reconstruct]


def load_torch(path: Path, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: tensors and plain containers, never code from the file.

    A checkpoint copied from elsewhere can carry a pickle payload; weights_only refuses it, and any
    unreadable file is a one-line WeightsError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: missing; delete {path.parent.name} to resume from the previous checkpoint")
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        reason = "holds objects other than tensors and plain data (refused: loading it could run code)" \
            if "Weights only load failed" in str(err) else f"unreadable ({_one_line(err)})"
        raise WeightsError(f"{path}: {reason}; delete {path.parent.name} to resume from the previous checkpoint") from None
