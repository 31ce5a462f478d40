"""CIFAR-10 in the lesson's form: where to find it, a torchvision-style Dataset, a fast tensor path.

Sources, in order:

1. the folder named by ``CIFAR_COURSE_DATA``, which holds ``cifar-10-batches-py/``;
2. torchvision's own download into ``./data`` (needs internet).

With ``CIFAR_COURSE_SMOKE=1`` every entry point uses a small fixed slice of the real data
(the first ``SMOKE_TRAIN`` training and ``SMOKE_TEST`` test images), which is what the tests run.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import CourseError

ENV_DATA = "CIFAR_COURSE_DATA"
ENV_SMOKE = "CIFAR_COURSE_SMOKE"
T = TypeVar("T")
DEFAULT_DOWNLOAD_ROOT = Path("data")
BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
META_FILE = "batches.meta"
DOWNLOAD_STALL_S = 60.0  # a download that receives nothing for this long fails instead of hanging
SMOKE_TRAIN = 2000
SMOKE_TEST = 1000
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# The md5 sums of the official cifar-10-python.tar.gz files (the same table torchvision uses).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

HOW_TO_GET_DATA = (
    f"Either set {ENV_DATA} to a folder that contains '{BASE_FOLDER}/' "
    f"(for example: export {ENV_DATA}=/path/to/cifar10), "
    f"or connect to the internet so torchvision can download CIFAR-10 (170 MB) into "
    f"'./{DEFAULT_DOWNLOAD_ROOT}'."
)


def smoke_mode() -> bool:
    """True when ``CIFAR_COURSE_SMOKE=1``: entry points then use a small fixed slice of the data."""
    return os.environ.get(ENV_SMOKE, "").strip() not in ("", "0", "false", "False")


def by_mode(full: T, smoke: T) -> T:
    """``full`` in a full run, ``smoke`` in the tests' smoke run (``CIFAR_COURSE_SMOKE=1``, on
    the small slice): the one place where a lesson asks how many epochs, steps or images, or which
    network, so that both runs take the same code path with other sizes. The stored outputs come
    from full runs."""
    return smoke if smoke_mode() else full


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_md5sums(root: Path) -> dict[str, str]:
    """Read an ``MD5SUMS`` file beside the batches, as the shared re-packed copy has."""
    sums: dict[str, str] = {}
    md5sums = root / "MD5SUMS"
    if md5sums.is_file():
        try:
            text = md5sums.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CourseError(
                f"'{md5sums}' is not a list of checksums (it is not text): the copy of CIFAR-10 "
                "is damaged. Copy or download it again."
            ) from None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                sums[Path(parts[1]).name] = parts[0]
    return sums


def verify_file(root: Path, name: str) -> Path:
    """Check that one batch file exists and is intact; return its path.

    A file passes when its md5 is the official one or the one listed in ``root/MD5SUMS``.
    """
    path = root / BASE_FOLDER / name
    if not path.is_file():
        raise CourseError(f"CIFAR-10 file '{path}' is missing. {HOW_TO_GET_DATA}")
    md5 = _md5(path)
    if md5 not in (OFFICIAL_MD5[name], _read_md5sums(root).get(name)):
        raise CourseError(
            f"CIFAR-10 file '{path}' is damaged (md5 {md5} matches neither the official sum "
            f"nor {root / 'MD5SUMS'}). Delete the folder and copy or download it again."
        )
    return path


def verify_files(root: Path) -> None:
    """Check every batch file under ``root/cifar-10-batches-py``, as ``verify_file`` does."""
    if not (root / BASE_FOLDER).is_dir():
        raise CourseError(
            f"'{root}' does not contain a '{BASE_FOLDER}/' folder; {ENV_DATA} must name the folder "
            f"that holds '{BASE_FOLDER}/', not the batches themselves. {HOW_TO_GET_DATA}"
        )
    for name in [*TRAIN_FILES, *TEST_FILES, META_FILE]:
        verify_file(root, name)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and refuses anything else, so a planted file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


def _load_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        with path.open("rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = list(entry["labels"] if "labels" in entry else entry["fine_labels"])
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise CourseError(
            f"Cannot read CIFAR-10 file '{path}' ({type(exc).__name__}: {exc}). "
            "Delete the folder and copy or download it again."
        ) from exc
    if len(labels) != len(data):
        raise CourseError(f"CIFAR-10 file '{path}' has {len(data)} images, {len(labels)} labels.")
    if not all(
        isinstance(label, (int, np.integer)) and not isinstance(label, bool) for label in labels
    ):
        odd = next(x for x in labels if not isinstance(x, (int, np.integer)) or isinstance(x, bool))
        raise CourseError(
            f"CIFAR-10 file '{path}' has a label {odd!r}, not a class number 0-9: the file is "
            "damaged. Delete the folder and copy or download it again."
        )
    return data, labels


def find_data_root(download: bool = True) -> Path:
    """Return a folder holding ``cifar-10-batches-py/``: ``$CIFAR_COURSE_DATA``, else ``./data``.

    Downloads with torchvision into ``./data`` when neither has the data and ``download`` is true.
    """
    env = os.environ.get(ENV_DATA)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise CourseError(f"{ENV_DATA}='{env}' is not a folder. {HOW_TO_GET_DATA}")
        if not (root / BASE_FOLDER).is_dir() and (root / TRAIN_FILES[0]).is_file():
            raise CourseError(
                f"{ENV_DATA}='{env}' is the '{BASE_FOLDER}/' folder itself; set it to the folder "
                f"above it, '{root.parent}'."
            )
        if not (root / BASE_FOLDER).is_dir():
            raise CourseError(
                f"{ENV_DATA}='{env}' has no '{BASE_FOLDER}/' folder inside it. {HOW_TO_GET_DATA}"
            )
        return root
    root = DEFAULT_DOWNLOAD_ROOT
    if (root / BASE_FOLDER).is_dir():
        return root
    if not download:
        raise CourseError(f"CIFAR-10 was not found. {HOW_TO_GET_DATA}")
    from torchvision.datasets import CIFAR10

    # torchvision opens its URLs without a timeout, so a network that drops packets (some
    # firewalls do) would leave it waiting for ever; a stalled socket now raises instead. The
    # timeout is per read: a slow download that keeps receiving goes on.
    before = socket.getdefaulttimeout()
    if before is None:
        socket.setdefaulttimeout(DOWNLOAD_STALL_S)
    try:
        CIFAR10(root=str(root), train=True, download=True)
    except Exception as exc:  # URLError, timeouts, disk errors
        raise CourseError(
            f"CIFAR-10 was not found and the download failed ({type(exc).__name__}: {exc}). "
            f"{HOW_TO_GET_DATA}"
        ) from exc
    finally:
        socket.setdefaulttimeout(before)
    return root


@dataclass
class Arrays:
    """One CIFAR-10 split as NumPy arrays: images ``[N, 3, 32, 32]`` uint8 and labels ``[N]``."""

    images: np.ndarray
    labels: np.ndarray


def load_arrays(train: bool, root: Path | None = None, limit: int | None = None) -> Arrays:
    """Read one split from the python batches; ``limit`` keeps only the first images."""
    root = find_data_root() if root is None else root
    folder = root / BASE_FOLDER
    images, labels = [], []
    for name in TRAIN_FILES if train else TEST_FILES:
        data, batch_labels = _load_batch(verify_file(root, name))
        images.append(data)
        labels.extend(batch_labels)
        if limit is not None and len(labels) >= limit:
            break
    arrays = Arrays(np.concatenate(images), np.asarray(labels, dtype=np.int64))
    if limit is not None:
        arrays = Arrays(arrays.images[:limit], arrays.labels[:limit])
    if arrays.labels.min() < 0 or arrays.labels.max() >= len(CLASSES):
        raise CourseError(
            f"CIFAR-10 labels under '{folder}' are outside 0..9: the files are damaged."
        )
    return arrays


def default_limit(train: bool) -> int | None:
    """The smoke-mode slice size for a split, or None (all images) outside smoke mode."""
    if not smoke_mode():
        return None
    return SMOKE_TRAIN if train else SMOKE_TEST


class CourseCIFAR10(Dataset):
    """CIFAR-10 as a torchvision-style Dataset: ``dataset[i]`` is ``(transform(PIL image), label)``.

    torchvision's own ``CIFAR10`` checks the official md5 sums and so refuses re-packed copies
    such as the course's shared one; this class reads the same python batches without that check
    (``verify_files`` checks them against the copy's own ``MD5SUMS``).
    """

    def __init__(
        self,
        train: bool = True,
        transform: Callable[[Image.Image], Any] | None = None,
        root: str | Path | None = None,
        limit: int | None = None,
    ) -> None:
        root = find_data_root() if root is None else Path(root)
        limit = default_limit(train) if limit is None else limit
        arrays = load_arrays(train, root, limit)
        self.root = root
        self.train = train
        self.transform = transform
        self.data = arrays.images.transpose(0, 2, 3, 1).copy()  # [N, 32, 32, 3], like torchvision
        self.targets = arrays.labels.tolist()
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"CourseCIFAR10({split}, {len(self)} images, root='{self.root}')"


def get_datasets(
    transform: Callable[[Image.Image], Any] | None = None,
) -> tuple[CourseCIFAR10, CourseCIFAR10]:
    """The lesson's train and test sets; ``transform`` defaults to ``ToTensor()``."""
    if transform is None:
        from torchvision import transforms

        transform = transforms.ToTensor()
    root = find_data_root()
    return CourseCIFAR10(True, transform, root), CourseCIFAR10(False, transform, root)


def shuffled_order(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The permutation that ``DataLoader(shuffle=True, generator=generator)`` visits.

    A DataLoader first draws one number from the generator (a seed for its workers), then the
    permutation; doing the same makes the fast path see exactly the lecture loop's batches.
    """
    if generator is not None:
        torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(n, generator=generator)


class TensorData:
    """A whole split held as one uint8 tensor on a device, served in shuffled float batches.

    No PIL and no per-sample Python: each batch is one index into the tensor, scaled to [0, 1]
    exactly as ``ToTensor`` does, so the numbers match the lesson's DataLoader. The images are
    kept as ``[N, 32, 32, 3]``, so a batch comes out in ``channels_last`` layout for free.
    """

    def __init__(
        self,
        train: bool,
        device: torch.device | str = "cpu",
        root: Path | None = None,
        limit: int | None = None,
    ) -> None:
        limit = default_limit(train) if limit is None else limit
        arrays = load_arrays(train, find_data_root() if root is None else root, limit)
        self.device = torch.device(device)
        self.images = torch.from_numpy(arrays.images).permute(0, 2, 3, 1).contiguous()
        self.images = self.images.to(self.device)
        self.labels = torch.from_numpy(arrays.labels).to(self.device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        channels_last: bool = False,
        max_batches: int | None = None,
        indices: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images float [B,3,32,32] in [0,1], labels [B])`` on the device.

        ``indices``, when given, is the exact sequence of images to serve (a process's share of
        a distributed epoch); ``shuffle`` and ``generator`` are then not used.
        """
        for idx in self.batch_indices(
            batch_size,
            shuffle=shuffle,
            generator=generator,
            max_batches=max_batches,
            indices=indices,
        ):
            yield self.batch(idx, channels_last)

    def batch_indices(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        max_batches: int | None = None,
        indices: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the indices of each batch, in the order ``batches`` serves them."""
        n = len(self)
        if indices is not None:
            n, order = len(indices), indices.to(self.device)
        elif shuffle:
            order = shuffled_order(n, generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        stops = range(0, n, batch_size)
        if max_batches is not None:
            stops = stops[:max_batches]
        for start in stops:
            yield order[start : start + batch_size]

    def batch(
        self, idx: torch.Tensor, channels_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (float in [0, 1], ``[B,3,32,32]``) and labels at ``idx``."""
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        images = self.images[idx].permute(0, 3, 1, 2)
        return images.to(torch.float32, memory_format=memory_format).div_(255), self.labels[idx]


def check_data() -> tuple[Path, int, int]:
    """Find the data, verify every file and its counts; return ``(root, n_train, n_test)``."""
    root = find_data_root()
    verify_files(root)
    train = load_arrays(True, root)
    test = load_arrays(False, root)
    with (root / BASE_FOLDER / META_FILE).open("rb") as f:
        try:
            names = _BatchUnpickler(f, encoding="latin1").load()["label_names"]
        except Exception as exc:
            raise CourseError(f"Cannot read '{f.name}': {exc}. Copy the data again.") from exc
    if len(train.labels) != 50_000 or len(test.labels) != 10_000:
        raise CourseError(
            f"Expected 50,000 train and 10,000 test images under '{root}', found "
            f"{len(train.labels):,} and {len(test.labels):,}. Copy or download the data again."
        )
    if tuple(names) != CLASSES:
        raise CourseError(f"Unexpected class names in '{root}': {names}.")
    return root, len(train.labels), len(test.labels)
