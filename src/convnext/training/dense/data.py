"""Detection and segmentation data in the forms people have them.

Detection: COCO JSON through torchvision's `CocoDetection`, wrapped for transforms v2 so boxes and
masks move with the image; labels become 1..K in the order of the file's categories (0 is the
background torchvision's detectors reserve). Segmentation: an images folder and a masks folder of
index PNGs with the same stems (255 = ignore). Both under ROOT/{train,val}/; the built-in shapes set
has that layout. Every annotation is checked before training: a bad one is one line naming the file
and the record, or, with on_bad_sample="skip", is counted and left out.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..augmentation import SeededJointAugmentation
from ..data import load_image
from .segmentation_metrics import IGNORE

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BadSample(ValueError):
    """An annotation or mask that does not fit its image; the message names the file and the record."""


@dataclass
class DenseData:
    train: Dataset
    val: Dataset
    class_names: list[str]  # without the background for detection; with it (index 0) for segmentation
    input_size: int
    in_chans: int = 3
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    skipped: list[str] = field(default_factory=list)
    has_masks: bool = True  # detection: instance masks in the annotations (else boxes only)


# --- detection --------------------------------------------------------------------------------------------

def check_coco(coco, images_dir: Path, source: Path, on_bad_sample: str, skipped: list[str]) -> list[int]:
    """Drop (or refuse) annotations outside their image, of unknown categories or degenerate, and
    images whose file is missing; returns the image ids kept."""
    categories = set(coco.cats)
    kept_ids = []
    for image_id, image in coco.imgs.items():
        if not (images_dir / image["file_name"]).is_file():
            problem = f"{source}: image {image_id} ({image['file_name']}): file not found in {images_dir}"
            if on_bad_sample != "skip":
                raise BadSample(problem)
            skipped.append(problem)
            continue
        kept_ids.append(image_id)
        for annotation in list(coco.imgToAnns.get(image_id, [])):
            x, y, w, h = annotation["bbox"]
            problem = None
            if annotation["category_id"] not in categories:
                problem = f"category_id {annotation['category_id']} is not among the categories {sorted(categories)}"
            elif w <= 0 or h <= 0:
                problem = f"box {annotation['bbox']} has no area"
            elif x < -1 or y < -1 or x + w > image["width"] + 1 or y + h > image["height"] + 1:
                problem = f"box {annotation['bbox']} (x, y, w, h) lies outside the {image['width']}x{image['height']} image"
            if problem:
                line = f"{source}: annotation {annotation['id']} (image {image['file_name']}): {problem}"
                if on_bad_sample != "skip":
                    raise BadSample(line)
                skipped.append(line)
                coco.imgToAnns[image_id].remove(annotation)
                del coco.anns[annotation["id"]]
    return kept_ids


class CocoInstances(Dataset):
    """(image tv_tensor, {"image_id", "boxes" XYXY, "labels" 1..K, "masks"}) from a COCO JSON file."""

    def __init__(self, split_dir: Path, on_bad_sample: str = "error", skipped: list[str] | None = None):
        from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
        import contextlib
        import io

        source = split_dir / "annotations.json"
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no COCO annotation file (expected ROOT/{{train,val}}/annotations.json)")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
                coco_dataset = CocoDetection(str(split_dir / "images"), str(source))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise BadSample(f"{source}: not a COCO annotation file ({type(error).__name__}: {error})") from None
        self.coco = coco_dataset.coco
        coco_dataset.ids = check_coco(self.coco, split_dir / "images", source, on_bad_sample,
                                      skipped if skipped is not None else [])
        self.category_ids = sorted(self.coco.cats)
        self.label_of = {category: n + 1 for n, category in enumerate(self.category_ids)}
        self.class_names = [self.coco.cats[c]["name"] for c in self.category_ids]
        self.ids = coco_dataset.ids
        # Boxes-only files (no "segmentation" anywhere) train a Faster R-CNN instead of a Mask R-CNN.
        self.has_masks = any("segmentation" in a for a in self.coco.anns.values())
        keys = ("image_id", "boxes", "labels", "masks") if self.has_masks else ("image_id", "boxes", "labels")
        self.dataset = wrap_dataset_for_transforms_v2(coco_dataset, target_keys=keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        image = tv_tensors.Image(v2.functional.pil_to_tensor(image.convert("RGB")))
        height, width = image.shape[-2:]
        if "boxes" not in target:  # an image without annotations: an empty target, not a missing one
            target["boxes"] = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width))
            target["labels"] = torch.zeros(0, dtype=torch.int64)
            if self.has_masks:
                target["masks"] = tv_tensors.Mask(torch.zeros(0, height, width, dtype=torch.uint8))
        target["labels"] = torch.as_tensor([self.label_of[int(c)] for c in target["labels"]], dtype=torch.int64)
        return image, target


def detection_transforms(train: bool, hflip: float) -> v2.Compose:
    """To float in [0, 1] (the detector normalises and resizes itself), flips for training, and
    boxes that degenerated dropped with their labels and masks."""
    steps = [v2.RandomHorizontalFlip(hflip)] if train and hflip else []
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(min_size=1)])


def coco_split(split_dir: Path, train: bool, seed: int = 0, hflip: float = 0.5, on_bad_sample: str = "error",
               skipped: list[str] | None = None, subset: int | None = None) -> SeededJointAugmentation:
    """One COCO split with its transforms, carrying what COCO evaluation needs (coco, ids, label_of)."""
    dataset = CocoInstances(split_dir, on_bad_sample, skipped)
    split = SeededJointAugmentation(_limit(dataset, subset), detection_transforms(train, hflip if train else 0.0), seed)
    split.coco, split.ids, split.label_of = dataset.coco, dataset.ids[: len(split)], dataset.label_of
    split.class_names, split.has_masks = dataset.class_names, dataset.has_masks
    return split


def detection_data(root: Path, seed: int, hflip: float = 0.5, on_bad_sample: str = "error",
                   subset: int | None = None) -> DenseData:
    skipped: list[str] = []
    train, val = (coco_split(root / name, name == "train", seed, hflip, on_bad_sample, skipped, subset)
                  for name in ("train", "val"))
    if train.class_names != val.class_names:
        raise BadSample(f"{root}: train and val name different categories")
    first = train.coco.imgs[train.ids[0]]
    return DenseData(train, val, train.class_names, max(first["height"], first["width"]), skipped=skipped,
                     has_masks=train.has_masks)


# --- segmentation -----------------------------------------------------------------------------------------

def read_classes(root: Path, masks: list[Path]) -> list[str]:
    """ROOT/classes.txt (one name per line, background first), else 0..max label found."""
    listed = root / "classes.txt"
    if listed.is_file():
        return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    highest = 0
    for path in masks:
        with Image.open(path) as mask:
            labels = np.asarray(mask)
        highest = max(highest, int(labels[labels != IGNORE].max(initial=0)))
    return [str(i) for i in range(highest + 1)]


class MaskFolder(Dataset):
    """(image tv_tensor, mask tv_tensor (H, W) of class indices) from images/ and masks/ with the same stems."""

    def __init__(self, split_dir: Path, on_bad_sample: str = "error", skipped: list[str] | None = None):
        images_dir, masks_dir = split_dir / "images", split_dir / "masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: not found (expected ROOT/{{train,val}}/{{images,masks}}/)")
        masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
        self.pairs = []
        for image in sorted(p for p in images_dir.iterdir() if p.is_file()):
            problem = None
            if image.stem not in masks:
                problem = f"no mask {masks_dir / (image.stem + '.png')}"
            else:
                with Image.open(image) as picture, Image.open(masks[image.stem]) as mask:
                    if picture.size != mask.size:
                        problem = f"mask {masks[image.stem].name} is {mask.size[0]}x{mask.size[1]}, the image {picture.size[0]}x{picture.size[1]}"
            if problem:
                line = f"{image}: {problem}"
                if on_bad_sample != "skip":
                    raise BadSample(line)
                (skipped if skipped is not None else []).append(line)
                continue
            self.pairs.append((image, masks[image.stem]))
        if not self.pairs:
            raise BadSample(f"{split_dir}: no image with a mask")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, mask_path = self.pairs[index]
        picture = tv_tensors.Image(v2.functional.pil_to_tensor(load_image(str(image_path))))
        with Image.open(mask_path) as mask:
            labels = np.asarray(mask)
        if labels.ndim != 2:
            raise BadSample(f"{mask_path}: a mask must be one channel of class indices, got shape {labels.shape}")
        return picture, tv_tensors.Mask(torch.from_numpy(labels.astype(np.int64)))


def segmentation_transforms(train: bool, size: int, hflip: float, mean, std, jitter: float = 2.0) -> v2.Compose:
    """Training: random scale 1/jitter-jitter (official 0.5-2), crop `size` (masks padded with 255), flip.
    Both: normalise."""
    steps = []
    if train:
        steps = [*([v2.RandomResize(round(size / jitter), round(size * jitter))] if jitter > 1 else []),
                 v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
                 *([v2.RandomHorizontalFlip(hflip)] if hflip else [])]
    return v2.Compose([*steps, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                       v2.Normalize(mean, std)])


def mask_split(folder: MaskFolder, train: bool, size: int, seed: int = 0, hflip: float = 0.5,
               subset: int | None = None, jitter: float = 2.0) -> SeededJointAugmentation:
    """An image + mask folder with its transforms (evaluation keeps the images' own sizes)."""
    transform = segmentation_transforms(train, size, hflip if train else 0.0, IMAGENET_MEAN, IMAGENET_STD, jitter)
    return SeededJointAugmentation(_limit(folder, subset), transform, seed)


def segmentation_data(root: Path, seed: int, size: int | None = None, hflip: float = 0.5,
                      on_bad_sample: str = "error", subset: int | None = None, jitter: float = 2.0) -> DenseData:
    skipped: list[str] = []
    folders = {name: MaskFolder(root / name, on_bad_sample, skipped) for name in ("train", "val")}
    classes = read_classes(root, [m for _, m in folders["train"].pairs[:200]])
    with Image.open(folders["train"].pairs[0][0]) as first:
        size = size or min(first.size)
    train, val = (mask_split(folders[name], name == "train", size, seed, hflip, subset, jitter)
                  for name in ("train", "val"))
    return DenseData(train, val, classes, size, skipped=skipped)


def _limit(dataset: Dataset, subset: int | None) -> Dataset:
    return dataset if subset is None or subset >= len(dataset) else torch.utils.data.Subset(dataset, range(subset))
