"""Training data: CIFAR-10 images and char-level tiny-shakespeare, with resumable batches.

Images are decoded once into a uint8 tensor ``(N, 3, H, W)`` (cached as ``.npz`` keyed by
the zip's sha256), then batched, augmented and normalized on tensors, a whole batch at a
time. Text is encoded once into a long tensor of character ids.

Every random choice of a batch comes from a ``torch.Generator`` seeded by
``(seed, epoch, step)``, so a batch stream is a pure function of a few counters: its
``state_dict()`` is those counters, and restoring it replays exactly the same batches.

The default datasets are files of one data folder (:func:`data_dir`): ``$HYPERINIT_DATA``,
or a checkout's ``../shared/data`` where that exists; every loader also takes a path.

Only the JPEG zip and ImageFolder directories are read. torchvision's
``cifar-10-batches-py`` files are pickles, and unpickling runs arbitrary code, so they are
refused with a pointer to the supported layouts.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hyperinit.paths import cache_home
from hyperinit.safetensors_io import atomic_path

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "HYPERINIT_DATA"  # the data folder, for installs that are not a checkout
CHECKOUT_DATA = REPO.parent / "shared" / "data"  # beside a checkout: the fallback
CIFAR10_FILE = "cifar10-jpg.zip"  # the default datasets' names in the data folder
TEXT_FILE = "tinyshakespeare.txt"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# Per-channel mean and std of the CIFAR-10 training images, in [0, 1] units.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1  # bump when the cached layout changes
USER_CACHE = "user-cache"  # load_cifar10's default cache_dir: hyperinit.paths.cache_home()
_LAYOUTS = ("a zip or ImageFolder directory with <split>/<class>/<image>.jpg|png entries "
            f"(the default is {CIFAR10_FILE} in the data folder, ${DATA_ENV})")


def data_dir() -> Path:
    """The folder of the default datasets: ``$HYPERINIT_DATA`` if set, else the checkout's
    ``../shared/data`` if it exists. Neither is an error that says how to give the data."""
    env = os.environ.get(DATA_ENV)
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{DATA_ENV}={env} is not a folder: set it to the folder "
                                    f"that holds {CIFAR10_FILE} and {TEXT_FILE}")
        return folder
    if CHECKOUT_DATA.is_dir():
        return CHECKOUT_DATA
    raise FileNotFoundError(
        f"no data folder: set {DATA_ENV} to a folder that holds {CIFAR10_FILE} (CIFAR-10 as "
        f"JPEGs, <split>/<class>/<image>.jpg) and {TEXT_FILE}, or give the dataset's path "
        f"(data=PATH); {CHECKOUT_DATA}, the checkout's default, does not exist")


# ----- images ------------------------------------------------------------------------------
def load_cifar10(root: str | os.PathLike | None = None, split: str = "train",
                 cache_dir: str | os.PathLike | None = USER_CACHE,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as ``(uint8 (N, 3, H, W), long (N,))``, in sorted-name order.

    ``root`` is a zip with ``<split>/<class>/<name>.jpg`` entries (default: the data
    folder's ``cifar10-jpg.zip``, :func:`data_dir`) or an ImageFolder directory
    ``root/<split>/<class>/*.jpg|png``. Labels index the sorted class folder names, which
    for CIFAR-10 is :data:`CIFAR10_CLASSES`. A zip's decoded arrays are cached in
    ``cache_dir`` (default: ``images`` in :func:`hyperinit.paths.cache_home`; ``None``
    disables the cache) under its sha256, so later loads take well under a second.
    """
    path = Path(root) if root is not None else data_dir() / CIFAR10_FILE
    if not path.exists():
        raise FileNotFoundError(f"no image data at {path}: expected {_LAYOUTS}")
    if path.is_dir():
        return _load_image_folder(path, split)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a zip file: expected {_LAYOUTS}")
    return _load_zip(path, split, cache_dir)


