"""Batch-level mixing: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), on the device, no host sync.

``BatchMix(...)(x, labels) -> (x_mixed, targets_a, targets_b, lam)`` on a normalized, augmented batch:

- ``x_mixed = w * x + (1 - w) * x[perm]`` (``torch.lerp``): mixup's w is ``lam`` everywhere; CutMix's w
  is 0 in one box (the same box for the whole batch, as in the paper) and 1 elsewhere;
- ``targets_a = labels``, ``targets_b = labels[perm]``; ``lam`` is a 0-dim float32 device tensor, the share
  of ``targets_a`` (CutMix: the exact share of pixels left outside the clipped box). The loss is
  ``lam * CE(logits, a) + (1 - lam) * CE(logits, b)`` (``mixed_cross_entropy``).
- Training error under mixing counts a prediction wrong when it differs from the dominant label, ``a`` if
  ``lam >= 0.5`` else ``b`` (``dominant_targets``).

One batch is mixed with probability ``prob`` (else lam = 1 and x is returned bit-exactly); with both on, a
mixed batch uses CutMix with probability ``switch_prob``, else mixup. lam ~ Beta(alpha, alpha) for the
chosen method. Every call makes the same draws from the generator, in this order, whatever their values:
apply (1 uniform), switch (1 uniform, only when both are on), mixup's Beta, CutMix's Beta, CutMix's box
centre (cy, cx), then the permutation (``randperm``). Nothing is read back to the host, so the branches
are chosen with ``torch.where``: a mixed batch costs one blend pass and one gather, whichever method.

Beta sampling: Beta(a, b) = Ga / (Ga + Gb) with Gamma variates from Marsaglia and Tsang's method
(2000): normals and uniforms from the generator, 16 candidates at once, the first accepted one kept. Each
candidate is accepted with probability >= 0.95 (shape >= 2/3, after the alpha < 1 boost G(a) = G(a + 1) *
U^(1/a)), so all 16 fail with probability < 1e-20; then the mode d = shape - 1/3 stands in. Computed in
log space (lam = sigmoid(log Ga - log Gb)) so small alphas cannot make 0/0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

GAMMA_TRIES = 16


def sample_log_gamma(
    alpha: float, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """log of Gamma(alpha, 1) variates (float32), drawn only from ``generator`` (fixed number of draws)."""
    boost = alpha < 1.0
    d = (alpha + 1.0 if boost else alpha) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn((GAMMA_TRIES, *shape), device=device, generator=generator)
    u = 1.0 - torch.rand((GAMMA_TRIES, *shape), device=device, generator=generator)  # (0, 1]
    v = (1.0 + c * z) ** 3
    log_v = v.clamp(min=1e-30).log()
    ok = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * log_v)
    first = ok.to(torch.uint8).argmax(0, keepdim=True)  # the first accepted candidate (0 if none)
    log_g = math.log(d) + log_v.gather(0, first).squeeze(0)
    log_g = torch.where(ok.any(0), log_g, torch.full_like(log_g, math.log(d)))
    if boost:
        u_boost = 1.0 - torch.rand(shape, device=device, generator=generator)
        log_g = log_g + u_boost.log() / alpha
    return log_g


def sample_beta(
    a: float, b: float, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """Beta(a, b) variates (float32) from ``generator`` only."""
    return torch.sigmoid(
        sample_log_gamma(a, shape, generator, device) - sample_log_gamma(b, shape, generator, device)
    )


class BatchMix:
    """Mixup/CutMix of whole batches; ``enabled`` is False when both alphas are 0 (then skip the call)."""

    def __init__(
        self,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        prob: float = 1.0,
        switch_prob: float | None = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.prob = float(prob)
        self.switch_prob = None if switch_prob is None else float(switch_prob)
        if self.mixup > 0 and self.cutmix > 0 and self.switch_prob is None:
            raise ValueError("mixup and cutmix are both on: give switch_prob")
        self.generator = generator

    @classmethod
    def from_config(cls, cfg_augment: Mapping[str, Any], generator: torch.Generator) -> BatchMix:
        """From the ``augment`` section's ``mixup``, ``cutmix``, ``mix_prob``, ``mix_switch_prob`` (missing
        keys: off / 1.0 / 0.5)."""
        return cls(
            mixup=float(cfg_augment.get("mixup", 0.0) or 0.0),
            cutmix=float(cfg_augment.get("cutmix", 0.0) or 0.0),
            prob=float(cfg_augment.get("mix_prob", 1.0)),
            switch_prob=cfg_augment.get("mix_switch_prob", 0.5),
            generator=generator,
        )

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C, H, W) float batch and (N,) labels -> (x_mixed, targets_a, targets_b, lam)."""
        g, dev = self.generator, x.device
        n, _, h, w = x.shape
        one = torch.ones((), device=dev)
        if not self.enabled:
            return x, labels, labels, one
        apply = torch.rand((), device=dev, generator=g) < self.prob
        if self.mixup > 0 and self.cutmix > 0:
            use_cutmix = torch.rand((), device=dev, generator=g) < self.switch_prob
        else:
            use_cutmix = torch.full((), self.cutmix > 0, device=dev)
        weight = one.view(1, 1, 1, 1)
        lam = one
        if self.mixup > 0:
            lam = sample_beta(self.mixup, self.mixup, (), g, dev)
            weight = lam.view(1, 1, 1, 1)
        if self.cutmix > 0:
            lam_box = sample_beta(self.cutmix, self.cutmix, (), g, dev)
            keep, lam_cut = _cutmix_keep(lam_box, h, w, g, dev)
            weight = torch.where(use_cutmix, keep, weight)
            lam = torch.where(use_cutmix, lam_cut, lam)
        perm = torch.randperm(n, device=dev, generator=g)
        lam = torch.where(apply, lam, one)
        weight = torch.where(apply, weight, one).to(x.dtype)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else None
        # lerp is exact at weight 0 and 1 (CutMix's map, an unmixed batch): one pass besides the gather.
        mixed = torch.lerp(x[perm], x, weight)
        if fmt is not None:
            mixed = mixed.contiguous(memory_format=fmt)
        return mixed, labels, labels[perm], lam


