"""Hugging Face format: save any of our models as an HF folder, load any local one back.

`save_model` writes `config.json` (a `LlamaConfig`), `model.safetensors` and
`generation_config.json`; `AutoModelForCausalLM.from_pretrained` loads the result.
`load_model` takes any local causal-LM folder: a Llama checkpoint that
`TransferGenLM` reproduces exactly gets the fast own implementation, anything else is
wrapped in `HFCausalLM`. Kept apart from `model.py` (the architecture) so each reads
in one sitting.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UserError
from .io import refuse_custom_code
from .model import HFCausalLM, ModelShape, TransferGenLM, build_model, unwrap


def hf_config(shape: ModelShape) -> Any:
    """The `transformers.LlamaConfig` describing `shape` (tied, bias-free, plain RoPE)."""
    from transformers import LlamaConfig

    fields = set(inspect.signature(LlamaConfig).parameters) | set(getattr(LlamaConfig, "__annotations__", {}))
    if "rope_parameters" in fields:  # transformers >= 5
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": float(shape.rope_theta)}}
    else:
        rope = {"rope_theta": float(shape.rope_theta)}
    return LlamaConfig(
        architectures=["LlamaForCausalLM"], vocab_size=shape.vocab_size, hidden_size=shape.d_model,
        intermediate_size=shape.d_ff, num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head, num_key_value_heads=shape.n_kv_head,
        head_dim=shape.head_dim, hidden_act="silu", max_position_embeddings=shape.max_seq_len,
        initializer_range=shape.init_std, rms_norm_eps=shape.norm_eps, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, bos_token_id=shape.bos_token_id,
        eos_token_id=shape.eos_token_id, pad_token_id=shape.pad_token_id, **rope,
    )


def save_model(model: nn.Module, out_dir: str | Path) -> None:
    """Write `model` to `out_dir` in Hugging Face format (config, safetensors, generation config)."""
    from transformers import GenerationConfig

    model, out = unwrap(model), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, TransferGenLM):
        from safetensors.torch import save_file

        s = model.shape
        hf_config(s).save_pretrained(str(out))
        # lm_head.weight *is* embed_tokens.weight; safetensors refuses shared storage and
        # HF re-ties it from tie_word_embeddings, so it is left out.
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        GenerationConfig(bos_token_id=s.bos_token_id, eos_token_id=s.eos_token_id,
                         pad_token_id=s.pad_token_id).save_pretrained(str(out))
    elif isinstance(model, HFCausalLM):
        hf = model.hf
        # transformers 5 always writes safetensors and dropped the flag
        safe = "safe_serialization" in inspect.signature(hf.save_pretrained).parameters
        hf.save_pretrained(str(out), **({"safe_serialization": True} if safe else {}))
        if not (out / "generation_config.json").is_file():
            GenerationConfig.from_model_config(hf.config).save_pretrained(str(out))
    else:
        raise TypeError(f"save_model: cannot save {type(model).__name__}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable {path.name}: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"{path.name} must hold a JSON object", path=str(path))
    return data


def _llama_shape(c: dict) -> ModelShape | None:
    """The ModelShape of a Llama config.json that TransferGenLM reproduces exactly, else None."""
    if c.get("model_type") != "llama" or not c.get("tie_word_embeddings", False):
        return None
    if c.get("hidden_act", "silu") != "silu" or c.get("attention_bias") or c.get("mlp_bias"):
        return None
    if c.get("attention_dropout") or isinstance(c.get("eos_token_id"), list):
        return None
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default" or set(rope) - {"rope_type", "rope_theta"}:
        return None
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        return None
    try:
        d, h = int(c["hidden_size"]), int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or h)
        if d % h or h % kv or (d // h) % 2 or int(c.get("head_dim") or d // h) != d // h:
            return None
        return ModelShape(
            vocab_size=int(c["vocab_size"]), n_layer=int(c["num_hidden_layers"]), d_model=d,
            n_head=h, n_kv_head=kv, d_ff=int(c["intermediate_size"]),
            max_seq_len=int(c.get("max_position_embeddings", 2048)),
            rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
            norm_eps=float(c.get("rms_norm_eps", 1e-6)), init_std=float(c.get("initializer_range", 0.02)),
            bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"),
            pad_token_id=c.get("pad_token_id"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None  # unusual config: let transformers judge it


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor] | None:
    """All tensors of `model.safetensors` or its sharded index; None when neither exists."""
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "model.safetensors.index.json").is_file():
        index = _read_json(folder / "model.safetensors.index.json")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserError("model.safetensors.index.json has no weight_map", path=str(folder))
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        return None
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as exc:  # noqa: BLE001 - missing shard, truncated or corrupt file
            raise UserError(f"cannot read weights: {_first_line(exc)}", path=str(f)) from None
    return state


def _load_fast(folder: Path, shape: ModelShape, state: dict[str, torch.Tensor],
               dtype: torch.dtype | None) -> TransferGenLM:
    """TransferGenLM holding `state`'s tensors (cast to `dtype` one by one), names and shapes checked."""
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    state.pop("lm_head.weight", None)  # tied: the embedding is the head
    with torch.device("meta"):
        expected = set(TransferGenLM(shape).state_dict()) - {"lm_head.weight"}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing:
        raise UserError(f"checkpoint is missing tensor '{missing[0]}' ({len(missing)} missing)",
                        path=str(folder))
    if unexpected:
        raise UserError(f"checkpoint has unexpected tensor '{unexpected[0]}'", path=str(folder))
    for k, v in state.items():  # one tensor at a time: never two copies of the whole model
        if dtype is not None and v.is_floating_point():
            state[k] = v.to(dtype)
    try:
        return TransferGenLM.from_state_dict(shape, state)
    except RuntimeError as exc:  # shape mismatch between config.json and the tensors
        raise UserError(f"weights do not match config.json: {str(exc).splitlines()[-1].strip()}",
                        path=str(folder)) from None


