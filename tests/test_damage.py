"""Damaged files: every failure to read one is a CheckpointError naming the file, and our own files
carry a checksum, so a changed byte never loads as a silently different model."""
import random
import struct

import pytest
import torch

import convnext
from convnext import CheckpointError
from convnext.training import run_state
from helpers import perturbed


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One seeded corruption: flipped bytes, a truncation, a spliced run or a zeroed run."""
    data = bytearray(data)
    kind = rng.choice(("flip", "truncate", "splice", "zero"))
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)):]
    else:
        length = rng.randint(1, 64)
        at = rng.randrange(len(data) - length)
        run = data[rng.randrange(len(data) - length):][:length] if kind == "splice" else bytes(length)
        data[at:at + length] = run
    return bytes(data)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    model = perturbed(convnext.create_model("convnext_test", num_classes=4), 0.1)
    ours = convnext.save_pretrained(model, folder / "ours")
    official = convnext.write_checkpoint(model, folder / "official.pth", "official")
    return model.state_dict(), {"ours": ours.read_bytes(), "official": official.read_bytes()}


@pytest.mark.parametrize("kind", ["ours", "official"])
def test_seeded_mutations_fail_cleanly(kind, originals, tmp_path):
    state, files = originals
    rng = random.Random(f"damage-{kind}")
    path = tmp_path / ("model.safetensors" if kind == "ours" else "official.pth")
    loaded = 0
    for case in range(150):
        path.write_bytes(mutate(files[kind], rng))
        try:
            model = convnext.load_weights(None if kind == "ours" else "convnext_test", path)
        except CheckpointError as error:
            assert str(path) in str(error), f"case {case}: {error}"
            continue
        loaded += 1
        if kind == "ours":  # the checksum admits only files whose tensors are all unchanged
            got = model.state_dict()
            assert all(torch.equal(got[k], v) for k, v in state.items()), f"case {case} loaded changed tensors"
    assert loaded < 150  # the corruptions do reach the reader


def test_a_changed_tensor_byte_is_reported_as_damage(originals, tmp_path):
    _, files = originals
    data = bytearray(files["ours"])
    data[-5] ^= 0x01  # inside the last tensor's data: the file still parses
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged file.*checksum"):
        convnext.load_pretrained(tmp_path)


def test_a_damaged_training_checkpoint_is_skipped_for_the_previous_one(tmp_path, capsys):
    for step in (1, 2):
        run_state.save({"global_step": step, "w": torch.full((256,), float(step))}, tmp_path, step, keep=2)
    newest = run_state.checkpoint_files(tmp_path)[0]
    data = bytearray(newest.read_bytes())
    at = data.find(struct.pack("<f", 2.0) * 16)  # inside the tensor's bytes: the zip still reads
    data[at + 1] ^= 0x01
    newest.write_bytes(bytes(data))
    assert run_state.load_latest(tmp_path)["global_step"] == 1
    assert "checksum mismatch" in capsys.readouterr().out
