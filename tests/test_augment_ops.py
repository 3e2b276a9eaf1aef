"""The optional augmentation ops (cnnbench/data/policies.py via BatchAugment) and batch mixing (mixing.py)."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cnnbench.data import mixing, policies
from cnnbench.data.augment import AugmentOptions, BatchAugment, normalization_stats
from cnnbench.data.mixing import BatchMix, dominant_targets, mixed_cross_entropy, sample_beta, soft_targets


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 16, seed: int = 0, low: int = 0, high: int = 256) -> torch.Tensor:
    return torch.randint(low, high, (n, 3, 32, 32), dtype=torch.uint8, generator=_gen(seed))


def _augment(images, padding=0, flip=False, seed=0, normalize="pixel_mean", **options) -> BatchAugment:
    mean, std = normalization_stats(images, normalize)
    return BatchAugment(mean, std, padding, flip, _gen(seed), options=AugmentOptions.from_config(options))


# ----- cutout ------------------------------------------------------------------------------------------
def test_cutout_zeroes_a_square_clipped_at_the_borders():
    images = _images(64, low=1)
    augment = _augment(images, cutout=16)
    out = augment(images)
    reference = augment.normalize(images)
    g = _gen(0)  # the same draws: cy then cx, (N, 1) each
    cy = torch.randint(0, 32, (64, 1), generator=g).squeeze(1)
    cx = torch.randint(0, 32, (64, 1), generator=g).squeeze(1)
    for i in range(64):
        y0, x0 = int(cy[i]) - 8, int(cx[i]) - 8
        rows, cols = slice(max(y0, 0), min(y0 + 16, 32)), slice(max(x0, 0), min(x0 + 16, 32))
        expected = reference[i].clone()
        expected[:, rows, cols] = 0.0
        assert torch.equal(out[i], expected), i
    full = [(8 <= int(y) <= 24) and (8 <= int(x) <= 24) for y, x in zip(cy, cx, strict=True)]
    assert any(full) and not all(full), "the draws cover whole and clipped squares"
    zeros = (out == 0).all(1).sum((1, 2))  # per image, pixels set to the mean (0 on every channel)
    assert zeros.max() == 256 and zeros.min() < 256


# ----- color jitter --------------------------------------------------------------------------------------
def test_brightness_scales_each_image_mean_within_the_strength():
    x = _images(64, high=128).float() / 255  # <= 0.5: factor <= 1.4 never clips
    out = policies.color_jitter(x, 0.4, 0.0, 0.0, _gen())
    ratio = out.mean((1, 2, 3)) / x.mean((1, 2, 3))
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.4 + 1e-5
    assert ratio.max() - ratio.min() > 0.4, "factors vary per image"
    torch.testing.assert_close(out, x * ratio.view(-1, 1, 1, 1))


@pytest.mark.parametrize(("contrast", "saturation"), [(0.4, 0.0), (0.0, 0.4), (0.3, 0.3)])
def test_contrast_and_saturation_keep_each_image_gray_mean(contrast, saturation):
    x = _images(64, low=80, high=176).float() / 255  # mid-range: no clipping at factor 1.4
    out = policies.color_jitter(x, 0.0, contrast, saturation, _gen())
    torch.testing.assert_close(policies.gray(out).mean((1, 2, 3)), policies.gray(x).mean((1, 2, 3)))
    assert not torch.allclose(out, x)
    assert out.min() >= 0 and out.max() <= 1


def test_jitter_shorthand_and_end_to_end_range():
    images = _images(32)
    augment = _augment(images, normalize="channel", jitter=0.4)
    assert (augment.options.brightness, augment.options.contrast, augment.options.saturation) == (0.4,) * 3
    x01 = augment(images) * augment.std + augment.mean
    assert x01.min() >= -1e-5 and x01.max() <= 1 + 1e-5


# ----- flips and the random-resized crop ----------------------------------------------------------------
def test_flips_are_exact_mirrors():
    images = _images(64)
    augment = _augment(images, flip=True)
    out, reference = augment(images), augment.normalize(images)
    mirrored = [torch.equal(o, r.flip(-1)) for o, r in zip(out, reference, strict=True)]
    same = [torch.equal(o, r) for o, r in zip(out, reference, strict=True)]
    assert all(s != m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


def test_flips_are_mirrors_on_the_full_path():
    """With other ops on, the mean is subtracted after the flip: compare the [0, 1] images."""
    images = _images(64)
    augment = _augment(images, flip=True, brightness=1e-9)
    x01, reference = augment(images) * augment.std + augment.mean, images.float() / 255
    mirrored = [torch.allclose(o, r.flip(-1), atol=1e-6) for o, r in zip(x01, reference, strict=True)]
    same = [torch.allclose(o, r, atol=1e-6) for o, r in zip(x01, reference, strict=True)]
    assert all(s != m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


def test_scale_crop_of_the_whole_image_is_the_image_or_its_mirror():
    images = _images(32)
    augment = _augment(images, flip=True, normalize="channel", scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out, reference = augment(images), augment.normalize(images)
    for o, r in zip(out, reference, strict=True):
        assert torch.allclose(o, r, atol=1e-5) or torch.allclose(o, r.flip(-1), atol=1e-5)


def test_scale_crop_keeps_a_constant_image_constant():
    x = torch.full((16, 3, 32, 32), 0.3)
    out = policies.resized_crop(x, (0.08, 1.0), (0.75, 4 / 3), True, _gen())
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_scale_crop_is_a_resized_sub_window():
    """A horizontal ramp stays a monotone ramp; a crop of a quarter of the area spans half its range."""
    ramp = torch.linspace(0, 1, 32).expand(16, 3, 32, 32).contiguous()
    out = policies.resized_crop(ramp, (0.25, 0.25), (1.0, 1.0), True, _gen())
    steps = out.diff(dim=-1)
    monotone = (steps >= -1e-6).all((1, 2, 3)) | (steps <= 1e-6).all((1, 2, 3))
    assert monotone.all()
    span = out.amax((1, 2, 3)) - out.amin((1, 2, 3))
    assert ((span > 0.4) & (span < 0.55)).all(), span
    assert (out.std(-2) < 1e-5).all(), "rows stay identical (ratio 1: no vertical mixing)"
    assert len({round(float(v), 3) for v in out[:, 0, 0, 0]}) > 4, "windows differ per image"


# ----- PCA lighting ----------------------------------------------------------------------------------------
def test_lighting_adds_a_constant_per_image_and_channel():
    x = torch.rand(64, 3, 32, 32, generator=_gen(5))
    out = policies.lighting(x, 0.1, _gen(1))
    delta = out - x
    offset = delta[:, :, :1, :1]
    torch.testing.assert_close(delta, offset.expand_as(delta), rtol=0, atol=1e-6)
    alpha = torch.randn(64, 3, generator=_gen(1)) * 0.1  # the same draw
    eigval = torch.tensor(policies.IMAGENET_EIGVAL)
    eigvec = torch.tensor(policies.IMAGENET_EIGVEC)
    expected = torch.stack([eigvec @ (a * eigval) for a in alpha])
    torch.testing.assert_close(offset.flatten(1), expected)
    assert offset.std(0).max() > 0.005, "offsets vary per image"


# ----- RandAugment ops ----------------------------------------------------------------------------------
def test_policy_ops_match_torchvision_on_8_bit_images():
    u8 = _images(8)
    x = u8.float() / 255
    assert torch.equal((policies.equalize(x) * 255).round().to(torch.uint8), TF.equalize(u8))
    assert torch.equal((policies.posterize(x, 5) * 255).round().to(torch.uint8), TF.posterize(u8, 5))
    torch.testing.assert_close(policies.solarize(x, 0.5), TF.solarize(x, 0.5))
    torch.testing.assert_close(policies.autocontrast(x), TF.autocontrast(x))
    torch.testing.assert_close(
        torch.where(
            torch.ones(32, 32, dtype=torch.bool).index_fill_(0, torch.arange(1, 31), False),
            x,
            x + 1.5 * (x - policies._sharpness_blur(x)),
        ).clamp(0, 1)[:, :, 1:-1, 1:-1],
        TF.adjust_sharpness(x, 2.5)[:, :, 1:-1, 1:-1],
    )


@pytest.mark.parametrize("magnitude", [0, 9, 30])
def test_randaugment_keeps_shape_dtype_and_range(magnitude):
    x = torch.rand(64, 3, 32, 32, generator=_gen(2)).contiguous(memory_format=torch.channels_last)
    out = policies.randaugment(x, 2, magnitude, torch.full((3, 1, 1), 0.5), _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    if magnitude:
        assert int((out != x).flatten(1).any(1).sum()) > 48, "nearly every image changes"


def test_randaugment_preset_pipeline_in_both_layouts():
    images = _images(16)
    outs = []
    for fmt in (torch.channels_last, torch.contiguous_format):
        mean, std = normalization_stats(images, "pixel_mean")
        options = AugmentOptions(policy="randaugment", cutout=16)
        augment = BatchAugment(mean, std, 4, True, _gen(3), memory_format=fmt, options=options)
        out = augment(images)
        assert out.is_contiguous(memory_format=fmt)
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


# ----- determinism --------------------------------------------------------------------------------------
HEAVY = {"policy": "randaugment", "cutout": 16, "jitter": 0.4, "lighting": 0.1}


@pytest.mark.parametrize("options", [HEAVY, {"scale": (0.25, 1.0), "lighting": 0.1}])
def test_same_generator_state_same_batch(options):
    images = _images(16)
    padding = 0 if "scale" in options else 4
    a, b = (
        _augment(images, padding, True, seed=9, **options),
        _augment(images, padding, True, seed=9, **options),
    )
    mix_a, mix_b = (BatchMix(0.2, 1.0, 0.8, 0.5, generator=aug.generator) for aug in (a, b))
    labels = torch.arange(16)
    for _ in range(2):
        out_a, out_b = mix_a(a(images), labels), mix_b(b(images), labels)
        assert all(torch.equal(u, v) for u, v in zip(out_a, out_b, strict=True))
    state = a.generator.get_state()
    first = mix_a(a(images), labels)
    a.generator.set_state(state)
    again = mix_a(a(images), labels)
    assert all(torch.equal(u, v) for u, v in zip(first, again, strict=True))


# ----- mixing -------------------------------------------------------------------------------------------
@pytest.fixture
def fixed_lam(monkeypatch):
    """Beta draws replaced by 0.3 (the generator still advances: the real sampler runs first)."""
    real = mixing.sample_beta

    def fixed(a, b, shape, generator, device):
        real(a, b, shape, generator, device)
        return torch.full(shape, 0.3, device=device)

    monkeypatch.setattr(mixing, "sample_beta", fixed)
    return 0.3


def _batch(n=8):
    return torch.randn(n, 3, 32, 32, generator=_gen(4)), torch.arange(n)


def test_mixup_is_the_convex_combination(fixed_lam):
    x, labels = _batch()
    out, a, b, lam = BatchMix(mixup=0.2, generator=_gen())(x, labels)
    assert float(lam) == pytest.approx(0.3) and lam.dim() == 0
    assert torch.equal(a, labels) and sorted(b.tolist()) == labels.tolist() and not torch.equal(b, labels)
    torch.testing.assert_close(out, 0.3 * x + 0.7 * x[b])  # labels are the indices: b is the permutation
    soft = soft_targets(a, b, lam, 8)
    moved = a != b  # a permutation may keep some images in place: those are not mixed
    assert soft[moved, a[moved]].tolist() == pytest.approx([0.3] * int(moved.sum()))
    assert soft[moved, b[moved]].tolist() == pytest.approx([0.7] * int(moved.sum()))
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    logits = torch.randn(8, 8, generator=_gen(1))
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(
        mixed_cross_entropy(logits, a, b, lam), 0.3 * ce(logits, a) + 0.7 * ce(logits, b)
    )
    assert torch.equal(dominant_targets(a, b, lam), b)


def test_cutmix_pastes_one_box_and_lam_is_its_complement(fixed_lam):
    x, labels = _batch()
    out, a, b, lam = BatchMix(cutmix=1.0, generator=_gen())(x, labels)
    moved = a != b
    pasted = ((out == x[b]).all(1) & (out != x).any(1))[moved]  # (moved images, H, W)
    box = pasted[0]
    assert (pasted == box).all(), "the same box for the whole batch"
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert int(box.sum()) == len(rows) * len(cols), "a rectangle"
    assert len(rows) <= 26 and len(cols) <= 26  # floor(32 * sqrt(1 - 0.3)) = 26, clipped at borders
    assert float(lam) == pytest.approx(1 - len(rows) * len(cols) / 1024)
    torch.testing.assert_close(out, torch.where(box, x[b], x))


@pytest.mark.parametrize(("switch", "cut"), [(0.0, False), (1.0, True)])
def test_switch_probability_picks_the_method(fixed_lam, switch, cut):
    x, labels = _batch()
    out, _, b, lam = BatchMix(mixup=0.2, cutmix=1.0, switch_prob=switch, generator=_gen())(x, labels)
    is_mixup = torch.allclose(out, 0.3 * x + 0.7 * x[b], atol=1e-6)
    assert is_mixup != cut and (float(lam) == pytest.approx(0.3)) != cut


def test_batch_not_mixed_is_returned_exactly():
    x, labels = _batch()
    out, a, b, lam = BatchMix(mixup=0.2, cutmix=1.0, prob=0.0, generator=_gen())(x, labels)
    assert torch.equal(out, x) and float(lam) == 1.0 and torch.equal(dominant_targets(a, b, lam), labels)
    assert not BatchMix(generator=_gen()).enabled


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.2), (1.0, 1.0), (2.0, 5.0)])
def test_beta_sampler_moments(a, b):
    s = sample_beta(a, b, (40000,), _gen(), "cpu").double()
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert s.min() >= 0 and s.max() <= 1
    assert abs(float(s.mean()) - mean) < 0.01
    assert abs(float(s.var()) - var) < 0.05 * var + 1e-3


def test_randaugment_grouped_and_masked_agree():
    """The CPU's per-op grouping and the accelerator's sync-free masking: same draws, same images."""
    x = (_images(64).float() / 255).contiguous(memory_format=torch.channels_last)
    fill = torch.full((3, 1, 1), 0.5)
    grouped = policies.randaugment(x, 2, 14, fill, _gen(), grouped=True)
    masked = policies.randaugment(x, 2, 14, fill, _gen(), grouped=False)
    torch.testing.assert_close(grouped, masked, rtol=0, atol=1e-6)
