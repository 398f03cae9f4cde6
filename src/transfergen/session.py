"""What every training command does around the loop: device, ranks, threads, run folder,
and the tokenizer and initial model.

Pretraining and fine-tuning share this so that both refuse to overwrite a finished run,
hold the run folder's lock while they write it, clean what a killed run left, record
their resolved config (refusing a resume that would change the trajectory) and behave
identically under torchrun; a fine-tuning run's tokenizer and initial weights come about
exactly as a pretraining run's do.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import TEMPORARIES, checkpoint_step, latest_checkpoint
from .config import RunConfig
from .distributed import DistInfo, barrier, init_distributed, pick_device, shutdown
from .errors import UserError
from .folders import FolderLock, ensure_out_dir, remove_stale
from .resume import record_resume, record_start
from .hub import build_like, load_model
from .model import build_model, resolve_shape
from .precision import emulated_warning, resolve_dtype
from .tokenizer import TextTokenizer, backend_file


@dataclass
class Session:
    cfg: RunConfig
    info: DistInfo
    device: torch.device
    run_dir: Path

    @property
    def last_checkpoint(self) -> Path | None:
        """The checkpoint to resume from (None for a fresh run)."""
        return latest_checkpoint(self.run_dir) if self.cfg.resume else None


def check_run_dir(cfg: RunConfig) -> Path:
    """Refuse to overwrite a run that already has checkpoints unless resuming."""
    run_dir = Path(cfg.out)
    last = latest_checkpoint(run_dir)
    if last is not None and not cfg.resume:
        raise UserError(f"already holds a run (last checkpoint {last.name}); pass --resume to continue "
                        "it or choose another --out", path=str(run_dir))
    if cfg.resume and last is None:
        raise UserError("--resume given but the run has no checkpoint to resume from", path=str(run_dir))
    return run_dir


def _set_threads(cfg: RunConfig, info: DistInfo, device: torch.device) -> None:
    threads = cfg.train.threads
    if threads is None and info.enabled and device.type == "cpu":
        # Each rank gets its share of the cores; oversubscription makes gloo crawl.
        threads = max(1, (os.cpu_count() or 1) // info.world_size)
    if threads:
        torch.set_num_threads(threads)


def _resolve_dtype(name: str, device: torch.device) -> str:
    """`train.dtype` for this device (auto -> bf16 or fp32); warn once when bf16 is emulated."""
    warning = emulated_warning(name, device)
    if warning is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"[transfergen] warning: {warning}", file=sys.stderr, flush=True)
    return resolve_dtype(name, device)


@contextlib.contextmanager
def _run_folder(cfg: RunConfig, info: DistInfo) -> Iterator[Path]:
    """Rank 0 owns the run folder for the whole run: writable, locked, cleaned of what a killed
    run left, its config recorded (a resume's drift refused). Other ranks only read it."""
    if not info.is_main:
        yield check_run_dir(cfg)
        return
    run_dir = ensure_out_dir(cfg.out)
    with FolderLock(run_dir, "run"):
        stale = remove_stale(run_dir, TEMPORARIES)
        if stale:
            print(f"[transfergen] removed what a killed run left: {', '.join(stale)}", file=sys.stderr, flush=True)
        check_run_dir(cfg)
        last = latest_checkpoint(run_dir) if cfg.resume else None
        if last is None:
            record_start(cfg, run_dir)
        else:
            record_resume(cfg, run_dir, checkpoint_step(last))
        yield run_dir


@contextlib.contextmanager
def session(cfg: RunConfig) -> Iterator[Session]:
    """Join the ranks, check, lock and record the run folder; release it on any exit."""
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    cfg.train.dtype = _resolve_dtype(cfg.train.dtype, device)  # before any work; recorded resolved
    info = init_distributed(device)
    try:
        _set_threads(cfg, info, device)
        with _run_folder(cfg, info) as run_dir:
            barrier(info)
            yield Session(cfg, info, device, run_dir)
    finally:
        shutdown(info)


# ---------------------------------------------------------------------------
# what pretraining and fine-tuning both set up before the loop


def resolve_tokenizer(cfg: RunConfig, run_dir: Path, info: DistInfo,
                      docs: Callable[[], Iterator[str]] | None = None) -> TextTokenizer:
    """The run's tokenizer: a given folder, the init (or `model.like`) model's, or a new BPE
    trained on `docs()` (saved in the run, reused on resume). Rank 0 trains, the others wait."""
    own = run_dir / "tokenizer"
    borrowed = cfg.tokenizer.path or (cfg.init if cfg.init != "scratch" else cfg.model.like)
    if borrowed:  # a given tokenizer, the pretrained model's, or the one of the model copied
        return TextTokenizer.load(borrowed)
    if info.is_main and not backend_file(own).is_file():
        if docs is None:
            raise UserError("no tokenizer: set tokenizer.path, or give text to train one on")
        tc = cfg.tokenizer
        tok = TextTokenizer.train(itertools.islice(docs(), tc.max_train_docs), tc.vocab_size,
                                  tc.min_frequency, jieba=tc.jieba)
        tmp = run_dir / "tokenizer.tmp"  # a kill leaves only this; TEMPORARIES matches it
        tok.save(tmp)
        os.replace(tmp, own)
    barrier(info)
    return TextTokenizer.load(own)


def build_initial_model(cfg: RunConfig, tok: TextTokenizer) -> torch.nn.Module:
    """Random weights from the preset (`init: scratch`) or a pretrained local checkpoint, read
    in its own dtype with no second copy (`hub.load_model`); `model.like` copies that dtype too.

    bf16 weights stay bf16 when the run trains in bf16 (half the memory, as large models need);
    any other pairing trains fp32 weights, so that an fp32 run keeps full-precision updates
    and fp16's loss scaler sees fp32 gradients. The scratch arm follows the same rule."""
    torch.manual_seed(cfg.train.seed)  # identical replicas on every rank
    if cfg.init == "scratch" and cfg.model.like:
        model = build_like(cfg.model.like, seed=cfg.train.seed)
    elif cfg.init == "scratch":
        shape = resolve_shape(cfg.model, tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id)
        model = build_model(shape, seed=cfg.train.seed)
    else:
        model = load_model(cfg.init, dtype=None)
    if {p.dtype for p in model.parameters()} != {torch.bfloat16} or cfg.train.dtype != "bf16":
        return model.float()  # a no-op for fp32 weights
    if int(os.environ.get("RANK", "0")) == 0:
        print("[transfergen] weights kept in bf16, the checkpoint's dtype (train.dtype=bf16)", flush=True)
    return model


def extend_vocab(cfg: RunConfig, tok: TextTokenizer, model: torch.nn.Module,
                 s: Session) -> tuple[TextTokenizer, torch.nn.Module]:
    """Grow tokenizer and embeddings per `vocab.*` (fine-tuning and continued pretraining alike);
    the report goes to vocab_report.json. Deterministic, so a resume grows them identically."""
    from .data.readers import iter_documents
    from .vocab import extend_vocabulary

    if cfg.vocab.add <= 0:
        return tok, model
    docs = list(iter_documents(cfg.vocab.extend_from, cfg.data.format, cfg.data.text_field, cfg.data.doc_sep))
    tok, model, report = extend_vocabulary(tok, model, docs, cfg.vocab.add)
    if s.info.is_main:
        (s.run_dir / "vocab_report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return tok, model


def check_length(model: torch.nn.Module, length: int, key: str) -> None:
    """Sequences longer than the model's positions would fail mid-run: refuse them now."""
    max_len = getattr(model, "max_seq_len", None)
    if max_len is not None and length > max_len:
        raise UserError(f"config key '{key}' asks for sequences of {length} tokens, more than the "
                        f"model's max_seq_len {max_len}")
