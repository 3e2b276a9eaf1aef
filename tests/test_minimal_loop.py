"""The minimal hand-written loop that `cnnbench bench` measures cnnbench against: the same network, the
same augmentation, a real training step."""

from __future__ import annotations

import pytest
import torch

from cnnbench.commands.minimal_loop import CifarNet, MinimalLoop
from cnnbench.models.registry import build_model


def images(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return x, torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.parametrize(("model", "depth"), [("resnet", 20), ("plain", 20), ("resnet", 56)])
def test_the_same_network_as_cnnbench(model: str, depth: int) -> None:
    ours = sum(p.numel() for p in CifarNet(depth, residual=model == "resnet").parameters())
    theirs = sum(p.numel() for p in build_model(model, depth, 10).parameters())
    assert ours == theirs  # 0.27M for ResNet-20, as in the paper's Table 6


def test_each_image_is_a_padded_crop_flipped_or_not() -> None:
    x, y = images(32)
    loop = MinimalLoop(x, y, model="resnet", depth=8, batch_size=32, precision="fp32", channels_last=True)
    batch, labels = loop.batch()
    assert batch.is_contiguous(memory_format=torch.channels_last)
    raw = batch * loop.std + loop.mean  # back to [0, 1]
    padded = torch.nn.functional.pad(x, (4,) * 4).float() / 255
    offsets_seen, flips_seen = set(), set()
    for i, index in enumerate(loop.order[:32].tolist()):
        assert labels[i] == y[index]
        found = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.allclose(
                raw[i],
                (lambda c: c.flip(-1) if flip else c)(padded[index, :, dy : dy + 32, dx : dx + 32]),
                atol=1e-5,
            )
        ]
        assert found, f"image {i} is no crop of its padded original"
        offsets_seen.add(found[0][:2])
        flips_seen.add(found[0][2])
    assert len(offsets_seen) > 5 and flips_seen == {False, True}  # random crops and flips, not one


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_step_trains(precision: str) -> None:
    torch.manual_seed(0)
    x, y = images(64)
    loop = MinimalLoop(x, y, model="plain", depth=8, batch_size=16, precision=precision, channels_last=False)
    before = [p.detach().clone() for p in loop.net.parameters()]
    for _ in range(5):  # more than one epoch of 64 images: the permutation is drawn again
        loop.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, loop.net.parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in loop.net.parameters())
