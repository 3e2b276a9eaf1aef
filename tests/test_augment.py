from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cnnbench.core.config import conf_dir
from cnnbench.data.augment import AugmentOptions, BatchAugment, check_augment, normalization_stats
from cnnbench.data.loader import DeviceBatches
from cnnbench.errors import CnnbenchError


def _images(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def _augment(images, padding, flip, seed=0):
    mean, std = normalization_stats(images, "pixel_mean")
    return BatchAugment(mean, std, padding, flip, torch.Generator().manual_seed(seed)), mean


def _find_shift(out_img, ref_img, padding, allow_flip):
    """The (dy, dx, flipped) for which out_img equals the zero-padded ref_img crop, or None."""
    padded = torch.nn.functional.pad(ref_img, (padding,) * 4)
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + 32, dx : dx + 32]
            if torch.equal(crop, out_img):
                return dy - padding, dx - padding, False
            if allow_flip and torch.equal(crop.flip(2), out_img):
                return dy - padding, dx - padding, True
    return None


def test_crop_shifts_within_padding_and_flips():
    images = _images(64)
    augment, _ = _augment(images, padding=4, flip=True)
    out = augment(images)
    reference = augment.normalize(images)
    shifts = [_find_shift(out[i], reference[i], 4, allow_flip=True) for i in range(len(images))]
    assert all(s is not None for s in shifts), "every output is a padded crop of its input, maybe flipped"
    assert all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx, _ in shifts)
    flipped = sum(f for _, _, f in shifts)
    assert 10 < flipped < 54, f"about half the images are flipped, got {flipped}/64"
    assert len({(dy, dx) for dy, dx, _ in shifts}) > 10, "offsets vary across the batch"
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_no_augmentation_is_identity_after_normalization():
    images = _images()
    augment, mean = _augment(images, padding=0, flip=False)
    out = augment(images)
    torch.testing.assert_close(out, images.float() / 255 - mean)


def test_pixel_mean_is_the_training_mean_image():
    images = _images(32)
    mean, std = normalization_stats(images, "pixel_mean")
    torch.testing.assert_close(mean, images.float().mean(0) / 255)
    assert float(std) == 1.0
    centred = (images.float() / 255 - mean).mean(0)
    assert centred.abs().max() < 1e-5


def test_augmentation_is_reproducible_from_generator_state():
    images = _images()
    augment, _ = _augment(images, 4, True, seed=3)
    state = augment.generator.get_state()
    first = augment(images)
    augment.generator.set_state(state)
    torch.testing.assert_close(augment(images), first, rtol=0, atol=0)


def test_batches_cover_each_epoch_once_and_resume_exactly():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 32, 32).contiguous()
    labels = torch.arange(10)
    batches = DeviceBatches(images, labels, batch_size=3, seed=0)
    epoch = torch.cat([batches.next()[1] for _ in range(3)])
    assert len(set(epoch.tolist())) == 9, "3 full batches of an epoch never repeat an image"
    state = batches.state_dict()
    after = [batches.next()[1] for _ in range(5)]
    batches.load_state_dict(state)
    assert all(torch.equal(a, batches.next()[1]) for a in after)


class _BatchAugmentBeforeOptions:
    """``BatchAugment.__call__`` with crop, flip and normalization only, as it was before the optional ops
    (scale/ratio crops, color jitter, policies) existed, copied verbatim: the default presets must still
    give these exact images."""

    def __init__(self, mean, std, padding, flip, generator, memory_format=torch.channels_last):
        self.mean, self.std = mean, std
        self.padding, self.flip = padding, flip
        self.generator = generator
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        if not self.padding and not self.flip:
            return x.contiguous(memory_format=self.memory_format)
        n, _, h, w = x.shape
        dev = x.device
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=self.generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=self.generator)
        rows = dy + torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev).expand(n, w)
        if self.flip:
            flipped = torch.rand(n, 1, device=dev, generator=self.generator) < 0.5
            cols = torch.where(flipped, (w - 1) - cols, cols)
        cols = dx + cols
        batch = torch.arange(n, device=dev)[:, None, None]
        out = x[batch, :, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)


