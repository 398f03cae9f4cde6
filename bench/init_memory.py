"""Peak CPU memory of loading a pretrained bf16 model the way `--init` does, against the way it
did before (an fp32 model with random weights, then the checkpoint's tensors copied in).

    python bench/init_memory.py                 # a ~180M-parameter Llama-shaped model, bf16
    python bench/init_memory.py --layers 4      # smaller and faster

Each way runs in a fresh process; the number is its peak RSS (ru_maxrss) less its RSS just
before loading (torch and transformers already imported), next to the size of the weights.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WAYS = {
    "before: fp32 model, random init, tensors copied in": """
from safetensors.torch import load_file
from transfergen.model import TransferGenLM
from transfergen.shape import ModelShape
model = TransferGenLM(ModelShape(**shape))
model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
""",
    "now: load_model(dtype=None), the --init path": """
from transfergen.hub import load_model
model = load_model(folder, dtype=None)
""",
    "now: load_model() in fp32, the evaluate path": """
from transfergen.hub import load_model
model = load_model(folder)
""",
    "transformers: from_pretrained(dtype='auto')": """
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
""",
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(folder: Path, shape: dict, code: str) -> float:
    """Peak RSS growth (MB) of running `code` in a fresh process."""
    script = f"""
import resource, sys
from pathlib import Path
import torch, transformers, transfergen.hub
sys.path.insert(0, {str(Path(__file__).parent)!r})
from init_memory import rss_mb
folder, shape = Path({str(folder)!r}), {shape!r}
base = rss_mb()
{code}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    import torch

    from transfergen.hub import save_model
    from transfergen.model import build_model
    from transfergen.shape import ModelShape

    dims = {"vocab_size": 32000, "n_layer": args.layers, "d_model": args.width, "n_head": 16, "n_kv_head": 16,
            "d_ff": int(args.width * 2.75), "max_seq_len": 2048}
    shape = ModelShape(**dims)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model = build_model(shape, seed=0).to(torch.bfloat16)
        params = model.num_params()
        save_model(model, folder)
        del model
        size = (folder / "model.safetensors").stat().st_size / 2**20
        print(f"model: {params / 1e6:.0f}M parameters, bf16 weights {size:.0f} MB; "
              f"torch {torch.__version__}; ru_maxrss of this process {resource.getrusage(0).ru_maxrss / 1024:.0f} MB")
        print("| way | peak RSS growth (MB) | x weights |\n|---|---:|---:|")
        for name, code in WAYS.items():
            grown = measure(folder, dims, code)
            print(f"| {name} | {grown:,.0f} | {grown / size:.2f} |", flush=True)


if __name__ == "__main__":
    main()
