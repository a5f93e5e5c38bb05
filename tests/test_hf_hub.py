"""Weights and data where users keep them: Hub repositories (timm's, transformers', ours) read through
huggingface_hub's cache under HF_HUB_OFFLINE=1, a cache these tests build in a temporary HF_HOME in the
layout huggingface_hub reads; `datasets` folders and WebDataset shards the tests write."""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from PIL import Image

import convnext
from convnext.cli import main
from convnext.deploy.predictor import Predictor
from convnext.deploy.serving.images import decode
from helpers import max_abs_diff

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class HubCache:
    """A Hub cache in huggingface_hub's layout: models--ORG--NAME/{refs/BRANCH, snapshots/COMMIT/FILE}."""

    def __init__(self, root: Path):
        self.root = root

    def put(self, repo: str, folder: Path, branch: str = "main") -> str:
        commit = hashlib.sha1(f"{repo}@{branch}".encode()).hexdigest()
        base = self.root / f"models--{repo.replace('/', '--')}"
        snapshot = base / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in Path(folder).iterdir():
            (snapshot / file.name).write_bytes(file.read_bytes())
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs" / branch).write_text(commit)
        return commit


@pytest.fixture
def hub(tmp_path, monkeypatch) -> HubCache:
    home = tmp_path / "hf"
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)  # for subprocesses
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))  # this process imported it already
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return HubCache(home / "hub")


def timm_repo(folder: Path, classes=5, labels=None, **cfg):
    """A repository as timm publishes one (`save_for_hf`: config.json with pretrained_cfg, weights)."""
    import timm
    from timm.models._hub import save_for_hf

    model = timm.create_model("convnext_atto", num_classes=classes, pretrained_cfg_overlay=cfg).eval()
    save_for_hf(model, folder, model_config={"label_names": labels} if labels else None, safe_serialization=True)
    return model


def picture(path: Path, size=(80, 60)) -> Path:
    generator = torch.Generator().manual_seed(1)
    pixels = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def test_a_timm_repository_loads_by_its_hub_name_with_classes_and_revision(hub, tmp_path):
    reference = timm_repo(tmp_path / "v1", labels=list("abcde"))
    hub.put("timm/convnext_atto.test_in1k", tmp_path / "v1")
    other = timm_repo(tmp_path / "v2")
    hub.put("timm/convnext_atto.test_in1k", tmp_path / "v2", branch="v2")
    x = torch.randn(2, 3, 64, 64)
    ours = convnext.create_model("hf-hub:timm/convnext_atto.test_in1k").eval()
    assert ours.model_name == "convnext_atto" and ours.num_classes == 5 and ours.class_names == list("abcde")
    assert max_abs_diff(ours(x), reference(x)) < 1e-5
    pinned = convnext.create_model("hf-hub:timm/convnext_atto.test_in1k", revision="v2").eval()
    assert max_abs_diff(pinned(x), other(x)) < 1e-5
    assert max_abs_diff(convnext.create_model("hf-hub:timm/convnext_atto.test_in1k@v2").eval()(x), other(x)) < 1e-5
    # timm's tag on a registered name, and a new head for other classes
    tagged = convnext.create_model("convnext_atto", pretrained="test_in1k", num_classes=5).eval()
    assert max_abs_diff(tagged(x), reference(x)) < 1e-5
    assert convnext.create_model("convnext_atto", pretrained="test_in1k", num_classes=3).num_classes == 3


