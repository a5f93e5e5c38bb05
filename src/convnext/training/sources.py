"""Labelled images from beyond a folder: a Hugging Face `datasets` data set (`--data hf:NAME[:SPLIT]`)
and WebDataset tar shards (`--data 'shards/train-{000000..000099}.tar'`).

Both read as an ImageFolder does, (PIL image, label) by index, so the rest of the data path (the split
into train and val, the seeded augmentation, `EpochSampler`, which deals every sample once per epoch
to exactly one DDP rank and loader worker, and bit-identical resume) is the same for every source.
Shards are indexed once (tar headers: where each sample's members lie) and read by index, as
webdataset's indexed reader (wids) does, rather than streamed in shard order: that is what lets a
resumed run and any number of ranks and workers see exactly the samples an uninterrupted run would.
Shards behind a URL (`https://`, `pipe:aws s3 cp s3://... -`, any scheme webdataset's `gopen` opens)
are streamed once into the cache (CONVNEXT_CACHE/shards) and read from there.

    convnext train --data hf:beans --model convnext_atto --pretrained d2_in1k
    convnext train --data hf:./saved_dataset:train --image-column img --label-column fine_label
    convnext train --data 'shards/train-{000000..000009}.tar'
"""
import hashlib
import io
import re
import shutil
import tarfile
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

HUB_PREFIX = "hf:"
SHARD_SUFFIX = ".tar"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp")  # WebDataset's extensions for the image of a sample
LABEL_KEYS = ("cls", "label")
TRAIN_SPLITS, VAL_SPLITS = ("train",), ("validation", "val", "valid", "test")


class SourceError(ValueError):
    """A data set that cannot be read as asked (the message names it and what to do)."""


def is_hub_data(data: str) -> bool:
    return data.startswith(HUB_PREFIX)


def is_shards(data: str) -> bool:
    return data.endswith(SHARD_SUFFIX)


