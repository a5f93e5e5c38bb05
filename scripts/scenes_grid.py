"""The built-in scenes, two images of every class: docs/scenes.png.

    python scripts/scenes_grid.py [--out docs/scenes.png]

Columns are the deciding shape's kind, rows its fill (two images each); the class is the kind and
fill of the largest shape in the picture (src/convnext/training/scenes.py says why the set is so).
"""
import argparse

import numpy as np

from convnext.training import scenes
from convnext.training.reporting import plt, save_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/scenes.png")
    args = parser.parse_args()
    images, labels = scenes.generate(240, seed=scenes.TEST_SEED)  # the test set's first images
    per_class = 2
    figure, axes = plt.subplots(len(scenes.FILLS) * per_class, len(scenes.KINDS), figsize=(7.2, 6.0))
    for label, name in enumerate(scenes.CLASSES):
        kind, fill = label // len(scenes.FILLS), label % len(scenes.FILLS)
        for n, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            ax = axes[fill * per_class + n][kind]
            ax.imshow(images[index])
            ax.set_xticks([])
            ax.set_yticks([])
            if n == 0 and fill == 0:
                ax.set_title(scenes.KINDS[kind], fontsize=9)
            if kind == 0 and n == 0:
                ax.set_ylabel(scenes.FILLS[fill], fontsize=9)
    figure.suptitle("scenes: the class is the largest shape's kind (columns) and fill (rows)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
