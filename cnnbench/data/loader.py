"""Shuffled mini-batches from a dataset resident on the training device.

Each epoch is a fresh permutation drawn from a CPU generator (cheap, and its state is a small tensor
that a checkpoint can hold); incomplete last batches are dropped so every step has the same shape.
"""

from __future__ import annotations

import torch


class DeviceBatches:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """``batch_size`` is the global batch; ``shard=(rank, world_size)`` takes this rank's slice of it.

        Every rank draws the same order (same seed), so the ranks' slices together are exactly the
        batch a single process would train on.
        """
        rank, world_size = shard
        if batch_size % world_size:
            from cnnbench.errors import CnnbenchError

            raise CnnbenchError(
                f"trainer.batch_size={batch_size} does not split evenly over {world_size} processes; "
                f"choose a batch size divisible by {world_size} (the global batch stays trainer.batch_size)."
            )
        local = batch_size // world_size
        self.slice = (rank * local, (rank + 1) * local)
        if batch_size > len(images):
            from cnnbench.errors import CnnbenchError

            raise CnnbenchError(
                f"trainer.batch_size={batch_size} is larger than the {len(images)} training images; "
                f"set trainer.batch_size to at most {len(images)}."
            )
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0
        self.epoch = 0

    def _new_epoch(self) -> None:
        perm = torch.randperm(len(self.images), generator=self.generator)
        self.order = perm.to(self.images.device, non_blocking=True)
        self.position = 0
        self.epoch += 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + self.batch_size > len(self.order):
            self._new_epoch()
        idx = self.order[self.position + self.slice[0] : self.position + self.slice[1]]
        self.position += self.batch_size
        return self.images[idx], self.labels[idx]

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "order": self.order.cpu(),
            "position": self.position,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].to(self.images.device)
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])