def test_transformers_and_our_repositories_load_on_every_command(hub, tmp_path, capsys):
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    config = ConvNextConfig(depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320], num_labels=3,
                            id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    peer = ConvNextForImageClassification(config).eval()
    peer.save_pretrained(tmp_path / "peer")
    ConvNextImageProcessor(size={"shortest_edge": 96}, crop_pct=0.9).save_pretrained(tmp_path / "peer")
    hub.put("someone/convnext-atto-pets", tmp_path / "peer")
    model = convnext.create_model("hf-hub:someone/convnext-atto-pets").eval()
    x = torch.randn(2, 3, 96, 96)
    # transformers' final LayerNorm has eps 1e-12 (its config's layer_norm_eps), the official one 1e-6
    assert max_abs_diff(model(x), peer(x).logits) < 1e-4 and model.class_names == ["cat", "dog", "fox"]
    assert model.data_config["input_size"] == 96 and model.data_config["crop_pct"] == 0.9
    image = picture(tmp_path / "photo.png")
    assert main(["predict", "--weights", "hf-hub:someone/convnext-atto-pets", str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] in {"cat", "dog", "fox"}
    # Ours, as `convnext convert --to hf` writes it, and as save_pretrained does
    assert main(["convert", "hf-hub:someone/convnext-atto-pets", str(tmp_path / "ours"), "--to", "ours"]) == 0
    hub.put("me/atto-ours", tmp_path / "ours")
    assert max_abs_diff(convnext.create_model("hf-hub:me/atto-ours").eval()(x), model(x)) < 1e-6
    for fmt in ("hf", "timm"):  # what `convnext convert --to hf|timm` writes, as a repository
        assert main(["convert", "hf-hub:me/atto-ours", str(tmp_path / f"to-{fmt}"), "--to", fmt]) == 0
        hub.put(f"me/atto-{fmt}", tmp_path / f"to-{fmt}")
        again = convnext.create_model(f"hf-hub:me/atto-{fmt}").eval()
        assert max_abs_diff(again(x), model(x)) < 1e-6 and again.class_names == ["cat", "dog", "fox"]
    capsys.readouterr()
    assert main(["eval", "--weights", "hf-hub:me/atto-ours", "--data", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("v2", [False, True], ids=["convnext", "convnextv2"])
def test_a_transformers_backbone_repository_is_our_backbone_and_starts_a_classifier(hub, tmp_path, caplog, v2):
    from transformers import ConvNextBackbone, ConvNextConfig, ConvNextV2Backbone, ConvNextV2Config

    config_class, model_class = (ConvNextV2Config, ConvNextV2Backbone) if v2 else (ConvNextConfig, ConvNextBackbone)
    peer = model_class(config_class(depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320], layer_norm_eps=1e-6,
                                    out_features=["stage2", "stage3", "stage4"])).eval()
    with torch.no_grad():
        for p in peer.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the init: GRN and every norm take part
    peer.save_pretrained(tmp_path / "backbone")
    hub.put("someone/atto-backbone", tmp_path / "backbone")
    ours = convnext.create_model("hf-hub:someone/atto-backbone").eval()
    assert isinstance(ours, convnext.ConvNeXtBackbone) and ours.out_indices == (1, 2, 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for mine, theirs in zip(ours(x), peer(x).feature_maps):
            assert max_abs_diff(mine, theirs) < 1e-5
    classifier = convnext.load_weights(convnext.create_model("convnextv2_atto" if v2 else "convnext_atto", num_classes=4),
                                       "hf-hub:someone/atto-backbone")
    assert torch.equal(classifier.stages[2][5].dwconv.weight, ours.stages[2][5].dwconv.weight)
    assert any("per-stage norms are not part of a classifier" in r.getMessage() for r in caplog.records)


def test_the_preprocessing_travels_with_the_weights_as_timm_applies_it(hub, tmp_path):
    """A CLIP-normalised repository (another mean and std, crop 0.9): our prediction on an image file
    equals timm's resolve_data_config + create_transform path, probabilities and all."""
    import timm

    timm_repo(tmp_path / "clip", mean=CLIP_MEAN, std=CLIP_STD, crop_pct=0.9, input_size=(3, 64, 64))
    hub.put("timm/convnext_atto.clip_test", tmp_path / "clip")
    image = picture(tmp_path / "photo.png", size=(97, 75))
    theirs = timm.create_model("hf-hub:timm/convnext_atto.clip_test", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=theirs), is_training=False)
    with torch.no_grad():
        expected = theirs(transform(Image.open(image).convert("RGB"))[None]).softmax(dim=1)
    predictor = Predictor(convnext.create_model("hf-hub:timm/convnext_atto.clip_test"))
    got = predictor(predictor.transform(decode(image.read_bytes(), "RGB"))[None])
    assert got.argmax() == expected.argmax() and max_abs_diff(got, expected) < 1e-6
    assert tuple(predictor.mean) == CLIP_MEAN and predictor.crop_pct == 0.9 and predictor.input_size == 64
    # Fine-tuning normalises the data as the weights were trained; exports write it back.
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(4):
            picture(tmp_path / "pets" / name / f"{i}.png")
    assert main(["train", "--weights", "hf-hub:timm/convnext_atto.clip_test", "--data", str(tmp_path / "pets"),
                 "--epochs", "1", "--batch-size", "4", "--input-size", "64", "--output-dir", str(tmp_path / "run")]) == 0
    tuned = convnext.load_pretrained(tmp_path / "run")
    assert tuple(tuned.data_config["mean"]) == CLIP_MEAN and tuple(tuned.data_config["std"]) == CLIP_STD
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "timm"), "--to", "timm"]) == 0
    written = json.loads((tmp_path / "timm" / "config.json").read_text())["pretrained_cfg"]
    assert tuple(written["mean"]) == CLIP_MEAN and written["interpolation"] == "bicubic"


