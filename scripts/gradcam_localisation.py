"""Does the Grad-CAM peak fall on the object that decides the class? (docs/serving.md)

A synthetic task: 96² images of smooth grey texture holding one coloured shape (disc, square or
triangle) at a random position, the class being its colour (red, green, blue), or no shape (a fourth
class, so that every colour class needs evidence of its own). A small model is trained from scratch
on fresh images each step, either until held-out accuracy reaches --stop-at or for --steps; then, on
200 new shape images, the share whose heat-map peak (the centre of the map's highest cell) lies inside
the shape (and within one cell of the stage's grid of it), per stage.

    python scripts/gradcam_localisation.py [--model convnext_test] [--seeds 5] [--stop-at 0.95 | --steps 1500]
        [--loss cross-entropy|hinge] [--task colour|form] [--label-smoothing 0.1] [--dims 32 64 96 128] [--size 96]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

import convnext
from convnext.deploy.gradcam import grad_cam, spatial_steps
from convnext.runtime.hardware import describe

SIZE = 96


def shape_images(n: int, generator: torch.Generator, task: str = "colour",
                 size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images normalised, labels 0-2 (the shape's colour, or its form) / 3 none, masks of the shape);
    at another size than 96², the shapes and the texture scale with the image."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.randint(0, 4, (n,), generator=generator)
    images, masks = [], []
    for label in labels.tolist():
        form, radius = int(torch.randint(0, 3, (1,), generator=generator)), int(torch.randint(11, 16, (1,), generator=generator)) * size // SIZE
        cy, cx = (int(v) for v in torch.randint(radius + 1, size - radius - 1, (2,), generator=generator))
        dy, dx = (rows - cy).float(), (cols - cx).float()
        forms = [dy**2 + dx**2 <= radius**2, (dy.abs() <= 0.85 * radius) & (dx.abs() <= 0.85 * radius),
                 (dy <= 0.8 * radius) & (dy >= -radius) & (dx.abs() <= 0.55 * (dy + radius))]
        mask = forms[label if task == "form" and label < 3 else form]
        texture = F.interpolate(torch.rand(1, 1, 12, 12, generator=generator), size=(size, size), mode="bilinear")[0, 0]
        image = (0.45 + 0.1 * texture + 0.03 * torch.randn(size, size, generator=generator)).expand(3, -1, -1)
        if label == 3:
            mask = torch.zeros_like(mask)
        else:
            colour = torch.full((3, 1, 1), 0.15)
            # the colour is the class, or random when the form is
            colour[int(torch.randint(0, 3, (1,), generator=generator)) if task == "form" else label] = 0.95
            image = torch.where(mask, colour, image)
        images.append(image)
        masks.append(mask)
    return (torch.stack(images) - 0.45) / 0.25, labels, torch.stack(masks)


LOSSES = {
    # These two train only the differences between class scores (the multi-class margin stops once
    # they reach 1), so a class's own score need not rise with its own evidence.
    "cross-entropy": lambda logits, labels, smoothing: F.cross_entropy(logits, labels, label_smoothing=smoothing),
    "hinge": lambda logits, labels, smoothing: F.multi_margin_loss(logits, labels),
    # Each score must separate its class from every other image, "no shape" included: the score is the
    # class's own evidence, which is what Grad-CAM differentiates.
    "one-vs-rest-logistic": lambda logits, labels, smoothing: F.binary_cross_entropy_with_logits(
        logits, F.one_hot(labels, logits.shape[1]).float()),
    "one-vs-rest-hinge": lambda logits, labels, smoothing: F.relu(1 - (2 * F.one_hot(labels, logits.shape[1]) - 1) * logits).mean(),
}


def train(model_name: str, seed: int, steps: int, stop_at: float | None = None, task: str = "colour",
          loss_name: str = "cross-entropy", label_smoothing: float = 0.0, dims=None,
          size: int = SIZE) -> tuple[torch.nn.Module, int, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = convnext.create_model(model_name, num_classes=4, **({"dims": dims} if dims else {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.05)
    x_val, y_val, _ = shape_images(100, torch.Generator().manual_seed(10_000 + seed), task, size)
    for step in range(1, steps + 1):
        x, y, _ = shape_images(32, generator, task, size)
        loss = LOSSES[loss_name](model.train()(x), y, label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if stop_at is not None and step % 25 == 0:
            with torch.no_grad():
                if (model.eval()(x_val).argmax(1) == y_val).float().mean() >= stop_at:
                    break
    return model.eval(), step, loss.item()


def held_out(seed: int, task: str = "colour", size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """200 new images that hold a shape."""
    x, y, masks = shape_images(300, torch.Generator().manual_seed(20_000 + seed), task, size)
    keep = (y < 3).nonzero()[:200, 0]
    return x[keep], y[keep], masks[keep]


def localisation(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, stage: int) -> dict:
    """Shares of images whose map peak (the centre of the map's highest cell, where its bilinear
    upsampling peaks too) lies inside the shape, and within one cell of the map's grid of it."""
    cams = grad_cam(model, x, stage=stage)
    grid, cell = cams.maps.shape[-1], x.shape[-1] // cams.maps.shape[-1]
    peaks = cams.maps.flatten(1).argmax(1)
    images, peak_rows, peak_cols = torch.arange(len(x)), (peaks // grid) * cell + cell // 2, (peaks % grid) * cell + cell // 2
    grown = F.max_pool2d(masks[:, None].float(), 2 * cell + 1, stride=1, padding=cell)[:, 0]
    return {"inside": round(masks[images, peak_rows, peak_cols].float().mean().item(), 3),
            "within_cell": round(grown[images, peak_rows, peak_cols].mean().item(), 3), "empty": sum(cams.empty)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="convnext_test")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--stop-at", type=float, help="stop training at this held-out accuracy (checked every 25 steps)")
    parser.add_argument("--steps", type=int, default=1500, help="the most training steps")
    parser.add_argument("--task", choices=("colour", "form"), default="colour", help="what decides the class")
    parser.add_argument("--loss", choices=tuple(LOSSES), default="cross-entropy")
    parser.add_argument("--dims", type=int, nargs=4, help="channel widths per stage (default: the model's)")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--size", type=int, default=SIZE, help="image side (shapes scale with it)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    print(describe("cpu"))
    rows = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        model, steps, loss = train(args.model, seed, args.steps, args.stop_at, args.task, args.loss,
                                   args.label_smoothing, args.dims, args.size)
        x, y, masks = held_out(seed, args.task, args.size)
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
        row = {"seed": seed, "steps": steps, "last_loss": round(loss, 4), "accuracy": accuracy,
               "seconds": round(time.perf_counter() - started, 1), "inside": {}, "within_cell": {}, "empty": {}}
        for stage in range(len(spatial_steps(model))):
            for key, value in localisation(model, x, masks, stage).items():
                row[key][stage] = value
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"cpu": describe("cpu"), "args": vars(args), "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
