"""Seeded, resumable sampling over a token cache: which blocks (or examples) each step reads.

Split from packing.py, which builds the cache: this module only reads it. Every rank walks
the same seeded permutation and takes its own slice of each global batch, and the position
is part of the checkpoint, so a resumed run reads exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class IndexSampler:
    """Seeded, resumable order over `n_items` items (blocks, examples), shared by ranks.

    Each epoch visits every item once in a permutation seeded by `seed + epoch`. All
    ranks walk the same global order; per step the global batch is
    batch_size * world_size consecutive items and rank r takes the r-th slice, so the
    ranks' slices are disjoint and their union is the single-process batch.
    """

    def __init__(self, n_items: int, seed: int, rank: int = 0, world_size: int = 1, *,
                 unit: str = "items", hint: str = "(did the data change?)"):
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} outside world size {world_size}")
        if n_items < 1:
            raise UserError(f"nothing to sample from: 0 {unit}")
        self.n_items, self.seed = n_items, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)
        self._unit, self._hint = unit, hint  # only for the load_state_dict error message

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:  # cache: one permutation serves many batches
            self._perm = np.random.default_rng(self.seed + epoch).permutation(self.n_items)
            self._perm_epoch = epoch
        return self._perm

    def next_indices(self, batch_size: int) -> np.ndarray:
        """This rank's `batch_size` item indices; advances the global position."""
        need, taken = batch_size * self.world_size, []
        while need > 0:  # a global batch may straddle one or more epoch boundaries
            perm = self._permutation(self.epoch)
            take = min(need, self.n_items - self.pos)
            taken.append(perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
            if self.pos == self.n_items:
                self.epoch, self.pos = self.epoch + 1, 0
        global_batch = np.concatenate(taken)
        return global_batch[self.rank * batch_size:(self.rank + 1) * batch_size].copy()

    @property
    def epoch_float(self) -> float:
        """Epochs completed so far, fractional (e.g. 1.25)."""
        return self.epoch + self.pos / self.n_items

    def state_dict(self) -> dict[str, int]:
        """Position to checkpoint; with the same seed it resumes the identical order."""
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position from `state_dict()`."""
        epoch, pos = int(state["epoch"]), int(state["pos"])
        if epoch < 0 or not 0 <= pos < self.n_items:
            raise UserError(f"sampler state {state} does not fit {self.n_items} {self._unit} "
                            f"{self._hint}")
        self.epoch, self.pos = epoch, pos


class BlockSampler(IndexSampler):
    """`IndexSampler` over the non-overlapping blocks of a token stream.

    Block j covers tokens [j*T, j*T + T + 1): T inputs plus the one extra token the
    shifted targets need.
    """

    def __init__(self, n_tokens: int, block_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if block_size < 1:
            raise UserError(f"block size must be positive, got {block_size}")
        n_blocks = (n_tokens - 1) // block_size
        if n_blocks < 1:
            raise UserError(f"training split has {n_tokens} tokens, fewer than one block of "
                            f"{block_size + 1}; use more data or a smaller train.seq_len")
        super().__init__(n_blocks, seed, rank, world_size, unit="blocks",
                         hint="(did the training data or train.seq_len change?)")
        self.block_size = block_size

    @property
    def n_blocks(self) -> int:
        """Number of whole blocks in the stream (= `n_items`)."""
        return self.n_items


def get_batch(tokens: np.ndarray, indices: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather blocks `indices`: x (B, T) int64 and y (B, T) = x shifted left by one."""
    import torch

    # (B, 1) + (T+1,) -> (B, T+1) token positions; fancy indexing reads only those pages.
    pos = np.asarray(indices, dtype=np.int64)[:, None] * block_size + np.arange(block_size + 1)
    chunk = torch.from_numpy(np.asarray(tokens[pos], dtype=np.int64))
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def val_batches(tokens: np.ndarray, block_size: int, batch_size: int,
                max_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first blocks of val, in order: the same batches at every evaluation."""
    n_blocks = (len(tokens) - 1) // block_size
    if n_blocks < 1:
        raise UserError(f"validation split has {len(tokens)} tokens, fewer than one block of "
                        f"{block_size + 1}; raise data.val_fraction or lower train.seq_len")
    blocks = np.arange(min(n_blocks, batch_size * max_batches))
    return [get_batch(tokens, blocks[i:i + batch_size], block_size)
            for i in range(0, len(blocks), batch_size)]
