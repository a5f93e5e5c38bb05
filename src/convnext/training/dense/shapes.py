"""The built-in dense-prediction set: circles, rectangles and triangles on textured backgrounds,
seeded, with exact boxes, instance masks and semantic maps, written out the way users' data comes
(COCO JSON + images, index-PNG masks), so the real loading and evaluation paths run on it.

    root = shapes_dataset()          # cached: <cache>/shapes-v1-<size>-<seed>/{train,val}/...
    root/train/images/000000.png  root/train/annotations.json  root/train/masks/000000.png  root/classes.txt
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ...runtime.atomic import reported_as_write_error

CLASSES = ("circle", "rectangle", "triangle")  # semantic ids 1..3, COCO category ids 1..3; 0 is background
SPLITS = {"train": 400, "val": 100}
VERSION = 1


def _draw_shape(kind: int, box: tuple[int, int, int, int], draw: ImageDraw.ImageDraw, fill) -> None:
    x0, y0, x1, y1 = box
    if kind == 1:
        draw.ellipse(box, fill=fill)
    elif kind == 2:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


def _picture(rng: np.random.Generator, size: int) -> tuple[Image.Image, np.ndarray, list[dict]]:
    """One image, its semantic map, and its instances (kind, mask)."""
    low = rng.uniform(40, 200, (6, 6, 3)).astype(np.uint8)  # smooth colour texture plus grain
    background = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.float32)
    background += rng.normal(0, 12, (size, size, 3))
    image = Image.fromarray(background.clip(0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
    semantic = np.zeros((size, size), np.uint8)
    taken = np.zeros((size, size), bool)
    instances = []
    for _ in range(rng.integers(1, 4)):
        for _attempt in range(20):  # shapes do not overlap, so every box and mask is exact
            extent = int(rng.integers(size // 6, size // 2.5))
            x0, y0 = (int(v) for v in rng.integers(0, size - extent, 2))
            kind = int(rng.integers(1, len(CLASSES) + 1))
            canvas = Image.new("L", (size, size))
            _draw_shape(kind, (x0, y0, x0 + extent, y0 + int(extent * rng.uniform(0.7, 1.0))), ImageDraw.Draw(canvas), 1)
            mask = np.asarray(canvas, bool)
            if not (np.pad(mask, 2)[:-4, 2:-2] | np.pad(mask, 2)[4:, 2:-2] | mask)[taken].any():
                break
        else:
            continue
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        image.paste(Image.new("RGB", (size, size), colour), mask=Image.fromarray(mask.astype(np.uint8) * 255))
        semantic[mask], taken = kind, taken | mask
        instances.append({"kind": kind, "mask": mask})
    return image, semantic, instances


def _coco_annotation(n: int, image_id: int, kind: int, mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rows, cols = np.nonzero(mask)
    x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"id": n, "image_id": image_id, "category_id": kind, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": int(mask.sum()), "iscrowd": 0, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}


def write_shapes(root: Path, size: int = 128, seed: int = 0, splits: dict[str, int] = SPLITS) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(("background", *CLASSES)) + "\n")
    for split, count in splits.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        images, annotations = [], []
        for image_id in range(1, count + 1):
            picture, semantic, instances = _picture(rng, size)
            name = f"{image_id:06d}.png"
            picture.save(root / split / "images" / name)
            Image.fromarray(semantic).save(root / split / "masks" / name)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for instance in instances:
                annotations.append(_coco_annotation(len(annotations) + 1, image_id, instance["kind"], instance["mask"]))
        categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES, start=1)]
        (root / split / "annotations.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def shapes_dataset(size: int = 128, seed: int = 0, cache: Path | None = None) -> Path:
    """The set's folder, generated once per (size, seed) into the cache, atomically."""
    from ...checkpoints.hub import cache_dir

    root = (cache or cache_dir()) / f"shapes-v{VERSION}-{size}-{seed}"
    if (root / "classes.txt").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        with reported_as_write_error(root):  # a full disk: one line naming the set's folder
            write_shapes(tmp, size, seed)
        os.replace(tmp, root)  # another process may have won the race: its copy is the same
    except OSError:
        if not (root / "classes.txt").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


BUILT_IN = "shapes"  # what --data names the built-in set by


def data_root(data: str) -> Path:
    """A dense --data argument as a folder: the built-in shapes (generated once), or the path given."""
    return shapes_dataset() if data == BUILT_IN else Path(data)
