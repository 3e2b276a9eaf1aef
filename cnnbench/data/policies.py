"""Batched image ops with per-image parameters, for ``BatchAugment``: color jitter, PCA lighting, cutout,
random-resized crop and RandAugment.

Every op takes a float (N, C, H, W) batch and per-image parameter tensors on the same device; the random
parameters are drawn by the ``draw_*`` helpers from the caller's ``torch.Generator`` only (never the global
RNG, numpy or Python's ``random``), so a run's augmentation replays exactly from the generator's state.
Nothing here reads a tensor back to the host: no ``.item()``, no data-dependent shapes.

Color ops work in [0, 1] pixel space on RGB images; ``cutout`` works in normalized space (its fill, 0, is
the mean there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Grayscale weights (ITU-R 601-2 luma, as PIL and torchvision use).
_LUMA = (0.299, 0.587, 0.114)

# PCA of ImageNet's RGB pixels (in [0, 1] units) that AlexNet's "lighting" noise uses, as published with
# fb.resnet.torch (and copied by most ImageNet/CIFAR code since). Eigenvalues descending; the columns of
# the matrix are the eigenvectors, its rows R, G, B. These are ImageNet's, not CIFAR's: CIFAR-10's own
# principal components are close (a luminance axis carrying nearly all the variance).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

POLICIES = ("none", "randaugment")


def uniform(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``n`` draws from U(low, high), shape (n,)."""
    return low + (high - low) * torch.rand(n, device=device, generator=generator)


def gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


# ----- color jitter ------------------------------------------------------------------------------------
def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x * factor, clamped to [0, 1]; ``factor`` (N,)."""
    return (x * _per_image(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean gray level: mean + factor * (x - mean), clamped to [0, 1]."""
    mean = gray(x).mean((1, 2, 3), keepdim=True)
    return (mean + _per_image(factor) * (x - mean)).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's grayscale version: gray + factor * (x - gray), clamped to [0, 1]."""
    g = gray(x)
    return (g + _per_image(factor) * (x - g)).clamp_(0.0, 1.0)


def color_jitter(
    x: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Brightness, then contrast, then saturation (a fixed order), each factor ~ U(max(0, 1 - s), 1 + s)
    per image; a strength of 0 skips its op and its draw. Draw order: brightness, contrast, saturation."""
    n, dev = x.shape[0], x.device
    for strength, op in (
        (brightness, adjust_brightness),
        (contrast, adjust_contrast),
        (saturation, adjust_saturation),
    ):
        if strength > 0:
            x = op(x, uniform(n, max(0.0, 1.0 - strength), 1.0 + strength, generator, dev))
    return x


# ----- PCA lighting (AlexNet) ----------------------------------------------------------------------------
def lighting(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """AlexNet's PCA color noise: add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std^2)
    per image and component (one (N, 3) draw). Not clamped, as in AlexNet and fb.resnet.torch."""
    n, dev = x.shape[0], x.device
    alpha = torch.randn(n, 3, device=dev, generator=generator) * std
    eigval = torch.tensor(IMAGENET_EIGVAL, device=dev, dtype=x.dtype)
    eigvec = torch.tensor(IMAGENET_EIGVEC, device=dev, dtype=x.dtype)
    rgb = (alpha * eigval) @ eigvec.T  # (N, 3): rgb[n, i] = sum_j eigvec[i, j] * alpha[n, j] * eigval[j]
    return x + rgb.view(n, 3, 1, 1)


# ----- cutout (DeVries & Taylor 2017) ------------------------------------------------------------------
def cutout_mask(
    n: int, h: int, w: int, size: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(N, 1, H, W) bool, True inside each image's square. The centre (cy, cx) is uniform over all pixels
    (one (N,) draw each, cy first); the square covers rows [cy - size // 2, cy - size // 2 + size) and the
    same for columns, clipped at the borders, so a square near an edge is smaller (as in the paper)."""
    cy = torch.randint(0, h, (n, 1), device=device, generator=generator)
    cx = torch.randint(0, w, (n, 1), device=device, generator=generator)
    y0, x0 = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= y0) & (rows < y0 + size)  # (N, H)
    in_cols = (cols >= x0) & (cols < x0 + size)  # (N, W)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Set a ``size`` x ``size`` square (clipped at the borders) of every image to 0, on all channels."""
    n, _, h, w = x.shape
    return x.masked_fill(cutout_mask(n, h, w, size, generator, x.device), 0.0)


