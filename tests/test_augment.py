import torch

from cnnbench.data.augment import BatchAugment, normalization_stats
from cnnbench.data.loader import DeviceBatches


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
