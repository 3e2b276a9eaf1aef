"""Batched, on-device augmentation: normalize, zero-pad, random crop and flip in a few tensor ops, plus
the optional ops of the ``augment`` config group (``policies.py`` holds their kernels).

The crop and the flip are one gather: every output pixel reads ``padded[n, :, dy + i, dx +/- j]``.
Indexing with the channel slice between the advanced indices yields an (N, H, W, C) tensor, so the
permuted result is already channels-last in memory, the layout the convolutions want.

With only ``padding`` and ``flip`` set (``augment=standard`` / ``none``), ``BatchAugment`` runs the
original code path: the same random draws in the same order and bit-identical output. With any other op on,
a batch goes through, in this order:

1. uint8 -> float in [0, 1];
2. geometry: the random-resized crop (``scale``, ``ratio``) with the flip folded in, or else the padded
   crop + flip gather, the padding filled with the normalization's mean color (so it is ~0 once normalized,
   as in the default path) and the same draws as the default path;
3. color, in [0, 1]: the RandAugment policy, then color jitter (brightness, contrast, saturation), then PCA
   lighting;
4. normalize with the training set's mean/std (after the geometry, as torchvision pipelines do, so a
   per-pixel mean is subtracted at the output position; the default path subtracts it before the crop, at
   the source position, the paper's order; CIFAR's mean image is smooth, so the two barely differ);
5. cutout: a square set to 0 in normalized space, i.e. to the mean (DeVries & Taylor's setting).

Every random parameter is per image and drawn from the run's ``generator``, op by op in the order above.
Mixup/CutMix act on (images, labels) pairs after this: ``cnnbench.data.mixing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cnnbench.data import policies
from cnnbench.errors import CnnbenchError

NORMALIZATIONS = ("pixel_mean", "channel")


def normalization_stats(train_images: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (broadcastable to (N, 3, H, W), in [0, 1] units) from the uint8 training images.

    ``pixel_mean``: the paper's per-pixel mean subtraction (std 1). ``channel``: per-channel mean/std.
    """
    # Sum in chunks: a float copy of all 50k CIFAR images would cost 600 MB.
    total = torch.zeros(train_images.shape[1:], dtype=torch.float64, device=train_images.device)
    for chunk in train_images.split(4096):
        total += chunk.to(torch.float64).sum(0)
    pixel_mean = (total / (255.0 * len(train_images))).float()
    if kind == "pixel_mean":
        return pixel_mean, torch.ones((), device=train_images.device)
    if kind == "channel":
        mean = pixel_mean.mean((1, 2), keepdim=True)
        sq = torch.zeros(train_images.shape[1], dtype=torch.float64, device=train_images.device)
        for chunk in train_images.split(4096):
            sq += ((chunk.to(torch.float64) / 255.0 - mean.double()) ** 2).sum((0, 2, 3))
        std = (sq / (len(train_images) * train_images.shape[2] * train_images.shape[3])).sqrt().float()
        return mean, std.view(-1, 1, 1)
    raise CnnbenchError(
        f"data.normalize={kind!r} is not a normalization; use one of {', '.join(NORMALIZATIONS)}."
    )


# ----- options of the `augment` config group -----------------------------------------------------------
# The keys beyond `padding`/`flip` and their off values (conf/augment/standard.yaml carries the same);
# a config without them (e.g. a run saved before they existed) gets these.
OFF: dict[str, Any] = {
    "scale": None,
    "ratio": [3 / 4, 4 / 3],
    "jitter": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "lighting": 0.0,
    "policy": "none",
    "policy_n": 2,
    "policy_m": 9,
    "cutout": 0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "mix_prob": 1.0,
    "mix_switch_prob": 0.5,
}
_STRENGTHS = ("jitter", "brightness", "contrast", "saturation", "lighting", "mixup", "cutmix")


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    return cfg.get(key, OFF.get(key))


def _number(cfg: Mapping[str, Any], key: str, example: str) -> float:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CnnbenchError(f"augment.{key}={value!r} must be a number; set e.g. augment.{key}={example}.")
    return float(value)


def _pair(cfg: Mapping[str, Any], key: str, example: str) -> tuple[float, float]:
    value = _get(cfg, key)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CnnbenchError(
            f"augment.{key}={value!r} must be a pair [min, max] of numbers; set e.g. augment.{key}={example}."
        ) from None
    return low, high


