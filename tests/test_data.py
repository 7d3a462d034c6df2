"""Data loading on the real shared data: CIFAR-10 zip, ImageFolder, tiny-shakespeare, batches."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import training.data as data
from hyperinit.paths import cache_home
from training.data import (
    CIFAR10_CLASSES,
    CharText,
    ImageBatches,
    TextBatches,
    eval_batches,
    load_cifar10,
    load_text,
    normalize,
    random_crop_flip,
    text_eval_batches,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar_test(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The real test split, decoded once into the repository cache (later runs hit it)."""
    return load_cifar10(shared_data / "cifar10-jpg.zip", split="test")


def write_images(root: Path, layout: dict[str, int], size: int = 8, fmt: str = "PNG",
                 ) -> dict[str, np.ndarray]:
    """``root/<split>/<class>/<i>.png`` with distinct random pixels; returns path -> CHW array."""
    rng = np.random.default_rng(0)
    written = {}
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            path = root / folder / f"{i:02d}.{fmt.lower()}"
            Image.fromarray(pixels).save(path, format=fmt)
            written[path.relative_to(root).as_posix()] = pixels.transpose(2, 0, 1)
    return written


def zip_folder(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(root.rglob("*"), reverse=True):  # unsorted on purpose
            z.write(path, path.relative_to(root).as_posix())
    return out


# ----- CIFAR-10 zip ------------------------------------------------------------------------
def test_cifar_test_split_order_labels_and_pixels(cifar_test, shared_data):
    images, labels = cifar_test
    assert images.shape == (10000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.long and labels.bincount().tolist() == [1000] * 10
    assert torch.equal(labels, torch.arange(10).repeat_interleave(1000))  # sorted names
    with zipfile.ZipFile(shared_data / "cifar10-jpg.zip") as archive:
        for index, name in [(0, "test/airplane/0000.jpg"), (3000, "test/cat/0000.jpg"),
                            (3001, "test/cat/0001.jpg"), (9999, "test/truck/0999.jpg")]:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
            assert np.array_equal(images[index].numpy(), pixels), name
            assert CIFAR10_CLASSES[labels[index]] == name.split("/")[1]


def test_cifar_train_split_and_its_cache(shared_data, monkeypatch):
    images, labels = load_cifar10(shared_data / "cifar10-jpg.zip", split="train")
    assert images.shape == (50000, 3, 32, 32)
    assert labels.bincount().tolist() == [5000] * 10
    # Channel means of the real training set match the normalization constants.
    mean = images[::10].float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(data.CIFAR10_MEAN), atol=0.005)
    monkeypatch.setattr(data, "_decode_all", lambda *a: pytest.fail("cache was not used"))
    cached, cached_labels = load_cifar10(split="train")  # the default path is the shared zip
    assert torch.equal(cached, images) and torch.equal(cached_labels, labels)


def test_default_cache_is_the_users_not_the_packages(tmp_path, monkeypatch):
    """An installed package never writes beside its modules: the decoded arrays go to
    ``$HYPERINIT_CACHE/images`` (else the XDG cache folder)."""
    write_images(tmp_path / "src", {"train/a": 2})
    archive = zip_folder(tmp_path / "src", tmp_path / "tiny.zip")
    monkeypatch.setenv("HYPERINIT_CACHE", str(tmp_path / "home"))
    load_cifar10(archive, split="train")
    assert [f.name.endswith("-train-v1.npz") for f in (tmp_path / "home/images").iterdir()] == [
        True]
    monkeypatch.delenv("HYPERINIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "hyperinit"


def test_zip_cache_is_keyed_by_content_and_reused(tmp_path, monkeypatch):
    pixels = write_images(tmp_path / "src", {"train/b": 2, "train/a": 3, "test/a": 1})
    archive = zip_folder(tmp_path / "src", tmp_path / "tiny.zip")
    cache = tmp_path / "cache"
    images, labels = load_cifar10(archive, split="train", cache_dir=cache)
    names = sorted(n for n in pixels if n.startswith("train/"))
    assert labels.tolist() == [0, 0, 0, 1, 1]  # classes a, b in sorted order
    assert all(np.array_equal(images[i].numpy(), pixels[n]) for i, n in enumerate(names))
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.endswith("-train-v1.npz")  # no temporary files

    assert load_cifar10(archive, split="test", cache_dir=cache)[0].shape == (1, 3, 8, 8)
    assert len(list(cache.iterdir())) == 2  # one file per split

    monkeypatch.setattr(data, "_decode_all", lambda *a: pytest.fail("cache was not used"))
    cached, cached_labels = load_cifar10(archive, split="train", cache_dir=cache)
    assert torch.equal(cached, images) and torch.equal(cached_labels, labels)
    with pytest.raises(ValueError, match=r"no 'val' images \(it has \['test', 'train'\]\)"):
        load_cifar10(archive, split="val", cache_dir=cache)


# ----- ImageFolder and errors -----------------------------------------------------------------
def test_image_folder(tmp_path):
    pixels = write_images(tmp_path, {"train/dog": 2, "train/cat": 2, "val/cat": 1})
    images, labels = load_cifar10(tmp_path, split="train")
    names = sorted(n for n in pixels if n.startswith("train/"))
    assert [n.split("/")[1] for n in names] == ["cat", "cat", "dog", "dog"]
    assert labels.tolist() == [0, 0, 1, 1]
    assert all(np.array_equal(images[i].numpy(), pixels[n]) for i, n in enumerate(names))
    assert load_cifar10(tmp_path, split="val")[0].shape == (1, 3, 8, 8)


def test_grayscale_images_become_rgb(tmp_path):
    (tmp_path / "train" / "x").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 77, dtype=np.uint8)).save(tmp_path / "train/x/0.jpg")
    images, _ = load_cifar10(tmp_path)
    assert images.shape == (1, 3, 4, 4) and (images - 77).abs().max() <= 1


