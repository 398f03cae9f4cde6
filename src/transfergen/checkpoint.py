"""Atomic checkpoints: a Hugging Face model folder plus the exact training state.

Layout of a run folder:

    RUN/config.json, model.safetensors, tokenizer.json, ...   latest weights (HF loadable)
    RUN/checkpoints/step-0000200/                             complete checkpoint
        config.json model.safetensors generation_config.json tokenizer.json ...
        training_state.pt    optimizer moments + RNG states, CUDA's too (tensors only)
        training_weights.safetensors   the un-exported training weights, when the saved
                             model differs from the trained one (LoRA adapters merged)
        adapter/             LoRA runs: the adapters alone, in PEFT format (copied to RUN/adapter/)
        trainer_state.json   step, tokens seen, data position, wall time

A checkpoint is written into `checkpoints/.tmp-*` and renamed into place only when
complete, so a kill at any moment leaves the previous one intact; the top-level
copies are replaced file by file with `os.replace` (each file is old or new, never
half-written). A full disk removes the partial folder at once and stops with one line;
what a kill leaves (`TEMPORARIES`) is removed at the next start. Loading never unpickles
arbitrary objects: `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError, write_problem

STATE_FILE = "trainer_state.json"
TENSOR_STATE_FILE = "training_state.pt"
TRAINING_WEIGHTS_FILE = "training_weights.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# Files that make up the HF-loadable model; everything else stays in checkpoints/.
_EXPORT_SKIP = {STATE_FILE, TENSOR_STATE_FILE, TRAINING_WEIGHTS_FILE}
# What a killed writer can leave in a run folder, relative to it: partial checkpoints, the
# tokenizer being saved, and the hidden `.NAME.tmp` of RUN/best, the exported model files and
# every atomic write (io.write_text_atomic). Only names of our own: --out may be a folder of
# the user's, whose files must never match.
TEMPORARIES = ("checkpoints/.tmp-step-*", "tokenizer.tmp", ".*.tmp")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_step(ckpt: Path) -> int:
    """The step a checkpoint folder (`step-0000200`) holds."""
    m = _STEP_DIR.match(ckpt.name)
    if m is None:
        raise ValueError(f"not a checkpoint folder: {ckpt}")
    return int(m.group(1))


def _write_error(why: str, what: str, run_dir: Path) -> UserError:
    """One line for a write that failed (disk full, quota, permissions), saying what is intact."""
    last = latest_checkpoint(run_dir)
    kept = f"the last complete checkpoint, {last.name}, is intact" if last else "no checkpoint was complete yet"
    return UserError(f"could not write {what}: {why}; {kept}: free space, then continue with --resume",
                     path=str(run_dir))


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, tokenizer: Any,
                    optimizer_state: dict, state: dict, keep: int = 2,
                    export: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                    extra: Callable[[torch.nn.Module, Path], None] | None = None) -> Path:
    """Write checkpoint `step` atomically, refresh the top-level model, prune old ones.

    With `export`, the HF folder holds `export(model)` (e.g. LoRA merged) and the raw
    training weights go to training_weights.safetensors so a resume continues exactly;
    `extra(model, folder)` writes further files (LoRA's adapter/). `optimizer_state` is the
    optimizer's state dict (FSDP2's consolidated one, keyed by parameter name).
    """
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_model(tmp, model, export, extra)
        _write_training_state(tmp, model, tokenizer, optimizer_state, state, export is not None)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors report a full disk as their own errors
        why = write_problem(exc, root)
        shutil.rmtree(tmp, ignore_errors=True)  # give the space back now; the previous checkpoint is untouched
        raise _write_error(why, f"checkpoint {final.name}", run_dir) from None
    _commit(tmp, final, run_dir)
    _prune(root, keep)
    return final


def _write_model(folder: Path, model: torch.nn.Module, export: Callable[[torch.nn.Module], torch.nn.Module] | None,
                 extra: Callable[[torch.nn.Module, Path], None] | None) -> None:
    """The model part of a checkpoint or best/: the exported model and the strategy's own files."""
    from .hub import save_model

    save_model(export(model) if export is not None else model, folder)
    if extra is not None:
        extra(model, folder)


def _commit(tmp: Path, final: Path, run_dir: Path) -> None:
    """Rename a complete checkpoint into place, then refresh the run folder's model files from it."""
    if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    try:
        export_model_files(final, run_dir)
    except OSError as exc:
        raise _write_error(write_problem(exc, run_dir), f"the model files of {final.name} into the run folder",
                           run_dir) from None