def test_a_missing_repository_offline_is_one_line(hub, capsys):
    assert main(["predict", "--weights", "hf-hub:nobody/nothing", "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf-hub:nobody/nothing" in err and "HF_HUB_OFFLINE" in err


def test_a_three_channel_checkpoint_starts_a_grey_model(tmp_path, caplog):
    """As timm adapts a first conv: the RGB filters summed for one channel, said once."""
    source = convnext.create_model("convnextv2_test")
    convnext.save_pretrained(source, tmp_path / "rgb")
    assert main(["train", "--model", "convnextv2_test", "--weights", str(tmp_path / "rgb"), "--epochs", "1",
                 "--max-steps", "1", "--subset", "64", "--batch-size", "32", "--output-dir", str(tmp_path / "run")]) == 0
    said = [r.getMessage() for r in caplog.records if "input channels" in r.getMessage()]
    assert len(said) == 1 and "the model 1: its RGB filters summed" in said[0]
    grey = convnext.load_pretrained(tmp_path / "run")
    assert grey.in_chans == 1 and grey.downsample_layers[0][0].weight.shape[1] == 1
    repeated = convnext.create_model("convnextv2_test", in_chans=5)
    convnext.load_weights(repeated, tmp_path / "rgb")
    expected = source.downsample_layers[0][0].weight.repeat(1, 2, 1, 1)[:, :5] * 3 / 5
    assert torch.allclose(repeated.downsample_layers[0][0].weight, expected)


def test_list_pretrained_names_official_tags_and_hub_names(capsys):
    assert main(["list", "convnext_tiny", "--pretrained", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_tag = {r["tag"]: r for r in rows}
    assert by_tag["in1k"]["top1"] == 82.1 and by_tag["in1k"]["source"].startswith("https://dl.fbaipublicfiles.com/")
    assert by_tag["in12k_ft_in1k"]["source"] == "hf-hub:timm/convnext_tiny.in12k_ft_in1k"
    assert main(["list", "convnext_atto", "--pretrained"]) == 0
    assert "hf-hub:timm/convnext_atto.d2_in1k" in capsys.readouterr().out


# --- data -------------------------------------------------------------------------------------------

def coloured(n: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    """n 40x40 pictures whose class (0, 1, 2) is their dominant colour."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for _ in range(n):
        label = int(torch.randint(0, 3, (1,), generator=generator))
        pixels = torch.rand(40, 40, 3, generator=generator) * 0.4
        pixels[..., label] += 0.6
        images.append(Image.fromarray((pixels * 255).to(torch.uint8).numpy()))
        labels.append(label)
    return images, labels


def test_a_datasets_folder_trains_and_evaluates_with_its_class_names(tmp_path, capsys):
    import datasets

    features = datasets.Features({"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["red", "green", "blue"])})
    splits = {name: datasets.Dataset.from_dict(dict(zip(("picture", "kind"), coloured(n, seed))), features=features)
              for name, n, seed in (("train", 48, 0), ("validation", 12, 1))}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "colours")
    run_dir = tmp_path / "run"
    assert main(["train", "--data", f"hf:{tmp_path / 'colours'}", "--model", "convnext_test", "--epochs", "1",
                 "--batch-size", "16", "--input-size", "32", "--output-dir", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and convnext.load_pretrained(run_dir).class_names == ["red", "green", "blue"]
    assert main(["eval", "--weights", str(run_dir), "--data", f"hf:{tmp_path / 'colours'}:train", "--json",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 48
    # A row whose image cannot be read: one line naming it, or counted and left out
    broken = splits["train"].cast_column("picture", datasets.Image(decode=False))
    rows = broken.to_dict()
    rows["picture"][5] = {"bytes": b"not an image", "path": None}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=broken.features),
                          "validation": splits["validation"]}).save_to_disk(tmp_path / "broken")
    capsys.readouterr()  # datasets' own progress bars
    assert main(["train", "--data", f"hf:{tmp_path / 'broken'}", "--model", "convnext_test", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 5: unreadable image" in err
    assert main(["train", "--data", f"hf:{tmp_path / 'broken'}", "--model", "convnext_test", "--epochs", "1",
                 "--batch-size", "16", "--input-size", "32", "--on-bad-image", "skip", "--output-dir",
                 str(tmp_path / "skip")]) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out
    # Columns named by the user; a missing one is one line
    assert main(["train", "--data", f"hf:{tmp_path / 'colours'}", "--image-column", "photo", "--model",
                 "convnext_test", "--epochs", "1"]) == 2
    assert "no image column 'photo'" in capsys.readouterr().err


def write_shards(folder: Path, per_shard: int, shards: int, bad: int | None = None) -> str:
    import webdataset

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = coloured(per_shard * shards, seed=3)
    for s in range(shards):
        with webdataset.TarWriter(str(folder / f"train-{s:06d}.tar")) as sink:
            for i in range(s * per_shard, (s + 1) * per_shard):
                encoded = b"not a png" if i == bad else _png(images[i])
                sink.write({"__key__": f"{i:06d}", "png": encoded, "cls": str(labels[i]).encode()})
    (folder / "classes.txt").write_text("red\ngreen\nblue\n")
    return str(folder / f"train-{{000000..{shards - 1:06d}}}.tar")


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def seed_hub_dataset(home: Path, repo: str, splits: dict, features, monkeypatch) -> None:
    """The datasets cache that an online `load_dataset(repo)` leaves, so that HF_HUB_OFFLINE=1 finds it."""
    import shutil

    import datasets
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    cache = home / "datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    files = {}
    for split, table in splits.items():
        files[split] = str(home / f"{split}.parquet")
        table.to_parquet(files[split])
    namespace, name = repo.split("/")
    Parquet(cache_dir=str(cache), dataset_name=f"{namespace}___{name}", hash="0" * 16, data_files=files,
            features=features).download_and_prepare()
    # Where an online load keeps it: the namespace as written, the name snake-cased, the config "default".
    target = cache / f"{namespace}___{camelcase_to_snakecase(name)}" / "default"
    prepared = next(cache.glob("*___*/default-*"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(prepared, target)
    for arrow in target.glob("*/*/*.arrow"):
        arrow.rename(arrow.with_name(f"{camelcase_to_snakecase(name)}-{arrow.name.rsplit('-', 1)[-1]}"))


def test_the_readme_fine_tunes_a_hub_model_on_a_hub_data_set(hub, tmp_path, monkeypatch, capsys):
    import shlex

    import datasets

    from test_readme import README

    timm_repo(tmp_path / "atto", classes=1000)
    hub.put("timm/convnext_atto.d2_in1k", tmp_path / "atto")
    features = datasets.Features({"image": datasets.Image(),
                                  "labels": datasets.ClassLabel(names=["angular_leaf_spot", "bean_rust", "healthy"])})
    splits = {split: datasets.Dataset.from_dict(dict(zip(("image", "labels"), coloured(n, seed))), features=features)
              for split, n, seed in (("train", 32, 0), ("validation", 8, 1), ("test", 8, 2))}
    seed_hub_dataset(tmp_path / "hf", "AI-Lab-Makerere/beans", splits, features, monkeypatch)
    block = README.split("### Weights and data on the Hugging Face Hub", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    for line in block.strip().splitlines():
        assert main(shlex.split(line)[1:]) == 0, line
    out = capsys.readouterr().out
    assert "convnext_atto" in out and "on 8 images" in out
    assert convnext.load_pretrained(tmp_path / "runs" / "beans").class_names == features["labels"].names


def test_webdataset_shards_train_evaluate_and_name_a_bad_sample(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    pattern = write_shards(tmp_path / "shards", per_shard=20, shards=3)
    run_dir = tmp_path / "run"
    assert main(["train", "--data", pattern, "--model", "convnext_test", "--epochs", "1", "--batch-size", "18",
                 "--input-size", "32", "--output-dir", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and convnext.load_pretrained(run_dir).class_names == ["red", "green", "blue"]
    assert main(["eval", "--weights", str(run_dir), "--data", pattern, "--json", "--output-dir", str(tmp_path / "e")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 60
    # Shards behind a URL (any scheme webdataset's gopen opens; a pipe here) stream once into the cache
    piped = f"pipe:cat {tmp_path / 'shards'}/train-{{000000..000002}}.tar"
    assert main(["eval", "--weights", str(run_dir), "--data", piped, "--json", "--output-dir", str(tmp_path / "e2")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 60
    broken = write_shards(tmp_path / "broken", per_shard=10, shards=2, bad=13)
    assert main(["train", "--data", broken, "--model", "convnext_test", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-000001.tar:000013: unreadable image" in err
    assert main(["train", "--data", broken, "--model", "convnext_test", "--epochs", "1", "--batch-size", "8",
                 "--input-size", "32", "--on-bad-image", "skip", "--output-dir", str(tmp_path / "skip")]) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out


def test_pretraining_reads_shards_and_datasets_folders_without_their_labels(tmp_path):
    import datasets

    pattern = write_shards(tmp_path / "shards", per_shard=12, shards=2)
    assert main(["pretrain", "--data", pattern, "--model", "convnextv2_test", "--epochs", "1", "--max-steps", "1",
                 "--batch-size", "8", "--input-size", "64", "--output-dir", str(tmp_path / "p1")]) == 0
    images, _ = coloured(16, seed=5)
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})).save_to_disk(
        tmp_path / "unlabelled")
    assert main(["pretrain", "--data", f"hf:{tmp_path / 'unlabelled'}", "--model", "convnextv2_test", "--epochs", "1",
                 "--max-steps", "1", "--batch-size", "8", "--input-size", "64", "--output-dir", str(tmp_path / "p2")]) == 0
    assert (tmp_path / "p1" / "model.safetensors").is_file() and (tmp_path / "p2" / "model.safetensors").is_file()


def test_two_processes_over_shards_see_every_sample_once_and_match_one(tmp_path):
    """DDP over shards: 2 processes x batch 9 train as 1 process x batch 18 (float32 tolerance)."""
    pattern = write_shards(tmp_path / "shards", per_shard=20, shards=3)
    common = ["--data", pattern, "--model", "convnext_test", "--epochs", "1", "--input-size", "32", "--drop-path", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [sys.executable, "-m", "convnext.cli", "train", *common, "--batch-size", "18", "--output-dir",
              str(tmp_path / "one")]
    double = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "convnext.cli",
              "train", *common, "--batch-size", "9", "--output-dir", str(tmp_path / "two")]
    for command in (single, double):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    one, two = (convnext.load_pretrained(tmp_path / d).state_dict() for d in ("one", "two"))
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-5), key
    assert tarfile.is_tarfile(tmp_path / "shards" / "train-000000.tar")


def test_a_transformers_upernet_repository_segments_by_its_hub_name(hub, tmp_path, capsys):
    from transformers import ConvNextConfig

    from test_dense_models import hf_upernet

    torch.manual_seed(0)
    peer = hf_upernet(ConvNextConfig)
    peer.save_pretrained(tmp_path / "upernet")
    hub.put("openmmlab/upernet-convnext-test", tmp_path / "upernet")
    ours = convnext.load_dense("hf-hub:openmmlab/upernet-convnext-test").eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        assert max_abs_diff(ours(x)["out"], peer(pixel_values=x).logits) < 1e-5
    image = picture(tmp_path / "street.png", size=(96, 128))
    assert main(["segment", "predict", "--weights", "hf-hub:openmmlab/upernet-convnext-test", str(image),
                 "--output", str(tmp_path / "drawn"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["classes"]