def _rgb(data: bytes, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises many types for broken data
        raise SourceError(f"{where}: unreadable image ({error})") from None


def _readable(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001 -- any failure means a bad image
        return False


class HubImages(Dataset):
    """One split of a `datasets` data set: its image column decoded to RGB, its label column as ints."""

    def __init__(self, split, name: str, image_column: str, label_column: str | None, classes: list[str],
                 keep: list[int]):
        self.split, self.name, self.image_column, self.label_column = split, name, image_column, label_column
        self.classes, self.keep = classes, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int):
        row = self.split[self.keep[index]]
        cell = row[self.image_column]
        label = int(row[self.label_column]) if self.label_column else 0
        return _rgb(cell["bytes"] or Path(cell["path"]).read_bytes(), f"{self.name} row {self.keep[index]}"), label


def _columns(features, image_column: str | None, label_column: str | None, name: str) -> tuple[str, str | None]:
    import datasets

    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
    image_column = image_column or (images[0] if images else None)
    label_column = label_column or (labels[0] if labels else None)
    if image_column not in features:
        raise SourceError(f"{name}: no image column{f' {image_column!r}' if image_column else ''} (columns: "
                          f"{', '.join(features)}); name it with --image-column")
    if label_column is not None and label_column not in features:
        raise SourceError(f"{name}: no label column {label_column!r} (columns: {', '.join(features)})")
    return image_column, label_column


def _class_names(features, label_column: str | None, split) -> list[str]:
    import datasets

    feature = features.get(label_column) if label_column else None
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if label_column is None:
        return ["images"]  # unlabelled (pre-training)
    return [str(i) for i in range(int(max(split[label_column])) + 1)]  # integer labels without names


def _load(spec: str):
    """`NAME[:SPLIT]` -> (a DatasetDict or Dataset, the split asked for). NAME is a folder written with
    `save_to_disk` or a data set on the Hub (through the `datasets` cache; HF_HUB_OFFLINE=1 holds)."""
    try:
        import datasets
    except ImportError:
        raise SourceError("--data hf:... needs the datasets package: pip install 'convnext[data]'") from None
    name, _, split = spec.removeprefix(HUB_PREFIX).partition(":")
    try:
        if Path(name).is_dir():
            return datasets.load_from_disk(name), split or None
        return datasets.load_dataset(name), split or None
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SourceError(f"{spec}: cannot load the data set ({reason})") from None


def _pick(loaded, wanted: str | None, choices: tuple[str, ...], spec: str):
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded if wanted is None else None
    if wanted is not None:
        if wanted not in loaded:
            raise SourceError(f"{spec}: no split {wanted!r} (splits: {', '.join(loaded)})")
        return loaded[wanted]
    return next((loaded[s] for s in choices if s in loaded), None)


def hub_split(split, spec: str, image_column: str | None, label_column: str | None, on_bad_image: str,
              skipped: list[str], unlabelled: bool = False) -> HubImages:
    """A split as a dataset, every image checked once as a folder's are (a bad one: an error, or skipped)."""
    import datasets

    image_column, label_column = _columns(split.features, image_column, label_column, spec)
    if label_column is None and not unlabelled:
        raise SourceError(f"{spec}: no label column (a ClassLabel feature); name it with --label-column")
    raw = split.cast_column(image_column, datasets.Image(decode=False))
    keep = []
    cells = (cell for batch in raw.select_columns([image_column]).iter(batch_size=256) for cell in batch[image_column])
    for index, cell in enumerate(cells):  # a batch at a time: the column's bytes are never all in memory
        data = cell["bytes"] if cell["bytes"] is not None else Path(cell["path"]).read_bytes()
        if _readable(data):
            keep.append(index)
        elif on_bad_image == "error":
            raise SourceError(f"{spec} row {index}: unreadable image; use --on-bad-image skip to leave such rows out")
        else:
            skipped.append(f"{spec} row {index}")
    if not keep:
        raise SourceError(f"{spec}: no readable images")
    return HubImages(raw, spec, image_column, label_column, _class_names(split.features, label_column, split), keep)


def hub_data(spec: str, image_column: str | None, label_column: str | None, on_bad_image: str,
             skipped: list[str], unlabelled: bool = False) -> tuple[HubImages, HubImages | None]:
    """(train, val or None) of `hf:NAME[:SPLIT]`: SPLIT (default train) and the data set's validation
    split if it has one (else the caller holds out a share of train)."""
    loaded, wanted = _load(spec)
    train = _pick(loaded, wanted, TRAIN_SPLITS, spec)
    if train is None:
        raise SourceError(f"{spec}: no train split (splits: {', '.join(loaded)}); name one as hf:NAME:SPLIT")
    val = None if wanted else _pick(loaded, None, VAL_SPLITS, spec)
    args = (image_column, label_column, on_bad_image, skipped, unlabelled)
    return hub_split(train, spec, *args), (hub_split(val, spec, *args) if val is not None else None)


def hub_eval_split(spec: str, image_column: str | None, label_column: str | None) -> HubImages:
    """The split to evaluate on: SPLIT, else the validation split, else test, else train."""
    loaded, wanted = _load(spec)
    split = _pick(loaded, wanted, (*VAL_SPLITS, *TRAIN_SPLITS), spec)
    if split is None:
        raise SourceError(f"{spec}: no split to evaluate; name one as hf:NAME:SPLIT")
    return hub_split(split, spec, image_column, label_column, "error", [])


def _local_copy(url: str, suffix: str = ".tar") -> Path:
    """A shard as a local file: the path itself, or a URL's bytes streamed once into the cache."""
    if not re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("file:"):
        return Path(re.sub(r"^file://?", "/", url) if url.startswith("file:") else url)
    from webdataset.gopen import gopen

    from ..checkpoints.hub import cache_dir
    from ..runtime.atomic import atomic_file

    destination = cache_dir() / "shards" / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}{suffix}"
    if not destination.is_file():
        try:
            with atomic_file(destination) as tmp, gopen(url, "rb") as stream, open(tmp, "wb") as out:
                shutil.copyfileobj(stream, out)
        except Exception as error:  # noqa: BLE001 -- gopen raises per scheme (HTTP, a failed pipe, ...)
            raise SourceError(f"{url}: cannot read the shard ({error})") from None
    return destination


