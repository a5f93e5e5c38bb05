"""Scenes: a built-in 24-class RGB task, generated from a seed, hard enough for the roadmap's steps to
differ on it (`convnext train --data scenes`, `scenes:N` for N training images).

Every 64x64 image holds three to five filled shapes on a textured background. Its class is the kind
(disc, square, triangle, diamond, cross, ring, star, hexagon) and the fill (solid, stripes, dots) of
the largest shape: 8 x 3 = 24 classes. The content was chosen once, for these reasons, and not tuned
towards any ranking of the steps:

- **shape against texture**: the class needs the outline and the fill pattern together, and the
  background and the other shapes carry the same patterns, so neither cue alone decides it;
- **scale and position**: the deciding shape's radius is 12-20 px and it sits anywhere;
- **clutter and occlusion**: two to four smaller shapes (3 px to 0.45 of its radius) of any kind and
  fill, some drawn over it;
- **a relation across the image**: which shape decides is "the largest", which needs every shape
  compared with every other, i.e. a receptive field as large as the image;
- colours are drawn at random for every shape, so colour is no shortcut; but shapes are always darker
  than the background, as ink on paper. With either polarity allowed (version 1) no LayerNorm step
  learned at all within the study's budget, nor even ConvNeXt-atto on a single clean shape, while the
  BatchNorm ResNets did (docs/roadmap.md has the probes): a contrast that flips at random averages out
  of features that are nearly linear until the blocks open, and BatchNorm + ReLU rectify from the
  first layer on. Photographs have a convention too (light from above), so one is kept.

The test set (5,000 images, 208 or 209 per class) comes from a fixed seed whatever the training set;
a training set of N images from `seed`. Both are generated once into the cache as uint8 arrays and
reused; the same seed gives the same bytes.
"""
from pathlib import Path

import numpy as np
import torch

from ..runtime.atomic import atomic_file