def _hf_load_args(dtype: torch.dtype | None) -> dict[str, Any]:
    """from_pretrained's arguments for `dtype` (None: the checkpoint's own) with low CPU memory,
    across transformers 4 (`torch_dtype`, low_cpu_mem_usage needs accelerate) and 5 (`dtype`)."""
    import importlib.util

    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    args: dict[str, Any] = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype or "auto"}
    if major < 5 and importlib.util.find_spec("accelerate") is not None:
        args["low_cpu_mem_usage"] = True  # transformers 5 always loads this way
    return args


def load_model(path: str | Path, *, dtype: torch.dtype | None = torch.float32,
               device: torch.device | str | None = None) -> nn.Module:
    """Load a saved model folder: TransferGenLM for compatible Llama checkpoints, else HFCausalLM.

    The result is in eval mode, in `dtype` (None: each tensor's dtype in the checkpoint, as
    `--init` loads it) and on `device` (None: the CPU). The weights are read once, into the
    model itself: no randomly initialised copy is built first.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError("model folder not found", path=str(folder))
    if not (folder / "config.json").is_file():
        raise UserError("no config.json in model folder", path=str(folder))
    refuse_custom_code(folder)
    shape = _llama_shape(_read_json(folder / "config.json"))
    state = _read_safetensors(folder) if shape is not None else None
    if shape is not None and state is not None:
        model: nn.Module = _load_fast(folder, shape, state, dtype)
    else:
        from transformers import AutoModelForCausalLM

        try:
            hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                      **_hf_load_args(dtype))
        except Exception as exc:  # noqa: BLE001 - unknown architecture, missing/corrupt weights, ...
            raise UserError(f"cannot load model: {_first_line(exc)}", path=str(folder)) from None
        model = HFCausalLM(hf)
    return (model.to(device) if device is not None else model).eval()


_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def weights_dtype(folder: str | Path) -> torch.dtype | None:
    """The floating dtype most of a folder's safetensors weights are stored in, read from the
    file's header alone; None without safetensors weights."""
    folder = Path(folder)
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        return None
    try:
        with open(files[0], "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read weights: {exc}", path=str(files[0])) from None
    counts: dict[torch.dtype, int] = {}
    for key, info in header.items():
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype")) if key != "__metadata__" else None
        if dtype is not None:
            counts[dtype] = counts.get(dtype, 0) + 1
    return max(counts, key=counts.get) if counts else None


def build_like(path: str | Path, seed: int | None = None) -> nn.Module:
    """Random weights in the architecture of the model folder at `path` (scratch baselines),
    in the dtype its weights are stored in, as `--init` loads them.

    The transfer arm and its scratch baseline then differ only in the initial weights.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise UserError("model.like: no config.json in model folder", path=str(folder))
    refuse_custom_code(folder)
    dtype = weights_dtype(folder) or torch.float32
    shape = _llama_shape(_read_json(folder / "config.json"))
    if shape is not None:
        return build_model(shape, seed=seed).to(dtype)
    from transformers import AutoConfig, AutoModelForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        return HFCausalLM(AutoModelForCausalLM.from_config(config, trust_remote_code=False).to(dtype))
    except Exception as exc:  # noqa: BLE001 - unknown architecture, bad config
        raise UserError(f"model.like: cannot build the architecture: {_first_line(exc)}",
                        path=str(folder)) from None

