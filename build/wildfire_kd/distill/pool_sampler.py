"""Which images each training batch holds when an unlabelled pool teaches too (`train.unlabeled`).

An epoch is the labelled split once plus ``round(distill.unlabeled_ratio x labelled)`` pool frames. The pool is read
as one endless stream of permutations (pass p is a seeded permutation of the whole pool, epoch e takes the next
frames of the stream), so over the epochs every frame is seen as evenly as the budget allows. Each batch holds both
kinds in the epoch's proportion, labelled images first: the ground truth then sees a few labelled images in every
step, never a batch of frames it may not judge. Under DDP each rank takes every world-th image of each batch: its
own share of both pools, the same number of batches on every rank. Indices are a ``PooledDataset``'s: the labelled
images 0..L-1, then the pool's.
"""

from __future__ import annotations

import numpy as np
import torch

_POOL_STREAM = 1  # the pool's permutations draw from their own seeded streams, apart from the labelled order


class PoolSampler(torch.utils.data.Sampler):
    """The indices of one rank, one epoch at a time (``set_epoch``; each pass moves on to the next epoch)."""

    def __init__(
        self, labelled: int, pool: int, ratio: float, batch: int, seed: int = 0, rank: int = 0, world: int = 1
    ):
        """``batch``: images per batch on one rank (ultralytics' per-rank batch); ``ratio``: pool frames per
        labelled image in an epoch."""
        if labelled < 1 or pool < 1:
            raise ValueError(f"a pooled epoch needs labelled and unlabelled images (got {labelled} and {pool})")
        self.labelled, self.pool, self.batch, self.seed = labelled, pool, batch, seed
        self.rank, self.world = rank, world
        wanted = max(1, round(ratio * labelled))
        self.per_epoch = wanted + (-(labelled + wanted)) % world  # every rank gets as many images as the others
        self.epoch = 0

    def __len__(self) -> int:
        return (self.labelled + self.per_epoch) // self.world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = self.epoch_order(self.epoch)
        self.epoch += 1  # the loader iterates once per epoch; a DDP run also sets it at each epoch's start
        return iter(order[self.rank :: self.world])

    def pool_frames(self, epoch: int) -> np.ndarray:
        """The pool indices (0-based in the pool) epoch ``epoch`` draws, in order."""
        positions = np.arange(epoch * self.per_epoch, (epoch + 1) * self.per_epoch)
        passes = {p: np.random.default_rng([self.seed, _POOL_STREAM, p]).permutation(self.pool)
                  for p in np.unique(positions // self.pool)}  # fmt: skip
        return np.array([passes[k // self.pool][k % self.pool] for k in positions], dtype=np.int64)

    def batch_sizes(self) -> list[int]:
        """Images per global batch (all ranks together) in an epoch: full batches, then the rest."""
        total, size = self.labelled + self.per_epoch, self.batch * self.world
        full = total // size
        return [size] * full + ([total - full * size] if total % size else [])

    def epoch_order(self, epoch: int) -> list[int]:
        """Every index of the epoch, global batch after global batch, labelled images first within each."""
        labelled = np.random.default_rng([self.seed, epoch]).permutation(self.labelled)
        pool = self.pool_frames(epoch) + self.labelled
        sizes = self.batch_sizes()
        total = sum(sizes)
        cumulative = np.cumsum(sizes)
        labelled_cut = np.concatenate([[0], (cumulative * self.labelled + total // 2) // total])  # proportional
        pool_cut = np.concatenate([[0], cumulative]) - labelled_cut
        order: list[int] = []
        for j in range(len(sizes)):
            order += labelled[labelled_cut[j] : labelled_cut[j + 1]].tolist()
            order += pool[pool_cut[j] : pool_cut[j + 1]].tolist()
        return order

    def distinct_frames_seen(self, epochs: int) -> int:
        """How many different pool frames ``epochs`` epochs draw."""
        return min(self.pool, self.per_epoch * epochs)
