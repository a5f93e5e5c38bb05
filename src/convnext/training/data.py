"""Datasets and loaders: the built-in digits, ImageFolder trees, `datasets` data sets and WebDataset
shards (`sources.py`), bad-image handling, the split into train and val, and the epoch sampler.
Augmentation (`augmentation.py`) draws from (seed, epoch, sample index) only, so runs resume exactly.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from ..checkpoints.preprocessing import IMAGENET_MEAN, IMAGENET_STD, eval_transform, model_transform
from .augmentation import BatchedCropFlip, SeededAugmentation, train_transform
from .recipes import Recipe
from .scenes import CLASSES as SCENE_CLASSES, parse as scenes_named, scenes as scene_arrays, evaluation_set as scene_tests
from .sources import ShardImages, SourceError, hub_data, hub_eval_split, is_hub_data, is_shards

IMAGE_EXTENSIONS = datasets.folder.IMG_EXTENSIONS


class DataError(ValueError):
    """A dataset problem the user must fix (missing folder, empty dataset, unreadable image)."""


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    class_names: list[str]
    in_chans: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: list[str]  # unreadable images left out (--on-bad-image skip)


class TensorImages(Dataset):
    """Images held in memory as a uint8 (N, C, H, W) tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = tv_tensors.Image(self.images[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])


class TransformedSubset(Dataset):
    """Some samples of a dataset, transformed, with labels optionally renumbered."""

    def __init__(self, dataset: Dataset, indices: list[int], transform=None, label_map: list[int] | None = None):
        self.dataset, self.indices, self.transform, self.label_map = dataset, indices, transform, label_map

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.dataset[self.indices[index]]
        label = self.label_map[label] if self.label_map else label
        return (self.transform(image) if self.transform else image), label


def subset(dataset: Dataset, indices: list[int]) -> Dataset:
    """Some samples of a dataset; in-memory images stay in memory (the batched crop and flip take them)."""
    if isinstance(dataset, TensorImages) and dataset.transform is None:
        chosen = torch.tensor(indices, dtype=torch.long)
        return TensorImages(dataset.images[chosen], dataset.labels[chosen])
    return TransformedSubset(dataset, indices)


class EpochSampler(Sampler[int]):
    """This process's share of a seeded per-epoch permutation, resumable from any batch.

    Ranks take interleaved slices of one permutation (the tail that does not divide evenly is
    dropped), so N processes with batch b see the same global batches as one process with batch N*b.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world_size = size, shuffle, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration yields epoch `epoch`'s order, skipping this rank's first `start` samples."""
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if not self.shuffle:  # evaluation: every sample, in order
            return list(range(self.size))[self.rank :: self.world_size]
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        order = order[: self.size - self.size % self.world_size]  # training: equal shares
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return len(self.indices()) - self.start


def load_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: unreadable image ({error})") from None


def _image_checker(on_bad_image: str, skipped: list[str]):
    def is_valid(path: str) -> bool:
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            return False
        try:
            with Image.open(path) as image:
                image.verify()
            return True
        except Exception as error:  # PIL raises many types for broken files
            if on_bad_image == "error":
                raise DataError(f"{path}: unreadable image ({error}); use --on-bad-image skip to leave such "
                                "files out") from None
            skipped.append(path)
            return False
    return is_valid


class FlatImages(Dataset):
    """Every image in a folder without class subfolders (unlabelled data for pre-training), label 0."""

    classes = ["images"]

    def __init__(self, root: Path, is_valid):
        self.samples = [(str(p), 0) for p in sorted(root.iterdir()) if p.is_file() and is_valid(str(p))]
        if not self.samples:
            raise DataError(f"{root}: no images")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_image(path), label


def _image_folder(root: Path, on_bad_image: str, skipped: list[str]) -> datasets.ImageFolder:
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    try:
        return datasets.ImageFolder(str(root), loader=load_image, is_valid_file=_image_checker(on_bad_image, skipped))
    except FileNotFoundError as error:  # torchvision's words for an empty tree
        raise DataError(f"{root}: empty dataset ({error})") from None


