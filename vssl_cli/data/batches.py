"""Which items each training step reads, as a pure function of (seed, epoch, rank).

The batch sampler yields lists of ``(epoch, item)`` keys, so persistent DataLoader
workers need no epoch broadcast, and a resumed run can start in the middle of an epoch
(``start(epoch, skip)``) and read exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

import numpy as np


class EpochBatches:
    def __init__(self, num_items: int, global_batch: int, seed: int, rank: int = 0,
                 world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by {world} processes")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.global_batch     # drop the last partial batch

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        order = np.random.default_rng([self.seed, epoch, 7]).permutation(self.num_items)
        local = self.global_batch // self.world
        out = []
        for s in range(self.steps_per_epoch):
            step_items = order[s * self.global_batch:(s + 1) * self.global_batch]
            mine = step_items[self.rank * local:(self.rank + 1) * local]
            out.append([(epoch, int(i)) for i in mine])
        return out

    def __iter__(self):
        return iter(self.batches(self.epoch)[self.skip:])

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip
