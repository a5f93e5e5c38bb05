"""Training augmentation, reproducible anywhere: every draw is a pure function of (seed, epoch, sample
index), so a resumed run sees exactly the images an uninterrupted one would, whatever the number of
workers or processes; and the small-data crop-and-flip computed a batch at a time.
"""
from functools import cache

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..checkpoints.preprocessing import BICUBIC
from .recipes import Recipe


def train_transform(recipe: Recipe, size: int, mean, std) -> v2.Compose:
    steps = [v2.RandomResizedCrop(size, scale=(recipe.min_crop_scale, 1.0), interpolation=BICUBIC, antialias=True)]
    if recipe.hflip:
        steps.append(v2.RandomHorizontalFlip(recipe.hflip))
    if recipe.randaugment is not None:
        # Bilinear: torchvision's tensor kernels have no bicubic for RandAugment's affine ops.
        steps.append(v2.RandAugment(num_ops=2, magnitude=recipe.randaugment, interpolation=v2.InterpolationMode.BILINEAR))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if recipe.reprob:
        steps.append(v2.RandomErasing(recipe.reprob, value=0))
    return v2.Compose([v2.ToImage(), *steps])


def seed_cpu_rng(seed: int, epoch: int, index: int) -> None:
    """Seed the CPU generator from (seed, epoch, sample): the only one augmentations draw from, and a
    hundred times cheaper to seed alone than `torch.manual_seed`, which seeds every device's.
    """
    torch.default_generator.manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)


class SeededAugmentation(Dataset):
    """Applies `transform` with the torch RNG seeded from (seed, epoch, index): reproducible anywhere."""

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            seed_cpu_rng(self.seed, self.epoch, index)
            return self.apply(image, label)

    def apply(self, image, label):
        return self.transform(image), label


class SeededJointAugmentation(SeededAugmentation):
    """The same, for targets that move with the image (boxes, masks): `transform(image, target)`."""

    def apply(self, image, target):
        return self.transform(image, target)


@cache
def resize_matrix(length: int, size: int) -> torch.Tensor:
    """(size, length): torchvision's 1-D antialiased bicubic resize from `length` to `size` as a matrix
    (resize is linear, so resizing the basis vectors gives its columns).
    """
    # One image per basis vector, a few columns wide: PyTorch's antialiased kernel gives wrong weights
    # for one-pixel-wide images (torch 2.14).
    basis = torch.eye(length).view(length, 1, length, 1).expand(length, 1, length, 4)
    resized = F.interpolate(basis, size=(size, 4), mode="bicubic", antialias=True, align_corners=False)
    return resized[:, 0, :, 0].t()


class BatchedCropFlip(Dataset):
    """The small-data train transform (random resized crop, optional flip, normalise) over images held
    in memory (`data.TensorImages`), computed a batch at a time: the DataLoader asks for whole batches
    (`__getitems__`).

    Every sample draws its crop box and flip exactly as `SeededAugmentation` with torchvision's
    transforms would (the same seeded RNG, the same draws in the same order). The antialiased bicubic
    resize is separable and linear, so a sample's crop-and-resize is R_y · image · R_xᵀ with R_y, R_x
    the 1-D resize matrices placed at the crop box (R_x reversed for a flip): two batched products for
    the batch, equal to torchvision's uint8 result up to one level at a few pixels (its fixed-point
    weights). For the built-in digits, per-sample transforms cost about a third of a CPU demo run.
    """

    def __init__(self, images: Dataset, crop: v2.RandomResizedCrop, hflip: float, mean, std, seed: int,
                 transform=None):
        self.images, self.crop, self.hflip, self.seed, self.epoch = images, crop, hflip, seed, 0
        self.transform = transform  # the per-sample transform this computes a batch at a time (as documentation)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def _draw(self, index: int, image: torch.Tensor) -> tuple[dict, bool]:
        with torch.random.fork_rng(devices=[]):
            seed_cpu_rng(self.seed, self.epoch, index)
            box = self.crop.make_params([tv_tensors.Image(image)])
            return box, bool(self.hflip) and bool(torch.rand(1) < self.hflip)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        images = self.images.images[indices]
        n, _, height, width = images.shape
        out_h, out_w = self.crop.size
        rows, columns = torch.zeros(n, out_h, height), torch.zeros(n, out_w, width)
        for i, (index, image) in enumerate(zip(indices, images)):
            box, flip = self._draw(index, image)
            top, left, h, w = box["top"], box["left"], box["height"], box["width"]
            rows[i, :, top : top + h] = resize_matrix(h, out_h)
            columns[i, :, left : left + w] = resize_matrix(w, out_w).flip(0) if flip else resize_matrix(w, out_w)
        # Horizontal pass, then vertical, each rounded to uint8 as PyTorch's uint8 resize kernel does.
        crops = torch.einsum("nchw,nxw->nchx", images.float(), columns).round_().clamp_(0, 255)
        crops = torch.einsum("nyh,nchx->ncyx", rows, crops).round_().clamp_(0, 255)
        batch = (crops / 255 - self.mean) / self.std
        return list(zip(batch.unbind(), self.images.labels[indices].tolist()))

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]
