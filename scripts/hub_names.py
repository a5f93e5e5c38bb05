"""Write the table of timm's ConvNeXt weights on the Hugging Face Hub that `convnext list --pretrained`
prints (src/convnext/checkpoints/hub_names.json), from the pretrained configs of the installed timm.

    python scripts/hub_names.py        # after a timm release adds weights

Only models whose timm architecture is one of ours are listed (timm's _ols, _hnf, _rms variants are
other networks). timm publishes no top-1 in its configs; the table says none rather than guess.
"""
import json
from pathlib import Path

import timm
from timm.models import convnext

import convnext as ours

DESTINATION = Path(__file__).parents[1] / "src" / "convnext" / "checkpoints" / "hub_names.json"


def main() -> None:
    registered = set(ours.list_models())
    table = {}
    for architecture, default in sorted(convnext.default_cfgs.items()):
        if architecture not in registered:
            continue
        for tag in default.tags:
            cfg = default.cfgs[tag]
            if not cfg.hf_hub_id:
                continue
            repository = cfg.hf_hub_id.rstrip("/") + ("" if cfg.hf_hub_id.count("/") and not cfg.hf_hub_id.endswith("/")
                                                       else f"/{architecture}.{tag}")
            table.setdefault(architecture, []).append({
                "tag": tag, "hub": f"hf-hub:{repository}", "num_classes": cfg.num_classes,
                "input_size": cfg.input_size[-1], "test_input_size": (cfg.test_input_size or cfg.input_size)[-1],
                "crop_pct": cfg.crop_pct, "mean": list(cfg.mean), "std": list(cfg.std)})
    DESTINATION.write_text(json.dumps({"timm": timm.__version__, "models": table}, indent=1) + "\n")
    print(f"wrote {DESTINATION}: {sum(map(len, table.values()))} weights of {len(table)} models")


if __name__ == "__main__":
    main()