def test_missing_and_wrong_layouts_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a zip or ImageFolder"):
        load_cifar10(tmp_path / "nope.zip")
    with pytest.raises(ValueError, match=r"no 'train' folder: expected .*<split>/<class>"):
        load_cifar10(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a zip file"):
        load_cifar10(tmp_path / "notes.txt")
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        with pytest.raises(ValueError, match="pickled CIFAR-10 batches, which are not read"):
            load_cifar10(root)


def test_empty_split_mixed_sizes_and_corrupt_images_are_errors(tmp_path):
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images under"):
        load_cifar10(tmp_path / "empty")
    write_images(tmp_path / "mixed", {"train/a": 1})
    write_images(tmp_path / "mixed", {"train/b": 1}, size=6)
    with pytest.raises(ValueError, match="train/b/00.png is 6x6, but train/a/00.png is 8x8"):
        load_cifar10(tmp_path / "mixed")
    (tmp_path / "bad" / "train" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "train" / "a" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image train/a/0.jpg"):
        load_cifar10(tmp_path / "bad")


# ----- augmentation and batches -------------------------------------------------------------
def test_random_crop_flip_is_a_shifted_window_and_seeded(cifar_test):
    images = cifar_test[0][:64]
    out = random_crop_flip(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, random_crop_flip(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, random_crop_flip(images, torch.Generator().manual_seed(2)))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flipped = 0
    for image, crop in zip(padded, out, strict=True):
        windows = [image[:, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        plain = any(torch.equal(crop, w) for w in windows)
        mirrored = any(torch.equal(crop, w.flip(-1)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 16 < flipped < 48  # about half are flipped


def test_normalize_standardizes_real_images(cifar_test):
    x = normalize(cifar_test[0][::5])
    assert x.dtype == torch.float32
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.02
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.03


def test_image_batches_resume_exactly(cifar_test):
    images, labels = cifar_test[0][:1000], cifar_test[1][:1000]
    batches = ImageBatches(images, labels, batch_size=128, seed=7)
    assert batches.steps_per_epoch == 7
    for _ in range(5):
        next(batches)
    state = batches.state_dict()
    expected = [next(batches) for _ in range(6)]  # crosses into epoch 1
    assert batches.epoch == 1

    resumed = ImageBatches(images, labels, batch_size=128, seed=0)
    resumed.load_state_dict(state)
    for (x, y), (ex, ey) in zip((next(resumed) for _ in range(6)), expected, strict=True):
        assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32
        assert torch.equal(x, ex) and torch.equal(y, ey)
    with pytest.raises(ValueError, match="state is for 1000 samples in batches of 128"):
        ImageBatches(images, labels, batch_size=64).load_state_dict(state)


def test_image_batches_cover_each_epoch_once_in_seeded_order(cifar_test):
    images, ids = cifar_test[0][:100], torch.arange(100)  # labels that name each image
    batches = ImageBatches(images, ids, batch_size=30, seed=3, augment=False)
    epoch0 = torch.cat([next(batches)[1] for _ in range(3)])
    epoch1 = torch.cat([next(batches)[1] for _ in range(3)])
    assert len(set(epoch0.tolist())) == 90 and len(set(epoch1.tolist())) == 90
    assert not torch.equal(epoch0, epoch1)  # a new permutation each epoch
    x, y = next(ImageBatches(images, ids, batch_size=30, seed=3, augment=False))
    assert torch.equal(y, epoch0[:30]) and torch.equal(x, normalize(images[y]))
    other = next(ImageBatches(images, ids, batch_size=30, seed=4, augment=False))[1]
    assert not torch.equal(other, epoch0[:30])


def test_eval_batches_are_in_order_and_complete(cifar_test):
    images, labels = cifar_test[0][:250], cifar_test[1][:250]
    batches = list(eval_batches(images, labels, batch_size=100))
    assert [len(y) for _, y in batches] == [100, 100, 50]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.equal(batches[1][0], normalize(images[100:200]))


# ----- text ----------------------------------------------------------------------------------
def test_tiny_shakespeare_vocab_and_split(shared_data):
    corpus = load_text(shared_data / "tinyshakespeare.txt")
    text = (shared_data / "tinyshakespeare.txt").read_text()
    assert corpus.vocab_size == 65 and corpus.vocab == "".join(sorted(set(text)))
    assert len(corpus.train) == int(0.9 * len(text)) and len(corpus.val) == len(text) - len(
        corpus.train)
    assert corpus.decode(corpus.train[:14]) == "First Citizen:"
    assert corpus.decode(corpus.val[:50]) == text[len(corpus.train):len(corpus.train) + 50]
    assert corpus.encode("Ay, my lord.").tolist() == [corpus.vocab.index(c) for c in
                                                     "Ay, my lord."]
    assert load_text().vocab == corpus.vocab  # the default path is the shared file
    with pytest.raises(ValueError, match="'é' is not in the vocabulary"):
        corpus.encode("café")


def test_the_data_folder_is_hyperinit_data_or_the_checkouts(tmp_path, monkeypatch):
    """The default datasets are files of one folder: ``$HYPERINIT_DATA`` if set, else the
    checkout's ``../shared/data`` if it exists; a wrong or missing folder is an error that
    says what to set."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_images(tmp_path / "src", {"train/a": 2, "test/a": 1})
    zip_folder(tmp_path / "src", folder / "cifar10-jpg.zip")
    (folder / "tinyshakespeare.txt").write_text("to be, or not to be\n" * 20)
    monkeypatch.setenv("HYPERINIT_DATA", str(folder))
    assert data.data_dir() == folder
    assert load_cifar10(split="train", cache_dir=None)[0].shape == (2, 3, 8, 8)
    assert load_text().vocab == "\n ,benort"
    monkeypatch.setenv("HYPERINIT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="HYPERINIT_DATA=.*nowhere is not a folder: "
                                                "set it to the folder that holds cifar10"):
        load_cifar10()
    monkeypatch.delenv("HYPERINIT_DATA")
    monkeypatch.setattr(data, "CHECKOUT_DATA", folder)
    assert data.data_dir() == folder
    monkeypatch.setattr(data, "CHECKOUT_DATA", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no data folder: set HYPERINIT_DATA to a "
                                                r"folder .* or give the dataset's path"):
        load_text()


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a UTF-8 text file"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="too short to split"):
        CharText("a")
    with pytest.raises(ValueError, match="cannot fill a block of 8"):
        TextBatches(torch.arange(8), batch_size=2, block_size=8)


def test_text_batches_are_shifted_blocks_and_resume_exactly():
    tokens = torch.arange(1000)  # a block of consecutive ids shows it is a contiguous slice
    batches = TextBatches(tokens, batch_size=4, block_size=16, seed=1)
    x, y = next(batches)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.long))
    assert torch.equal(y, x + 1)
    state = batches.state_dict()
    expected = [next(batches) for _ in range(3)]
    resumed = TextBatches(tokens, batch_size=4, block_size=16, seed=99)
    resumed.load_state_dict(state)
    for (rx, ry), (ex, ey) in zip((next(resumed) for _ in range(3)), expected, strict=True):
        assert torch.equal(rx, ex) and torch.equal(ry, ey)
    assert not torch.equal(next(TextBatches(tokens, 4, 16, seed=2))[0], x)
    with pytest.raises(ValueError, match="state is for 1000 tokens in blocks of 16"):
        TextBatches(tokens, 4, 32).load_state_dict(state)


def test_text_eval_batches_cover_the_data_in_order():
    tokens = torch.arange(50)
    batches = list(text_eval_batches(tokens, batch_size=2, block_size=8))
    x = torch.cat([bx for bx, _ in batches])
    y = torch.cat([by for _, by in batches])
    assert x.shape == (6, 8) and torch.equal(x.flatten(), torch.arange(48))
    assert torch.equal(y, x + 1)