def check_augment(cfg_augment: Mapping[str, Any], image_size: int | tuple[int, int] = 32) -> None:
    """Raise a ``CnnbenchError`` naming the key, its valid range and the fix for an invalid ``augment``
    section (``image_size``: the training images' side, or (height, width), for the cutout's bound)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    padding = _get(cfg_augment, "padding") or 0
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise CnnbenchError(
            f"augment.padding={padding!r} must be a whole number of pixels >= 0 (0 = no padded crop); "
            f"set e.g. augment.padding=4."
        )
    for key in _STRENGTHS:
        if _number(cfg_augment, key, "0.4") < 0:
            raise CnnbenchError(
                f"augment.{key}={_get(cfg_augment, key)!r} is negative; a strength must be >= 0 (0 = off). "
                f"Set e.g. augment.{key}=0 to turn it off."
            )
    if _get(cfg_augment, "scale") is not None:
        low, high = _pair(cfg_augment, "scale", "[0.25,1.0]")
        if not 0 < low <= high <= 1:
            raise CnnbenchError(
                f"augment.scale=[{low}, {high}] must be [min, max] area fractions with 0 < min <= max <= 1; "
                f"set e.g. augment.scale=[0.25,1.0], or augment.scale=null for no scale crop."
            )
        if padding:
            raise CnnbenchError(
                f"augment.scale and augment.padding={padding} are both set, but the scale crop replaces the "
                f"padded crop; set augment.padding=0 to use the scale crop, or augment.scale=null."
            )
        r_low, r_high = _pair(cfg_augment, "ratio", "[0.75,1.3333]")
        if not 0 < r_low <= r_high:
            raise CnnbenchError(
                f"augment.ratio=[{r_low}, {r_high}] must be [min, max] aspect ratios (width/height) with "
                f"0 < min <= max; set e.g. augment.ratio=[0.75,1.3333]."
            )
    policy = _get(cfg_augment, "policy")
    if policy not in policies.POLICIES:
        raise CnnbenchError(
            f"augment.policy={policy!r} is not a policy; use one of {', '.join(policies.POLICIES)} "
            f"(e.g. augment.policy=randaugment), or augment.policy=none to turn it off."
        )
    if policy != "none":
        n_ops, m = _get(cfg_augment, "policy_n"), _get(cfg_augment, "policy_m")
        if isinstance(n_ops, bool) or not isinstance(n_ops, int) or n_ops < 1:
            raise CnnbenchError(
                f"augment.policy_n={n_ops!r} must be a whole number of ops per image >= 1; "
                f"set e.g. augment.policy_n=2."
            )
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < policies.RA_BINS:
            raise CnnbenchError(
                f"augment.policy_m={m!r} must be a whole magnitude from 0 to {policies.RA_BINS - 1} "
                f"(torchvision's RandAugment scale); set e.g. augment.policy_m=9."
            )
    size = _get(cfg_augment, "cutout")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= min(h, w):
        raise CnnbenchError(
            f"augment.cutout={size!r} must be a square side in pixels from 0 (off) to the image size "
            f"{min(h, w)}; set e.g. augment.cutout=16 (DeVries & Taylor's CIFAR-10 setting) or 0."
        )
    for key in ("mix_prob", "mix_switch_prob"):
        value = _get(cfg_augment, key)
        if value is not None and not 0 <= _number(cfg_augment, key, "0.5") <= 1:
            raise CnnbenchError(
                f"augment.{key}={value!r} is a probability and must lie in [0, 1]; "
                f"set e.g. augment.{key}=0.5."
            )
    both = _number(cfg_augment, "mixup", "0.2") > 0 and _number(cfg_augment, "cutmix", "1.0") > 0
    if both and _get(cfg_augment, "mix_switch_prob") is None:
        raise CnnbenchError(
            "augment.mixup and augment.cutmix are both on but augment.mix_switch_prob is unset: it is the "
            "probability, in [0, 1], that a batch uses CutMix instead of mixup. Set e.g. "
            "augment.mix_switch_prob=0.5, or turn one off with augment.mixup=0 or augment.cutmix=0."
        )


@dataclass(frozen=True)
class AugmentOptions:
    """The per-image ops beyond pad/crop/flip; all off by default (``BatchAugment``'s keyword arguments)."""

    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    lighting: float = 0.0
    policy: str = "none"
    policy_n: int = 2
    policy_m: int = 9
    cutout: int = 0

    @classmethod
    def from_config(cls, cfg_augment: Mapping[str, Any]) -> AugmentOptions:
        """From an ``augment`` section; ``jitter`` fills each of brightness/contrast/saturation left at 0."""
        jitter = float(_get(cfg_augment, "jitter"))
        scale = _get(cfg_augment, "scale")
        return cls(
            scale=None if scale is None else _pair(cfg_augment, "scale", "[0.25,1.0]"),
            ratio=_pair(cfg_augment, "ratio", "[0.75,1.3333]"),
            brightness=float(_get(cfg_augment, "brightness")) or jitter,
            contrast=float(_get(cfg_augment, "contrast")) or jitter,
            saturation=float(_get(cfg_augment, "saturation")) or jitter,
            lighting=float(_get(cfg_augment, "lighting")),
            policy=str(_get(cfg_augment, "policy")),
            policy_n=int(_get(cfg_augment, "policy_n")),
            policy_m=int(_get(cfg_augment, "policy_m")),
            cutout=int(_get(cfg_augment, "cutout")),
        )

    @property
    def any_on(self) -> bool:
        return self != AugmentOptions(ratio=self.ratio, policy_n=self.policy_n, policy_m=self.policy_m)

    @property
    def color(self) -> bool:
        return bool(
            self.brightness or self.contrast or self.saturation or self.lighting or self.policy != "none"
        )


class BatchAugment:
    """uint8 (N, C, H, W) batch -> normalized float batch, randomly cropped and flipped, channels-last.

    ``options`` (``AugmentOptions``, default all off) adds the other ops; see the module docstring for
    their order. ``BatchAugment.from_config`` builds it from an ``augment`` config section.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        padding: int,
        flip: bool,
        generator: torch.Generator,
        memory_format: torch.memory_format = torch.channels_last,
        options: AugmentOptions | None = None,
    ) -> None:
        self.mean, self.std = mean, std
        self.padding, self.flip = padding, flip
        self.generator = generator
        # The layout the model's convolutions take (trainer.channels_last); batches come out in it.
        self.memory_format = memory_format
        self.options = options or AugmentOptions()
        if self.options.color and mean.dim() == 3 and mean.shape[0] != 3:
            raise CnnbenchError(
                f"augment color ops (jitter, lighting, policy) need RGB images, but these have "
                f"{mean.shape[0]} channels; set augment.jitter=0 augment.brightness=0 augment.contrast=0 "
                f"augment.saturation=0 augment.lighting=0 augment.policy=none."
            )
        # The fill of padded and warped-in pixels in [0, 1] space: the mean color, ~0 once normalized.
        self.fill = mean.mean((-2, -1), keepdim=True) if mean.dim() == 3 else mean.view(-1, 1, 1)

    @classmethod
    def from_config(
        cls,
        cfg_augment: Mapping[str, Any],
        mean: torch.Tensor,
        std: torch.Tensor,
        generator: torch.Generator,
        memory_format: torch.memory_format = torch.channels_last,
    ) -> BatchAugment:
        """From an ``augment`` section (missing option keys are off, so older configs build as before)."""
        return cls(
            mean,
            std,
            int(cfg_augment.get("padding", 0) or 0),
            bool(cfg_augment.get("flip", False)),
            generator,
            memory_format=memory_format,
            options=AugmentOptions.from_config(cfg_augment),
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalized float, in ``memory_format`` (evaluation: no crop, no flip)."""
        x = (images.float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.options.any_on:
            return self._full(images)
        x = (images.float() / 255.0 - self.mean) / self.std
        if not self.padding and not self.flip:
            return x.contiguous(memory_format=self.memory_format)
        if self.padding:
            # Zero padding after normalization pads with the mean, as the paper's Torch recipe does.
            p = self.padding
            x = F.pad(x, (p, p, p, p))
        out = self._crop_flip(x, x.shape[-2] - 2 * self.padding, x.shape[-1] - 2 * self.padding)
        # Already channels-last in memory: a no-op then, one copy for NCHW (trainer.channels_last=false).
        return out.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)

    def _crop_flip(self, padded: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The (N, H, W, C) gather of an h x w random crop of ``padded``, flipped with probability 1/2.
        Draws: dy (N, 1), dx (N, 1), then the flip (N, 1) when ``flip``."""
        n, dev, p = padded.shape[0], padded.device, self.padding
        dy = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=self.generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=self.generator)
        rows = dy + torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev).expand(n, w)
        if self.flip:
            flipped = torch.rand(n, 1, device=dev, generator=self.generator) < 0.5
            cols = torch.where(flipped, (w - 1) - cols, cols)
        cols = dx + cols
        batch = torch.arange(n, device=dev)[:, None, None]
        return padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)

    def _full(self, images: torch.Tensor) -> torch.Tensor:
        """The pipeline with the optional ops (order in the module docstring)."""
        o, g = self.options, self.generator
        x = images.float() / 255.0
        n, c, h, w = x.shape
        if o.scale is not None:
            x = policies.resized_crop(x, o.scale, o.ratio, self.flip, g)
        elif self.padding or self.flip:
            p = self.padding
            padded = x
            if p:
                padded = self.fill.expand(n, c, h + 2 * p, w + 2 * p).clone()
                padded[:, :, p : p + h, p : p + w] = x
            x = self._crop_flip(padded, h, w).permute(0, 3, 1, 2)
        if o.policy == "randaugment":
            x = policies.randaugment(x, o.policy_n, o.policy_m, self.fill, g)
        if o.brightness or o.contrast or o.saturation:
            x = policies.color_jitter(x, o.brightness, o.contrast, o.saturation, g)
        if o.lighting:
            x = policies.lighting(x, o.lighting, g)
        x = (x - self.mean) / self.std
        if o.cutout:
            x = policies.cutout(x, o.cutout, g)
        return x.contiguous(memory_format=self.memory_format)
