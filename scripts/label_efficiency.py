"""What FCMAE pre-training buys with few labels, on the built-in digits (docs/pretraining.md).

    python scripts/label_efficiency.py --out runs/label-efficiency        # about an hour on 2 CPU cores

1. The 1,437 training digits are written out as PNG files; 10% of them (stratified, seeded) keep their
   labels, another 20% are the validation split, and the 360 test digits are held out.
2. `convnext pretrain` pre-trains ConvNeXt V2-atto with FCMAE on all 1,437 training images, no labels.
3. For each seed, `convnext train` fine-tunes twice with the same recipe and budget on the 10%: from
   the pre-trained encoder and from scratch. The checkpoint with the best validation top-1 is then
   evaluated once on the test split.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader

from convnext.checkpoints.weights import load_pretrained
from convnext.training.data import build_eval_data
from convnext.training.evaluation import evaluate


def write_pngs(out: Path, seed: int) -> None:
    digits = load_digits()
    images = (digits.images * 255 / 16).round().astype("uint8")
    train, test = train_test_split(range(len(images)), test_size=0.2, stratify=digits.target, random_state=0)
    labelled, rest = train_test_split(train, train_size=0.1, stratify=digits.target[train], random_state=seed)
    val, _ = train_test_split(rest, train_size=0.2 / 0.9, stratify=digits.target[rest], random_state=seed)
    splits = {"all": train, f"seed{seed}/train": labelled, f"seed{seed}/val": val, "test": test}
    for split, indices in splits.items():
        for i in indices:
            folder = out / split if split == "all" else out / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / f"{i}.png").exists():
                Image.fromarray(images[i]).save(folder / f"{i}.png")


def convnext(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "convnext.cli", *args, "--json"], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_on_test(run_dir: Path, data: Path) -> dict:
    """Test top-1 of the checkpoint that validated best (training keeps it as checkpoints/best.pth)."""
    model = load_pretrained(run_dir)
    best = torch.load(run_dir / "checkpoints" / "best.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    test = build_eval_data(str(data / "test"), model)
    metrics = evaluate(model, DataLoader(test.dataset, batch_size=64), model.num_classes)
    return {"test_top1": metrics["top1"], "best_epoch_val_top1": best["best_top1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/label-efficiency"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--input-size", default="64")
    parser.add_argument("--pretrain-epochs", default="40")
    parser.add_argument("--finetune-epochs", default="60")
    args = parser.parse_args()
    data = args.out / "data"
    for seed in args.seeds:
        write_pngs(data, seed)
    common = ["--model", "convnextv2_atto", "--input-size", args.input_size]
    pretrained = args.out / "pretrain"
    if not (pretrained / "summary.json").is_file():
        convnext("pretrain", "--data", str(data / "all"), *common, "--epochs", args.pretrain_epochs,
                 "--output-dir", str(pretrained))
    results = {"pretrain": json.loads((pretrained / "summary.json").read_text()), "runs": []}
    for seed in args.seeds:
        for start in ("fcmae", "scratch"):
            run_dir = args.out / f"{start}-seed{seed}"
            weights = ["--weights", str(pretrained)] if start == "fcmae" else []
            done = run_dir / "summary.json"  # a finished run is evaluated again, not retrained
            if not done.is_file():
                convnext("train", "--data", str(data / f"seed{seed}"), *common, *weights, "--seed", str(seed),
                         "--epochs", args.finetune_epochs, "--batch-size", "32", "--lr-base-batch", "64",
                         "--hflip", "0", "--crop-pct", "1", "--ema-decay", "none", "--output-dir", str(run_dir))
            summary = json.loads(done.read_text())
            row = {"start": start, "seed": seed, "wall_s": summary["wall_s"], **best_on_test(run_dir, data)}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    for start in ("fcmae", "scratch"):
        tops = [r["test_top1"] for r in results["runs"] if r["start"] == start]
        results[f"{start}_mean_test_top1"] = sum(tops) / len(tops)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k.endswith("top1")}))


if __name__ == "__main__":
    main()