# ----- random-resized crop + flip ------------------------------------------------------------------------
def resized_crop_theta(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
    aspect: float,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """(N, 2, 3) affine matrices (``F.affine_grid``'s output -> input, normalized coordinates) of random
    crops, each resized to the full image and flipped horizontally with probability 1/2.

    Per image: area fraction s ~ U(scale) and log aspect ratio (width/height, pixels) log r ~ U(log ratio);
    the crop's width and height fractions sqrt(s * r / aspect) and sqrt(s * aspect / r) are clamped to 1
    (where torchvision retries up to 10 times: here a fixed number of draws and no host sync); its position
    is uniform among those inside the image. Draw order: s, log r, x position, y position, flip.
    """
    s = uniform(n, scale[0], scale[1], generator, device)
    log_r = uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    r = log_r.exp() / aspect  # width/height ratio in units of the image's own width and height
    fw = (s * r).sqrt().clamp(max=1.0)
    fh = (s / r).sqrt().clamp(max=1.0)
    cx = (1.0 - fw) * (2.0 * torch.rand(n, device=device, generator=generator) - 1.0)
    cy = (1.0 - fh) * (2.0 * torch.rand(n, device=device, generator=generator) - 1.0)
    sx = fw
    if flip:
        flipped = torch.rand(n, device=device, generator=generator) < 0.5
        sx = torch.where(flipped, -fw, fw)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = fh, cy
    return theta


def resized_crop(
    x: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random-resized crop (+ flip) of every image, resized bilinearly back to the image's own size (a crop
    is never larger than the image, so resizing only upsamples: no antialiasing needed)."""
    n, c, h, w = x.shape
    theta = resized_crop_theta(n, scale, ratio, flip, w / h, generator, x.device)
    grid = F.affine_grid(theta.to(x.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----- RandAugment (Cubuk et al. 2020), batched --------------------------------------------------------
# The ops and magnitude ranges of torchvision's RandAugment (magnitude m of 31 bins, 0..30); an image
# picks one op uniformly per round, signed ops take a random sign.
RA_OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
RA_BINS = 31
_OP = {name: i for i, name in enumerate(RA_OPS)}


def _ra_magnitudes(m: int, h: int, w: int) -> dict[str, float]:
    f = m / (RA_BINS - 1)
    return {
        "shear": 0.3 * f,
        "translate_x": 150.0 / 331.0 * w * f,
        "translate_y": 150.0 / 331.0 * h * f,
        "rotate": 30.0 * f,
        "enhance": 0.9 * f,
        "posterize_bits": 8 - int(round(m / ((RA_BINS - 1) / 4))),
        "solarize": 1.0 - f,
    }


def _sharpness_blur(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH kernel ([[1,1,1],[1,5,1],[1,1,1]] / 13) inside, the original pixels on the border."""
    c = x.shape[1]
    k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(c, 1, 3, 3)
    blurred = F.conv2d(x, k, padding=1, groups=c)
    h, w = x.shape[-2:]
    border = torch.ones(h, w, dtype=torch.bool, device=x.device)
    border[1:-1, 1:-1] = False
    return torch.where(border, x, blurred)


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` bits of the 8-bit pixel values."""
    q = 2.0 ** (8 - bits)
    return torch.floor(torch.round(x * 255.0) / q) * (q / 255.0)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the pixels at or above ``threshold``."""
    return torch.where(x >= threshold, 1.0 - x, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each image's channels to [0, 1] (a constant channel stays as it is)."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    ok = hi > lo
    scale = torch.where(ok, 1.0 / (hi - lo).clamp(min=1e-12), torch.ones_like(hi))
    lo = torch.where(ok, lo, torch.zeros_like(lo))
    return ((x - lo) * scale).clamp_(0.0, 1.0)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalization of each image's channels on 8-bit levels (PIL's / torchvision's algorithm)."""
    n, c, h, w = x.shape
    q = torch.round(x * 255.0).clamp_(0, 255).to(torch.int64).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.int64)
    hist.scatter_add_(1, q, torch.ones_like(q))
    levels = torch.arange(256, device=x.device)
    last = (levels * (hist > 0)).amax(1, keepdim=True)  # the highest level present
    step = (h * w - hist.gather(1, last)) // 255  # (N*C, 1)
    safe = step.clamp(min=1)
    lut = (hist.cumsum(1) + step // 2) // safe
    lut = F.pad(lut, (1, 0))[:, :-1].clamp_(0, 255)
    out = torch.where(step > 0, lut.gather(1, q), q)
    return (out.to(x.dtype) / 255.0).view(n, c, h, w)


def _geometric_theta(
    op: torch.Tensor, sign: torch.Tensor, mag: dict[str, float], h: int, w: int
) -> torch.Tensor:
    """(N, 2, 3) output -> input affine maps (normalized coordinates) of the geometric ops; identity for the
    others. Built in pixel units about the image centre, then converted to normalized coordinates."""
    n, dev = op.shape[0], op.device
    a = torch.eye(3, device=dev).repeat(n, 1, 1)
    shear = sign * mag["shear"]
    a[:, 0, 1] = torch.where(op == _OP["shear_x"], shear, a[:, 0, 1])
    a[:, 1, 0] = torch.where(op == _OP["shear_y"], shear, a[:, 1, 0])
    a[:, 0, 2] = torch.where(op == _OP["translate_x"], sign * mag["translate_x"], a[:, 0, 2])
    a[:, 1, 2] = torch.where(op == _OP["translate_y"], sign * mag["translate_y"], a[:, 1, 2])
    angle = sign * math.radians(mag["rotate"])
    rot = op == _OP["rotate"]
    cos, sin = angle.cos(), angle.sin()
    a[:, 0, 0] = torch.where(rot, cos, a[:, 0, 0])
    a[:, 0, 1] = torch.where(rot, -sin, a[:, 0, 1])
    a[:, 1, 0] = torch.where(rot, sin, a[:, 1, 0])
    a[:, 1, 1] = torch.where(rot, cos, a[:, 1, 1])
    # normalized = S^-1 pixel; the map in normalized coordinates is S^-1 A S with S = diag(w/2, h/2, 1).
    s = torch.tensor([w / 2.0, h / 2.0, 1.0], device=dev)
    a = a * s.view(1, 1, 3) / s.view(1, 3, 1)
    return a[:, :2, :]


def _enhance(x: torch.Tensor, name: str, sign: torch.Tensor, mag: dict[str, float]) -> torch.Tensor:
    """PIL's ImageEnhance ops: blend with a degenerate image, factor 1 + signed magnitude."""
    if name == "brightness":
        degenerate = torch.zeros_like(x)
    elif name == "color":
        degenerate = gray(x)
    elif name == "contrast":
        degenerate = gray(x).mean((2, 3), keepdim=True)
    else:
        degenerate = _sharpness_blur(x)
    factor = _per_image(1.0 + sign * mag["enhance"])
    return (degenerate + factor * (x - degenerate)).clamp_(0.0, 1.0)


def _warp(x: torch.Tensor, op: torch.Tensor, sign: torch.Tensor, mag: dict[str, float], fill: torch.Tensor):
    n, c, h, w = x.shape
    theta = _geometric_theta(op, sign, mag, h, w)
    grid = F.affine_grid(theta.to(x.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False) + fill


def _pixel_op(x: torch.Tensor, name: str, mag: dict[str, float]) -> torch.Tensor:
    if name == "posterize":
        return posterize(x, mag["posterize_bits"])
    if name == "solarize":
        return solarize(x, mag["solarize"])
    if name == "autocontrast":
        return autocontrast(x)
    return equalize(x)


_GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
_ENHANCE = ("brightness", "color", "contrast", "sharpness")
_PIXEL = ("posterize", "solarize", "autocontrast", "equalize")


def _round_masked(x, op, sign, mag, fill):
    """Every op on the whole batch, each image keeping its own op's result: no data-dependent shapes, so
    no host sync (the GPU way); costs all ops whatever the draws."""
    sel = op.view(-1, 1, 1, 1)
    geometric = (sel >= _OP["shear_x"]) & (sel <= _OP["rotate"])
    out = torch.where(geometric, _warp(x, op, sign, mag, fill), x)
    for name in _ENHANCE:
        out = torch.where(sel == _OP[name], _enhance(x, name, sign, mag), out)
    for name in _PIXEL:
        out = torch.where(sel == _OP[name], _pixel_op(x, name, mag), out)
    return out


def _round_grouped(x, op, sign, mag, fill):
    """Each op on its own images only (``nonzero`` reads the grouping back: free on the CPU, where there
    is no device to wait for, and much less work than ``_round_masked``). Same results per image."""
    out = x.clone()
    geometric = ((op >= _OP["shear_x"]) & (op <= _OP["rotate"])).nonzero().squeeze(1)
    if len(geometric):
        out[geometric] = _warp(x[geometric], op[geometric], sign[geometric], mag, fill)
    for name in (*_ENHANCE, *_PIXEL):
        idx = (op == _OP[name]).nonzero().squeeze(1)
        if len(idx):
            part = x[idx]
            out[idx] = (
                _enhance(part, name, sign[idx], mag) if name in _ENHANCE else _pixel_op(part, name, mag)
            )
    return out


def randaugment(
    x: torch.Tensor,
    n_ops: int,
    magnitude: int,
    fill: torch.Tensor,
    generator: torch.Generator,
    grouped: bool | None = None,
) -> torch.Tensor:
    """RandAugment on an RGB batch in [0, 1]: ``n_ops`` rounds; in each, every image applies one op drawn
    uniformly from ``RA_OPS`` at ``magnitude`` (0..30), with a random sign for the signed ops. Draws per
    round: op (N,), then sign (N,). Geometric ops use nearest sampling and fill with ``fill`` (C, 1, 1).

    ``grouped`` (default: on the CPU only) runs each op on its own images; otherwise every op runs on the
    whole batch and each image keeps its own op's result, which needs no host sync on an accelerator.
    The draws and the results are the same either way.
    """
    n, _, h, w = x.shape
    dev = x.device
    mag = _ra_magnitudes(magnitude, h, w)
    one_round = _round_grouped if (dev.type == "cpu" if grouped is None else grouped) else _round_masked
    for _ in range(n_ops):
        op = torch.randint(0, len(RA_OPS), (n,), device=dev, generator=generator)
        sign = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
        x = one_round(x, op, sign, mag, fill)
    return x