def _cutmix_keep(
    lam: torch.Tensor, h: int, w: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix's box as in the paper's code: sides floor(H * sqrt(1 - lam)) and floor(W * sqrt(1 - lam)),
    centre (cy, cx) uniform over the pixels (cy drawn first), clipped at the borders. Returns the (1, 1, H, W)
    float keep map (0 in the box) and the exact share of pixels kept, lam's adjusted value."""
    cut = (1.0 - lam).clamp(min=0.0).sqrt()
    half_h = torch.floor(torch.floor(h * cut) / 2)
    half_w = torch.floor(torch.floor(w * cut) / 2)
    cy = torch.randint(0, h, (), device=device, generator=generator)
    cx = torch.randint(0, w, (), device=device, generator=generator)
    y0, y1 = (cy - half_h).clamp(0, h), (cy + half_h).clamp(0, h)
    x0, x1 = (cx - half_w).clamp(0, w), (cx + half_w).clamp(0, w)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    box = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    keep = (~box).float().view(1, 1, h, w)
    return keep, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def mix_batch(
    x: torch.Tensor, labels: torch.Tensor, cfg_augment: Mapping[str, Any], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-call form of ``BatchMix.from_config(cfg_augment, generator)(x, labels)`` (build a ``BatchMix``
    once per run in the training loop instead: this re-reads the config every call)."""
    return BatchMix.from_config(cfg_augment, generator)(x, labels)


def mixed_cross_entropy(
    logits: torch.Tensor,
    targets_a: torch.Tensor,
    targets_b: torch.Tensor,
    lam: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """lam * CE(logits, a) + (1 - lam) * CE(logits, b), in fp32 (equals CE(logits, a) when lam = 1)."""
    logits = logits.float()
    a = F.cross_entropy(logits, targets_a, label_smoothing=label_smoothing)
    b = F.cross_entropy(logits, targets_b, label_smoothing=label_smoothing)
    return lam * a + (1.0 - lam) * b


def dominant_targets(targets_a: torch.Tensor, targets_b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The label training error is measured against under mixing: ``a`` where lam >= 0.5, else ``b``."""
    return torch.where(lam >= 0.5, targets_a, targets_b)


def soft_targets(
    targets_a: torch.Tensor, targets_b: torch.Tensor, lam: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """The (N, num_classes) mixed one-hot targets lam * onehot(a) + (1 - lam) * onehot(b)."""
    a = F.one_hot(targets_a, num_classes).float()
    b = F.one_hot(targets_b, num_classes).float()
    return lam * a + (1.0 - lam) * b