VERSION = 2  # 2: shapes darker than the background (1: either way)
SIZE = 64
KINDS = ("disc", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon")
FILLS = ("solid", "stripes", "dots")
CLASSES = [f"{kind}-{fill}" for kind in KINDS for fill in FILLS]
TEST_IMAGES, TEST_SEED = 5000, 1_000_003
DEFAULT_TRAIN_IMAGES = 20_000
RADIUS = (12.0, 20.0)  # the deciding shape's radius, px
OTHERS = (3.0, 0.45)  # the other shapes' radius: from 3 px to this share of the deciding one's
SHAPE_MAX, BACKGROUND = 120, (150.0, 230.0)  # shapes' channels below 120, the background's 150-230

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def _outline(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """The shape's mask in its own rotated frame (u, v) around its centre, radius r."""
    d = np.hypot(u, v)
    if kind == "disc":
        return d <= r
    if kind == "ring":
        return (d <= r) & (d >= 0.55 * r)
    if kind == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8 * r
    if kind == "diamond":
        return abs(u) + abs(v) <= r
    if kind == "cross":
        return ((abs(u) <= 0.33 * r) & (abs(v) <= r)) | ((abs(v) <= 0.33 * r) & (abs(u) <= r))
    if kind == "hexagon":
        return np.max([abs(u * np.cos(a) + v * np.sin(a)) for a in (0, np.pi / 3, 2 * np.pi / 3)], axis=0) <= 0.87 * r
    if kind == "triangle":  # inside three half-planes
        return np.min([u * np.cos(a) + v * np.sin(a) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3,
                                                                np.pi / 2 + 4 * np.pi / 3)], axis=0) >= -0.5 * r
    if kind == "star":
        return d <= r * (0.6 + 0.4 * np.cos(5 * np.arctan2(v, u)))
    raise ValueError(kind)


def _pattern(fill: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Where the second colour shows: nowhere (solid), stripes of 3-4 px, or a grid of dots."""
    if fill == "solid":
        return np.zeros(u.shape, bool)
    if fill == "stripes":
        period = rng.uniform(3.0, 4.5)
        return np.floor(u / (period / 2)) % 2 == 0
    period = rng.uniform(3.5, 5.0)
    return np.hypot((u % period) - period / 2, (v % period) - period / 2) <= period * 0.28


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two clearly different dark colours (every channel below the background's lowest)."""
    while True:
        a, b = rng.integers(0, SHAPE_MAX, 3), rng.integers(0, SHAPE_MAX, 3)
        if np.abs(a - b).sum() > 90:
            return a.astype(np.float32), b.astype(np.float32)


def _draw(canvas: np.ndarray, kind: str, fill: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> None:
    angle = rng.uniform(0, 2 * np.pi)
    u = (_X - cx) * np.cos(angle) + (_Y - cy) * np.sin(angle)
    v = -(_X - cx) * np.sin(angle) + (_Y - cy) * np.cos(angle)
    mask = _outline(kind, u, v, r)
    first, second = _colours(rng)
    pattern = _pattern(fill, u, v, rng)
    canvas[mask] = np.where(pattern[mask, None], second, first)


def _background(rng: np.random.Generator) -> np.ndarray:
    """Noise over a light base, with one of the fills' patterns faintly across the whole image."""
    base = rng.uniform(*BACKGROUND, 3).astype(np.float32)
    canvas = np.broadcast_to(base, (SIZE, SIZE, 3)).copy()
    angle = rng.uniform(0, 2 * np.pi)
    u = _X * np.cos(angle) + _Y * np.sin(angle)
    v = -_X * np.sin(angle) + _Y * np.cos(angle)
    pattern = _pattern(FILLS[rng.integers(1, 3)], u, v, rng)
    canvas[pattern] += rng.uniform(-20, 20, 3).astype(np.float32)
    return canvas + rng.normal(0, 6, (SIZE, SIZE, 3)).astype(np.float32)


def render(label: int, rng: np.random.Generator) -> np.ndarray:
    """One (64, 64, 3) uint8 image of class `label`."""
    kind, fill = KINDS[label // len(FILLS)], FILLS[label % len(FILLS)]
    canvas = _background(rng)
    radius = rng.uniform(RADIUS[0], RADIUS[1])
    others = [(KINDS[rng.integers(len(KINDS))], FILLS[rng.integers(len(FILLS))],
               rng.uniform(OTHERS[0], OTHERS[1] * radius)) for _ in range(rng.integers(2, 5))]
    shapes = [(kind, fill, radius), *others]
    order = rng.permutation(len(shapes))  # the deciding shape is drawn first, last or between
    for index in order:
        shape_kind, shape_fill, r = shapes[index]
        cx, cy = rng.uniform(r * 0.6, SIZE - r * 0.6, 2)
        _draw(canvas, shape_kind, shape_fill, cx, cy, r, rng)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def generate(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images, classes balanced (each class count // 24 or one more) in a seeded order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(CLASSES))
    images = np.stack([render(int(label), rng) for label in labels]) if count else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return images, labels.astype(np.int64)


def _cached(count: int, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    path = cache / f"scenes-v{VERSION}-{SIZE}-{count}-{seed}.npz"
    if not path.is_file():
        images, labels = generate(count, seed)
        with atomic_file(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, images=images, labels=labels)
    with np.load(path) as saved:
        return saved["images"], saved["labels"]


def parse(data: str) -> int | None:
    """The training-set size that `data` names ("scenes": the default, "scenes:N"), or None if not scenes."""
    name, _, count = data.partition(":")
    if name != "scenes":
        return None
    if not count:
        return DEFAULT_TRAIN_IMAGES
    if not count.isdigit() or int(count) < len(CLASSES):
        raise ValueError(f"scenes:N needs N ≥ {len(CLASSES)} training images, got {count!r}")
    return int(count)


def _split(count: int, seed: int, cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 64, 64) images and their labels, from the cache (made there the first time)."""
    from ..checkpoints.hub import cache_dir

    images, labels = _cached(count, seed, cache or cache_dir())
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)  # NHWC -> NCHW


def evaluation_set(cache: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed 5,000 test images and labels, whatever the training set."""
    return _split(TEST_IMAGES, TEST_SEED, cache)


def scenes(train_images: int, seed: int = 0, cache: Path | None = None):
    """(train images, train labels, test images, test labels) as uint8 (N, 3, 64, 64) tensors and labels."""
    return (*_split(train_images, seed, cache), *evaluation_set(cache))