def _load_zip(path: Path, split: str, cache_dir: str | os.PathLike | None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one split of a zip, or read it from the cache."""
    blob = path.read_bytes()
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(blob).hexdigest()[:16]
        folder = cache_home() / "images" if cache_dir == USER_CACHE else Path(cache_dir)
        cache = folder / f"images-{digest}-{split}-v{CACHE_VERSION}.npz"
        if cache.exists():
            with np.load(cache) as arrays:
                return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = sorted(n for n in archive.namelist()
                       if n.count("/") == 2 and n.lower().endswith(IMAGE_SUFFIXES))
        splits = sorted({n.split("/")[0] for n in names})
        if split not in splits:
            raise ValueError(f"{path} has no '{split}' images (it has {splits or 'none'}): "
                             f"expected {_LAYOUTS}")
        members = [n for n in names if n.startswith(f"{split}/")]
        images = _decode_all(members, archive.read)
    labels = _labels(members, f"{path}:{split}/")
    if cache is not None:
        _save_npz(cache, images=images, labels=labels)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _load_image_folder(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    folder = root / split
    if not folder.is_dir():
        if root.name == "cifar-10-batches-py" or (root / "cifar-10-batches-py").exists():
            raise ValueError(
                f"{root} holds torchvision's pickled CIFAR-10 batches, which are not read "
                f"(unpickling can run arbitrary code): expected {_LAYOUTS}")
        raise ValueError(f"{root} has no '{split}' folder: expected {_LAYOUTS}")
    names = sorted(p.relative_to(root).as_posix() for p in folder.glob("*/*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    labels = _labels(names, f"{folder}/")
    images = _decode_all(names, lambda name: (root / name).read_bytes())
    return torch.from_numpy(images), torch.from_numpy(labels)


def _labels(names: list[str], where: str) -> np.ndarray:
    """Class index of each ``split/class/file`` name, classes sorted by name."""
    if not names:
        raise ValueError(f"no images under {where}: expected {_LAYOUTS}")
    classes = [n.split("/")[1] for n in names]
    index = {c: i for i, c in enumerate(sorted(set(classes)))}
    return np.array([index[c] for c in classes], dtype=np.int64)


def _decode_all(names: list[str], read: Callable[[str], bytes]) -> np.ndarray:
    """Decode every image with PIL to RGB uint8 ``(N, 3, H, W)``; all must have one size.

    About 0.1-0.2 ms per 32x32 JPEG, mostly PIL's per-image Python overhead, which holds
    the GIL: a thread pool measured slower, so this is a plain loop (the result is cached).
    """
    out = None
    for i, name in enumerate(names):
        try:
            with Image.open(io.BytesIO(read(name)), formats=("JPEG", "PNG")) as image:
                pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        except OSError as err:
            raise ValueError(f"cannot decode image {name}: {err}") from err
        if out is None:
            out = np.empty((len(names), 3, *pixels.shape[:2]), dtype=np.uint8)
        if pixels.shape[:2] != out.shape[2:]:
            raise ValueError(f"image {name} is {pixels.shape[1]}x{pixels.shape[0]}, but "
                             f"{names[0]} is {out.shape[3]}x{out.shape[2]}: all images must "
                             "have one size")
        out[i] = pixels.transpose(2, 0, 1)
    return out


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _generator(seed: int, *counters: int) -> torch.Generator:
    """A generator whose stream depends only on ``(seed, *counters)``."""
    key = hashlib.sha256(repr((seed, *counters)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator,
                     padding: int = 4) -> torch.Tensor:
    """Random crop after zero ``padding`` plus random horizontal flip, per image, in batch.

    ``images`` is ``(B, C, H, W)`` of any dtype (padding is zeros, i.e. black for uint8, as
    torchvision's ``RandomCrop(padding=4)`` does); the result has the same shape and dtype.
    """
    b, c, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(images, (padding,) * 4)
    # Two gathers (rows, then columns) take about half the time of one 4-D fancy index.
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def normalize(images: torch.Tensor, mean: tuple[float, ...] = CIFAR10_MEAN,
              std: tuple[float, ...] = CIFAR10_STD) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` in [0, 255] -> float32 standardized per channel.

    The result is channels-last in memory (same shape and values): convolutions then take
    their channels-last kernels, and a CPU training step over the sampled architectures is
    about 1.2x faster (``bench/batch_layout.py``; ViT-like ones lose a little).
    """
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return ((images.float() / 255 - m) / s).contiguous(memory_format=torch.channels_last)


class ImageBatches:
    """Endless shuffled, augmented, normalized training batches ``(x float, y long)``.

    Each epoch is a fresh permutation and keeps ``len(images) // batch_size`` full batches
    (the remainder is dropped; the next permutation covers it). Permutations and
    augmentations are drawn from generators seeded by ``(seed, epoch, step)``, so
    ``state_dict()`` is just counters and ``load_state_dict`` resumes exactly.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 seed: int = 0, augment: bool = True,
                 mean: tuple[float, ...] = CIFAR10_MEAN,
                 std: tuple[float, ...] = CIFAR10_STD) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("expected uint8 images (N, C, H, W) and N labels, got "
                             f"{images.dtype} {tuple(images.shape)} and {len(labels)} labels")
        if not 0 < batch_size <= len(images):
            raise ValueError(f"batch_size must be in 1..{len(images)}, got {batch_size}")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.seed, self.augment, self.mean, self.std = seed, augment, mean, std
        self.epoch, self.step = 0, 0  # step: batches already taken from this epoch
        self._perm: torch.Tensor | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.step == self.steps_per_epoch:
            self.epoch, self.step, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = torch.randperm(len(self.images), generator=_generator(self.seed,
                                                                               self.epoch))
        idx = self._perm[self.step * self.batch_size:(self.step + 1) * self.batch_size]
        x = self.images[idx.to(self.images.device)]
        if self.augment:
            x = random_crop_flip(x, _generator(self.seed, self.epoch, self.step))
        self.step += 1
        return normalize(x, self.mean, self.std), self.labels[idx.to(self.labels.device)]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "step": self.step,
                "num_samples": len(self.images), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the data and batch size must be the same."""
        mine = (len(self.images), self.batch_size)
        if (state["num_samples"], state["batch_size"]) != mine:
            raise ValueError(f"state is for {state['num_samples']} samples in batches of "
                             f"{state['batch_size']}, these batches have {mine[0]} and {mine[1]}")
        self.seed, self.epoch, self.step = state["seed"], state["epoch"], state["step"]
        self._perm = None


def eval_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every image once, in order, normalized and not augmented (last batch may be short)."""
    for start in range(0, len(images), batch_size):
        yield (normalize(images[start:start + batch_size], mean, std),
               labels[start:start + batch_size])


# ----- text --------------------------------------------------------------------------------
class CharText:
    """A character-level corpus: sorted vocabulary and the encoded train/val splits.

    Token ``i`` is ``vocab[i]``. The split is by position (first 90% train, last 10% val),
    as is usual for tiny-shakespeare, so validation text is never seen in training.
    """

    def __init__(self, text: str, train_fraction: float = 0.9) -> None:
        self.vocab = "".join(sorted(set(text)))
        self._codes = np.frombuffer(self.vocab.encode("utf-32-le"), dtype=np.uint32)
        ids = self.encode(text)
        cut = int(len(ids) * train_fraction)
        if not 0 < cut < len(ids):
            raise ValueError(f"a text of {len(ids)} characters is too short to split "
                             f"{train_fraction:.0%} / {1 - train_fraction:.0%}")
        self.train, self.val = ids[:cut], ids[cut:]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Characters -> long ids; a character outside the vocabulary is a ValueError."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not known.all():
            raise ValueError(f"character {chr(codes[~known][0])!r} is not in the vocabulary")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.vocab[i] for i in torch.as_tensor(ids).tolist())


def load_text(path: str | os.PathLike | None = None) -> CharText:
    """A UTF-8 text file (default: the data folder's tiny-shakespeare, :func:`data_dir`) as a
    :class:`CharText`."""
    path = Path(path) if path is not None else data_dir() / TEXT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}: expected a UTF-8 text file "
                                f"(the default is {TEXT_FILE} in the data folder, ${DATA_ENV})")
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"{path} is empty: expected a UTF-8 text corpus")
    return CharText(text)


class TextBatches:
    """Endless random blocks ``(x, y)`` of ``block_size`` ids, ``y`` shifted by one.

    Batch ``step`` is drawn from a generator seeded by ``(seed, step)``, so
    ``state_dict()``/``load_state_dict`` resume exactly.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, block_size: int, *,
                 seed: int = 0) -> None:
        if len(data) <= block_size:
            raise ValueError(f"{len(data)} tokens cannot fill a block of {block_size} plus "
                             "its next-token targets")
        self.data, self.batch_size, self.block_size = data, batch_size, block_size
        self.seed, self.step = seed, 0
        self._windows = data.unfold(0, block_size + 1, 1)  # a view: (len - block_size, T + 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self._windows), (self.batch_size,),
                               generator=_generator(self.seed, self.step))
        self.step += 1
        block = self._windows[starts.to(self.data.device)]
        return block[:, :-1], block[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step, "num_tokens": len(self.data),
                "block_size": self.block_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the data and block size must be the same."""
        mine = (len(self.data), self.block_size)
        if (state["num_tokens"], state["block_size"]) != mine:
            raise ValueError(f"state is for {state['num_tokens']} tokens in blocks of "
                             f"{state['block_size']}, these batches have {mine[0]} and {mine[1]}")
        self.seed, self.step = state["seed"], state["step"]


def text_eval_batches(data: torch.Tensor, batch_size: int, block_size: int,
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping blocks covering ``data`` once, in order."""
    n = (len(data) - 1) // block_size
    x = data[:n * block_size].view(n, block_size)
    y = data[1:n * block_size + 1].view(n, block_size)
    for start in range(0, n, batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]