def _digits(seed: int):
    """scikit-learn's 1,797 8x8 digit scans, split 80/20 with a fixed stratified seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target)
    train, test = train_test_split(range(len(labels)), test_size=0.2, stratify=digits.target, random_state=seed)
    names = [str(i) for i in range(10)]
    return TensorImages(images[train], labels[train]), TensorImages(images[test], labels[test]), names


def _scenes(train_images: int, seed: int):
    """The built-in scenes (training/scenes.py): N training images from `seed`, the fixed 5,000 test images."""
    train_images, train_labels, test_images, test_labels = scene_arrays(train_images, seed)
    return TensorImages(train_images, train_labels), TensorImages(test_images, test_labels), list(SCENE_CLASSES)


def _sample(dataset: Dataset, size: int, seed: int) -> Dataset:
    if size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return subset(dataset, sorted(order[:size]))


def _fit_size(dataset: Dataset) -> int:
    """A square input size that fits the data: short side rounded up to a multiple of 32, within [32, 224]."""
    sides = sorted(min(image.shape[-2:]) if torch.is_tensor(image) else min(image.size)
                   for image, _ in (dataset[i] for i in range(min(len(dataset), 16))))
    return int(min(224, max(32, math.ceil(sides[len(sides) // 2] / 32) * 32)))


def _held_out(tree: Dataset, val_split: float | None, seed: int) -> tuple[Dataset, Dataset]:
    """(train, val): a seeded share (default 10%) of one labelled tree held out for validation."""
    share = 0.1 if val_split is None else val_split
    if not 0 < share < 1:
        raise DataError(f"--val-split must be between 0 and 1, got {share}")
    order = torch.randperm(len(tree), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = max(1, int(len(tree) * share))
    return subset(tree, order[cut:]), subset(tree, order[:cut])


def _other_source(data: str, seed: int, val_split: float | None, on_bad_image: str, skipped: list[str],
                  unlabelled: bool, columns: tuple[str | None, str | None]) -> tuple[Dataset, Dataset, list[str]]:
    """(train, val, class names) of a `datasets` data set or WebDataset shards."""
    try:
        if is_hub_data(data):
            tree, val = hub_data(data, *columns, on_bad_image, skipped, unlabelled)
            if val is not None and val_split is None:
                return tree, val, tree.classes
        else:
            tree = ShardImages(data, on_bad_image, skipped, unlabelled)
    except SourceError as error:
        raise DataError(str(error)) from None
    return (*_held_out(tree, val_split, seed), tree.classes)


def build_data(data: str, recipe: Recipe, seed: int = 0, val_split: float | None = None,
               on_bad_image: str = "error", subset: int | None = None, unlabelled: bool = False,
               columns: tuple[str | None, str | None] = (None, None), normalisation: tuple | None = None) -> DataBundle:
    """`data` is "digits", a folder with train/ and val/ subfolders (or one tree and `val_split`), a
    `datasets` data set (`hf:NAME[:SPLIT]`, image and label `columns` found or named) or WebDataset
    shards (`DIR/train-{000..009}.tar`); with `unlabelled` (pre-training) also a flat folder of images,
    labels being ignored anyway.

    `subset` keeps a seeded random sample of at most that many train and val images (quick runs).
    `normalisation` (mean, std) replaces ImageNet's for RGB data: the starting weights' own.
    """
    skipped: list[str] = []
    if data == "digits":
        train, val, names = _digits(seed)
        in_chans, mean, std = 1, (0.5,), (0.5,)
    elif scenes_named(data):
        train, val, names = _scenes(scenes_named(data), seed)
        if val_split is not None:  # choosing a recipe: validate on held-out training images, not the test set
            train, val = _held_out(train, val_split, seed)
        in_chans, (mean, std) = 3, normalisation or (IMAGENET_MEAN, IMAGENET_STD)
    elif is_hub_data(data) or is_shards(data):
        train, val, names = _other_source(data, seed, val_split, on_bad_image, skipped, unlabelled, columns)
        in_chans, (mean, std) = 3, normalisation or (IMAGENET_MEAN, IMAGENET_STD)
    else:
        root = Path(data)
        if not root.is_dir():
            raise DataError(f"{root}: no such data folder")
        in_chans, (mean, std) = 3, normalisation or (IMAGENET_MEAN, IMAGENET_STD)
        if (root / "train").is_dir() and val_split is None:
            train = _image_folder(root / "train", on_bad_image, skipped)
            val = _image_folder(root / "val", on_bad_image, skipped)
            strays = sorted(set(val.classes) - set(train.classes))
            if strays:
                raise DataError(f"class(es) {', '.join(strays)} in {root / 'val'} but not in {root / 'train'}")
            val.samples = [(p, train.class_to_idx[val.classes[i]]) for p, i in val.samples]
            names = train.classes
        else:
            has_classes = any(p.is_dir() for p in root.iterdir())
            if unlabelled and not has_classes:
                tree = FlatImages(root, _image_checker(on_bad_image, skipped))
            else:
                tree = _image_folder(root, on_bad_image, skipped)
            (train, val), names = _held_out(tree, val_split, seed), tree.classes
        if len(train) == 0 or len(val) == 0:
            raise DataError(f"{root}: empty dataset (train {len(train)}, val {len(val)} images)")
    if subset:
        train, val = _sample(train, subset, seed), _sample(val, subset, seed)
    size = recipe.input_size or _fit_size(train)
    val = TransformedSubset(val, list(range(len(val))), eval_transform(size, mean, std, recipe.crop_pct))
    if isinstance(train, TensorImages) and recipe.randaugment is None and not recipe.reprob:  # batched
        transform = train_transform(recipe, size, mean, std)
        train = BatchedCropFlip(train, transform.transforms[1], recipe.hflip, mean, std, seed, transform)
        val = TensorImages(torch.stack([image for image, _ in val]), val.dataset.labels)  # transformed once
    else:
        train = SeededAugmentation(train, train_transform(recipe, size, mean, std), seed)
    return DataBundle(train, val, names, in_chans, size, mean, std, skipped)


@dataclass
class EvalData:
    dataset: Dataset
    class_names: list[str]


def build_eval_data(data: str, model, input_size: int | None = None, crop_pct: float | None = None,
                    columns: tuple[str | None, str | None] = (None, None), split: str = "test") -> EvalData:
    """The evaluation images for `model`: digits' test split, a folder's val/ subfolder, or a whole tree,
    a `datasets` split (`hf:NAME[:SPLIT]`: SPLIT, else validation, else test) or WebDataset shards. With
    `split="train"` (images to calibrate INT8 on, kept apart from those it is evaluated on) the built-in
    sets' training images and a folder's train/ subfolder instead; data sets and shards as named.

    Classes are matched to the model's by name when it knows its class names.
    """
    saved_crop = (getattr(model, "data_config", None) or {}).get("crop_pct")
    train = split == "train"
    if data == "digits":
        train_set, test_set, names = _digits(0)
        dataset = train_set if train else test_set
        channels, crop = 1, crop_pct or saved_crop or 1.0  # 8x8 scans: nothing to crop away
    elif scenes_named(data):
        dataset = _scenes(scenes_named(data), 0)[0] if train else TensorImages(*scene_tests())  # the fixed test set
        names, channels, crop = list(SCENE_CLASSES), 3, crop_pct or saved_crop or 1.0
    elif is_hub_data(data) or is_shards(data):
        try:
            dataset = hub_eval_split(data, *columns) if is_hub_data(data) else ShardImages(data, "error", [])
        except SourceError as error:
            raise DataError(str(error)) from None
        names, channels, crop = dataset.classes, 3 if model.in_chans != 1 else 1, crop_pct or saved_crop
    else:
        root = Path(data)
        part = root / ("train" if train else "val")
        dataset = _image_folder(part if part.is_dir() else root, "error", [])
        names, channels, crop = dataset.classes, 3, crop_pct or saved_crop
        if model.in_chans == 1:
            channels = 1
    if channels != model.in_chans:
        raise DataError(f"the model takes {model.in_chans}-channel images; {data} has {channels}-channel images")
    known = getattr(model, "class_names", None)
    if known:
        strays = [n for n in names if n not in known]
        if strays:
            raise DataError(f"class(es) {', '.join(strays[:5])} of {data} are not among the model's classes")
        label_map = [known.index(n) for n in names]
        names = known
    elif len(names) > model.num_classes:
        raise DataError(f"{data} has {len(names)} classes; the model has {model.num_classes}")
    else:
        label_map = None
    steps = [model_transform(model, input_size=input_size, crop_pct=crop)]
    if channels == 1 and data != "digits":
        steps.insert(0, v2.Grayscale(1))
    transform = v2.Compose(steps) if len(steps) > 1 else steps[0]
    return EvalData(TransformedSubset(dataset, list(range(len(dataset))), transform, label_map), list(names))