def _write_training_state(tmp: Path, model: torch.nn.Module, tokenizer: Any, optimizer_state: dict,
                          state: dict, raw_weights: bool) -> None:
    """Everything of a checkpoint but the model: tokenizer, optimizer + RNG, trainer state; fsynced."""
    if raw_weights:
        state_dict = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(_untie(state_dict), str(tmp / TRAINING_WEIGHTS_FILE))
    tokenizer.save(tmp)
    tensors = {"optimizer": optimizer_state, "torch_rng": torch.get_rng_state(),
               "python_rng": list(random.getstate()[1]), **_cuda_rng()}
    torch.save(tensors, tmp / TENSOR_STATE_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def save_best(run_dir: str | Path, model: torch.nn.Module, tokenizer: Any,
              export: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
              extra: Callable[[torch.nn.Module, Path], None] | None = None) -> Path:
    """Replace RUN/best/ (an HF model folder) with `model`, never leaving no best behind."""
    run_dir = Path(run_dir)
    best, tmp, old = run_dir / "best", run_dir / ".best.tmp", run_dir / ".best.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_model(tmp, model, export, extra)
        tokenizer.save(tmp)
    except Exception as exc:  # noqa: BLE001 - as in save_checkpoint
        why = write_problem(exc, run_dir)
        shutil.rmtree(tmp, ignore_errors=True)  # the previous best stays as it was
        raise _write_error(why, "the best model (best/)", run_dir) from None
    if best.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(best, old)  # a kill here leaves .best.old, which recover_best() restores
    os.replace(tmp, best)
    shutil.rmtree(old, ignore_errors=True)
    return best


def recover_best(run_dir: str | Path) -> None:
    """Undo a best-model swap that a kill interrupted (or drop its leftover once it completed)."""
    run_dir = Path(run_dir)
    if not (run_dir / "best").exists() and (run_dir / ".best.old").exists():
        os.replace(run_dir / ".best.old", run_dir / "best")
    shutil.rmtree(run_dir / ".best.old", ignore_errors=True)


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop repeated storages (tied weights): safetensors refuses shared tensors."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            out[k] = v
    return out


def load_training_weights(ckpt: Path, model: torch.nn.Module) -> bool:
    """Load training_weights.safetensors into `model` if the checkpoint has it."""
    path = ckpt / TRAINING_WEIGHTS_FILE
    if not path.is_file():
        return False
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - torn or corrupt file
        raise UserError(f"cannot read training weights: {exc}", path=str(path)) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not _is_tied_copy(model, k) for k in missing):
        raise UserError(f"training weights do not fit the model (missing {missing[:2]}, unexpected "
                        f"{unexpected[:2]})", path=str(path))
    return True


def _is_tied_copy(model: torch.nn.Module, name: str) -> bool:
    """True when parameter `name` shares storage with another parameter (left out on save)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    return p is not None and any(q is p for k, q in params.items() if k != name)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link `src` to `dst` (no extra disk), copying where links are impossible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_model_files(ckpt: Path, run_dir: Path) -> None:
    """Make RUN/ itself an HF model folder: hard-link (or copy) each file, swap atomically;
    a folder (adapter/) is built beside its old copy and swapped in with two renames."""
    for src in sorted(ckpt.iterdir()):
        if src.name in _EXPORT_SKIP:
            continue
        tmp = run_dir / f".{src.name}.tmp"
        if src.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, copy_function=_link_or_copy)
            old = run_dir / f".{src.name}.old.tmp"  # a TEMPORARIES name: a kill leaves nothing lasting
            shutil.rmtree(old, ignore_errors=True)
            if (run_dir / src.name).exists():
                os.replace(run_dir / src.name, old)
            os.replace(tmp, run_dir / src.name)
            shutil.rmtree(old, ignore_errors=True)
        elif src.is_file():
            tmp.unlink(missing_ok=True)
            _link_or_copy(src, tmp)
            os.replace(tmp, run_dir / src.name)


def _prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root.parent)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a writer killed mid-save
        shutil.rmtree(stale, ignore_errors=True)


def load_training_state(ckpt: Path) -> tuple[dict, dict]:
    """(json state, tensor state) of a checkpoint; errors name the file."""
    try:
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read training state: {exc}", path=str(ckpt / STATE_FILE)) from None
    try:
        tensors = torch.load(ckpt / TENSOR_STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a corrupt file
        raise UserError(f"cannot read optimizer state: {exc}", path=str(ckpt / TENSOR_STATE_FILE)) from None
    return state, tensors


def _cuda_rng() -> dict:
    """The current CUDA device's RNG state (dropout, sampling on the GPU), when CUDA is in use."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"cuda_rng": torch.cuda.get_rng_state()}


def restore_rng(tensors: dict) -> None:
    """Put torch's, CUDA's and Python's RNGs back where the checkpoint left them."""
    torch.set_rng_state(tensors["torch_rng"])
    random.setstate((3, tuple(int(x) for x in tensors["python_rng"]), None))
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda_rng"])