def _class_file(url: str) -> Path | None:
    """classes.txt beside the first shard: the shard's name replaced in its path or URL."""
    try:
        return _local_copy(re.sub(r"[^/\s]+\.tar", "classes.txt", url, count=1), ".txt")
    except SourceError:  # none there: the labels' numbers name the classes
        return None


class ShardImages(Dataset):
    """WebDataset tar shards as a dataset: a sample is the files sharing a key (`000123.jpg`,
    `000123.cls`), its image the first of IMAGE_KEYS, its label the integer text of `.cls`. Class names
    come from `classes.txt` beside the first shard (one per line), else "0".."K-1"."""

    def __init__(self, pattern: str, on_bad_image: str, skipped: list[str], unlabelled: bool = False):
        from webdataset.shardlists import expand_urls

        urls = expand_urls(pattern)
        self.shards = [_local_copy(url) for url in urls]
        self._files: dict[int, object] = {}  # open shards of this process
        missing = [str(p) for p in self.shards if not p.is_file()]
        if missing:
            raise SourceError(f"{pattern}: no such shard {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        self.samples: list[tuple[int, tuple[int, int], tuple[int, int] | None]] = []  # shard, image, label
        for number, shard in enumerate(self.shards):
            self._index(number, shard, on_bad_image, skipped, unlabelled)
        if not self.samples:
            raise SourceError(f"{pattern}: no samples with an image ({', '.join(IMAGE_KEYS)})")
        self.labels = [0 if label is None else int(self._read(n, label)) for n, _, label in self.samples]
        names = _class_file(urls[0])
        self.classes = ([c for c in names.read_text().splitlines() if c] if names and names.is_file()
                        else [str(i) for i in range(max(self.labels) + 1)])

    def _index(self, number: int, shard: Path, on_bad_image: str, skipped: list[str], unlabelled: bool) -> None:
        members: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            with tarfile.open(shard) as tar:  # headers only: tarfile seeks past each member's data
                for info in tar:
                    if info.isfile():
                        folder, _, name = info.name.rpartition("/")
                        stem, _, extension = name.partition(".")
                        key = f"{folder}/{stem}" if folder else stem
                        members.setdefault(key, {})[extension.lower()] = (info.offset_data, info.size)
        except (tarfile.TarError, OSError) as error:
            raise SourceError(f"{shard}: not a readable tar shard ({error})") from None
        for key, files in members.items():
            image = next((files[k] for k in IMAGE_KEYS if k in files), None)
            label = next((files[k] for k in LABEL_KEYS if k in files), None)
            where = f"{shard}:{key}"
            if image is None:
                continue  # not an image sample (metadata of the shard)
            if label is None and not unlabelled:
                raise SourceError(f"{where}: no label ({' or '.join('.' + k for k in LABEL_KEYS)})")
            with open(shard, "rb") as f:
                f.seek(image[0])
                readable = _readable(f.read(image[1]))
            if readable:
                self.samples.append((number, image, label))
            elif on_bad_image == "error":
                raise SourceError(f"{where}: unreadable image; use --on-bad-image skip to leave such samples out")
            else:
                skipped.append(where)

    def _read(self, number: int, where: tuple[int, int]) -> bytes:
        file = self._files.get(number)
        if file is None:
            file = self._files[number] = open(self.shards[number], "rb")  # one handle per shard and process
        file.seek(where[0])
        return file.read(where[1])

    def __getstate__(self) -> dict:  # loader workers open their own handles
        return {**self.__dict__, "_files": {}}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        number, image, _ = self.samples[index]
        return _rgb(self._read(number, image), f"{self.shards[number]} sample {index}"), self.labels[index]