@pytest.fixture(scope="module")
def compose_augment() -> Iterator:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="test_augment"):
        yield lambda *overrides: compose(config_name="config", overrides=list(overrides)).augment
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("preset", ["standard", "none"])
@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("normalize", ["pixel_mean", "channel"])
def test_default_presets_are_bit_identical_to_before(compose_augment, preset, fmt, normalize):
    """augment=standard/none (new keys off) make the same draws, in the same order, and the same tensors."""
    cfg = compose_augment(f"augment={preset}")
    images = _images(64)
    mean, std = normalization_stats(images, normalize)
    new = BatchAugment.from_config(cfg, mean, std, torch.Generator().manual_seed(7), memory_format=fmt)
    old = _BatchAugmentBeforeOptions(
        mean, std, int(cfg.padding), bool(cfg.flip), torch.Generator().manual_seed(7), memory_format=fmt
    )
    assert not new.options.any_on
    for _ in range(3):
        a, b = new(images), old(images)
        assert torch.equal(a, b) and a.stride() == b.stride()
        assert torch.equal(new.generator.get_state(), old.generator.get_state())


def test_config_without_the_new_keys_builds_the_default():
    """A run saved before the optional keys existed resumes with the same augmentation."""
    cfg = OmegaConf.create({"name": "standard", "padding": 4, "flip": True})
    images = _images()
    mean, std = normalization_stats(images, "pixel_mean")
    new = BatchAugment.from_config(cfg, mean, std, torch.Generator().manual_seed(1))
    old = _BatchAugmentBeforeOptions(mean, std, 4, True, torch.Generator().manual_seed(1))
    assert new.options == AugmentOptions()
    assert torch.equal(new(images), old(images))
    check_augment(cfg)


@pytest.mark.parametrize("preset", ["standard", "none", "cutout", "alexnet", "randaugment"])
def test_presets_are_valid_and_run(compose_augment, preset):
    cfg = compose_augment(f"augment={preset}")
    check_augment(cfg, 32)
    assert cfg.name == preset
    images = _images(8)
    mean, std = normalization_stats(images, "pixel_mean")
    out = BatchAugment.from_config(cfg, mean, std, torch.Generator().manual_seed(0))(images)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32 and out.isfinite().all()


def test_options_compose_on_a_preset(compose_augment):
    cfg = compose_augment(
        "augment=standard", "augment.jitter=0.4", "augment.cutout=16", "augment.contrast=0.1"
    )
    options = AugmentOptions.from_config(cfg)
    assert (options.brightness, options.contrast, options.saturation, options.cutout) == (0.4, 0.1, 0.4, 16)
    assert (int(cfg.padding), bool(cfg.flip)) == (4, True)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"policy": "autoaugment"}, "augment.policy"),
        ({"mix_prob": 1.5}, "augment.mix_prob"),
        ({"mix_switch_prob": -0.1}, "augment.mix_switch_prob"),
        ({"cutout": 40}, "augment.cutout"),
        ({"mixup": 0.2, "cutmix": 1.0, "mix_switch_prob": None}, "augment.mix_switch_prob"),
        ({"padding": 0, "scale": [0.8, 0.5]}, "augment.scale"),
        ({"padding": 0, "scale": [0.0, 1.0]}, "augment.scale"),
        ({"padding": 0, "scale": [0.5, 1.2]}, "augment.scale"),
        ({"scale": [0.5, 1.0]}, "augment.padding=0"),
        ({"jitter": -0.4}, "augment.jitter"),
        ({"lighting": -0.1}, "augment.lighting"),
        ({"brightness": -1}, "augment.brightness"),
        ({"cutmix": -1.0}, "augment.cutmix"),
        ({"policy": "randaugment", "policy_m": 31}, "augment.policy_m"),
        ({"padding": -1}, "augment.padding"),
    ],
)
def test_check_augment_names_the_key_and_the_fix(overrides, key):
    cfg = OmegaConf.merge(OmegaConf.load(conf_dir() / "augment" / "standard.yaml"), overrides)
    with pytest.raises(CnnbenchError) as info:
        check_augment(cfg, 32)
    message = str(info.value)
    assert key in message and "\n" not in message
    assert "set" in message.lower() or "use" in message.lower()
