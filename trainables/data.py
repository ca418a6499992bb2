"""Dataset registry: every dataset a trial can train on, as tensors.

A trial calls :func:`load_dataset` with its config (keys of
``docs/contract.md``: ``dataset``, ``data_dir``, ``image_size``, ``fake_*``,
``augment``, ``seed``) and gets a :class:`Dataset`: the whole train and test
split as tensors plus what is needed to turn a slice of them into a batch.
The names are those of the registry ``xsam_contract.DATASETS``, whose
entries point at the ``_load_<name>(config, data_dir)`` functions below.

Storage and batches
    Images are stored as ``uint8`` tensors of shape ``(N, C, H, W)``; 1-D
    signals and small tabular images as standardised ``float32``. A dataset
    moves to the trial's device once (:meth:`Dataset.to`), so a GPU holds
    CIFAR as ``uint8`` (150 MB) and every batch is cut by indexing, augmented
    on the device and only then converted to ``float32`` and normalised
    (:func:`iterate_batches`). :func:`make_dataloader` is the DataLoader path
    over the same tensors for ``data_on_device: false``.

Normalisation
    ``uint8`` images: ``(x / 255 - mean[c]) / std[c]`` with per-channel
    statistics (:attr:`Dataset.mean`, :attr:`Dataset.std`): the published
    CIFAR-10/100 training-set values, and for Tiny-ImageNet and ``fake`` the
    statistics of their training split, computed at load. Float datasets are
    standardised once at load with their training split's statistics and have
    ``mean = std = None`` (batches pass through as they are).

Datasets
    ``mnist1d``
        The MNIST-1D benchmark (4000 train / 1000 test signals of length 40,
        10 classes), generated deterministically by ``mnist1d`` (no download)
        and cached in ``<data_dir>/mnist1d/mnist1d.npz``. Shape convention:
        one channel, ``input_shape == (1, 40)``, so 1-D convolutions take it
        as is. Standardised with the scalar mean/std of the training signals.
    ``digits``
        scikit-learn's 8x8 handwritten digits (1797 images, 10 classes),
        ``input_shape == (1, 8, 8)``, split 80/20 stratified with a fixed seed
        (1437 / 360). Pixel values 0..16 are divided by 16, then standardised
        with the training split's mean/std. No augmentation.
    ``cifar10`` / ``cifar100``
        torchvision's CIFAR with root ``<data_dir>`` (downloaded there on first
        use when the machine is online; offline, put ``cifar-10-python.tar.gz``
        / ``cifar-100-python.tar.gz`` extracted under ``<data_dir>``).
    ``tinyimagenet``
        Read from ``<data_dir>/tiny-imagenet-200/`` in the layout of the
        official zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip):
        ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` and
        ``val/val_annotations.txt``; the validation split is the test set
        (the official test split has no labels). The raw validation layout is
        read through ``val_annotations.txt``; a validation folder that was
        reshuffled once into class folders is read as well. That one-time
        reshuffle, which many training scripts expect and which is optional
        here, is::

            cd tiny-imagenet-200/val
            while read -r f wnid _; do
                mkdir -p "$wnid/images" && mv "images/$f" "$wnid/images/"
            done < val_annotations.txt

        after which ``val/<wnid>/images/*.JPEG`` (or ``val/<wnid>/*.JPEG``)
        exist. Decoding 110k JPEGs takes a minute, so the decoded ``uint8``
        tensors are cached beside the data as
        ``tiny-imagenet-200/xsam-cache-<size>.pt`` (delete it to rebuild).
        ``image_size`` resizes (antialiased bilinear); null keeps 64x64.
    ``fake``
        torchvision's ``FakeData`` of shape ``fake_shape`` (``(C, H, W)`` with
        1-4 channels), ``fake_classes`` classes and ``fake_train_size`` /
        ``fake_test_size`` samples, seeded by ``seed``, as ``uint8`` images.

Augmentation
    With ``augment: true``, the image datasets (CIFAR, Tiny-ImageNet, fake)
    use the XSAM paper's CIFAR recipe on whole batches (:class:`PaperAugment`):
    random crop with 4-pixel zero padding, horizontal flip with p = 0.5 and
    Cutout 16x16 with p = 0.5. All randomness comes from the
    ``torch.Generator`` passed in, so the same generator state gives the same
    batch. mnist1d and digits are never augmented.

Cache files are written atomically (``xsam_contract.atomic_write_with``), so
concurrent trials never read a half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables._ondisk import CIFAR_FILES, TINY_DIR, default_data_dir, resolve_data_dir
from xsam_contract import DATASETS, RegistryError, atomic_write_with, trial_defaults

__all__ = [
    "CIFAR_STATS",
    "Dataset",
    "DatasetError",
    "PaperAugment",
    "default_data_dir",
    "iterate_batches",
    "load_dataset",
    "make_dataloader",
    "resolve_data_dir",
]

# Per-channel mean / std of the training images in [0, 1] (the values used
# throughout the CIFAR literature).
CIFAR_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_TINY_NATIVE = 64
_TINY_CACHE_VERSION = 1
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_DIGITS_SPLIT_SEED = 0


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says what is missing and how to fix it."""


# --------------------------------------------------------------------------
# The dataset object


@dataclass
class Dataset:
    """A whole dataset as tensors, plus how to turn a slice of it into a batch.

    Attributes:
        name: Registry name (one of ``xsam_contract.DATASETS``).
        x_train: Training inputs, ``(N, *input_shape)``; ``uint8`` for images,
            ``float32`` (already standardised) otherwise.
        y_train: Training labels, ``int64``.
        x_test: Test inputs, same layout as ``x_train``.
        y_test: Test labels, ``int64``.
        num_classes: Number of classes.
        input_shape: Per-sample shape, e.g. ``(1, 40)`` for mnist1d and
            ``(3, 32, 32)`` for CIFAR.
        augment: Batch-wise training augmentation ``(x, generator) -> x``
            applied to stored (``uint8``) batches on their device, or None.
        mean: Per-channel mean applied after scaling ``uint8`` data to [0, 1];
            None when the stored data are already standardised.
        std: Per-channel standard deviation, paired with ``mean``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # Normalisation constants per (device, dims), built once instead of per batch.
    _stats_cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.y_test.shape[0])

    @property
    def device(self) -> torch.device:
        """Device the tensors live on."""
        return self.x_train.device

    def to(self, device: torch.device | str) -> Dataset:
        """Returns a copy whose tensors live on ``device`` (dtypes unchanged).

        ``uint8`` images stay ``uint8``: they are converted per batch by
        :meth:`normalize`, which keeps the device copy four times smaller.

        Args:
            device: Target device.

        Returns:
            A new :class:`Dataset` (the same object's tensors when already there).
        """
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Turns a stored batch into model input: ``float32``, normalised.

        Args:
            x: A batch cut from ``x_train`` / ``x_test`` (possibly augmented).

        Returns:
            ``float32`` tensor on ``x``'s device: ``(x / 255 - mean) / std``
            per channel for ``uint8`` data, ``x`` itself as ``float32`` for
            pre-standardised data.
        """
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        x = x.to(torch.float32)
        if self.mean is None or self.std is None:
            return x / scale if scale != 1.0 else x
        key = (str(x.device), x.dim())
        if key not in self._stats_cache:
            shape = (1, len(self.mean)) + (1,) * (x.dim() - 2)
            # Fold the 1/255 into the constants: one subtraction, one division.
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device) * scale
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device) * scale
            self._stats_cache[key] = (mean.view(shape), std.view(shape))
        mean, std = self._stats_cache[key]
        return (x - mean) / std


# --------------------------------------------------------------------------
# Augmentation


def _draw_int(generator: torch.Generator, high: int, n: int, device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device (a CPU generator cannot feed a CUDA
    # op), then move: the same CPU generator gives the same batch on any device.
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def _draw_bernoulli(
    generator: torch.Generator, p: float, n: int, device: torch.device
) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=generator.device) < p).to(device)


@dataclass(frozen=True)
class PaperAugment:
    """The XSAM paper's CIFAR augmentation, on whole ``(B, C, H, W)`` batches.

    In order: random crop of the input size from the input zero-padded by
    ``pad`` pixels on every side (i.e. a shift by -pad..pad in each direction
    with zero fill), horizontal flip with probability ``flip_p`` and Cutout:
    with probability ``cutout_p`` a ``cutout_size`` square whose centre is
    uniform over the image is set to zero (clipped at the borders). Zero means
    the stored zero (black for ``uint8``), before normalisation. Works on any
    dtype and device; the randomness comes only from the generator passed in.

    Attributes:
        pad: Crop padding in pixels.
        flip_p: Probability of a horizontal flip.
        cutout_size: Side of the Cutout square in pixels.
        cutout_p: Probability of applying Cutout to a sample.
    """

    pad: int = 4
    flip_p: float = 0.5
    cutout_size: int = 16
    cutout_p: float = 0.5

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augments a batch.

        Args:
            x: Images ``(B, C, H, W)``.
            generator: Source of all randomness.

        Returns:
            A new tensor of the same shape, dtype and device.
        """
        if x.dim() != 4:
            raise ValueError(
                f"PaperAugment expects (B, C, H, W) images, got shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        dev = x.device
        # Draw everything first, in a fixed order, so a batch depends only on
        # the generator's state.
        span = 2 * self.pad + 1
        dy = _draw_int(generator, span, b, dev)
        dx = _draw_int(generator, span, b, dev)
        flip = _draw_bernoulli(generator, self.flip_p, b, dev)
        cut = _draw_bernoulli(generator, self.cutout_p, b, dev)
        cy = _draw_int(generator, h, b, dev)
        cx = _draw_int(generator, w, b, dev)

        if self.pad > 0:
            padded = torch.nn.functional.pad(x, (self.pad,) * 4)
            rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H)
            cols = dx[:, None] + torch.arange(w, device=dev)  # (B, W)
            x = padded[
                torch.arange(b, device=dev)[:, None, None, None],
                torch.arange(c, device=dev)[None, :, None, None],
                rows[:, None, :, None],
                cols[:, None, None, :],
            ]
        if self.flip_p > 0:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.cutout_p > 0 and self.cutout_size > 0:
            y0 = cy - self.cutout_size // 2
            x0 = cx - self.cutout_size // 2
            ys = torch.arange(h, device=dev)[None, :]
            xs = torch.arange(w, device=dev)[None, :]
            in_rows = (ys >= y0[:, None]) & (ys < (y0 + self.cutout_size)[:, None])  # (B, H)
            in_cols = (xs >= x0[:, None]) & (xs < (x0 + self.cutout_size)[:, None])  # (B, W)
            hole = in_rows[:, :, None] & in_cols[:, None, :] & cut[:, None, None]
            x = x.masked_fill(hole[:, None], 0)
        return x.contiguous()


# --------------------------------------------------------------------------
# Batches


def iterate_batches(
    ds: Dataset, train: bool, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields one epoch of batches by indexing the stored tensors.

    Args:
        ds: The dataset (its tensors on the device the batches should be on).
        train: Training split, shuffled by ``generator`` and augmented with
            ``ds.augment``; otherwise the test split in order, not augmented.
        batch_size: Samples per batch; the last, partial batch is kept.
        generator: Source of the shuffle and augmentation randomness (on any
            device); None uses torch's default generator.

    Yields:
        ``(x, y)``: normalised ``float32`` inputs and ``int64`` labels on the
        dataset's device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x, y = (ds.x_train, ds.y_train) if train else (ds.x_test, ds.y_test)
    n = int(y.shape[0])
    if not train:
        for start in range(0, n, batch_size):
            yield ds.normalize(x[start : start + batch_size]), y[start : start + batch_size]
        return
    gen = generator if generator is not None else torch.default_generator
    order = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx]
        if ds.augment is not None:
            xb = ds.augment(xb, gen)
        yield ds.normalize(xb), y[idx]


class _IndexedTensors(torch.utils.data.Dataset):
    """Map-style dataset whose item is a whole batch: indexed by a list of indices."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx]


class _BatchCollate:
    """Augments (training) and normalises one already-indexed batch.

    Each DataLoader worker draws its augmentation randomness from a generator
    seeded with the worker's seed, which the DataLoader derives from its own
    generator every epoch, so runs are reproducible for any ``num_workers``.
    In the main process (``num_workers == 0``) a generator seeded once from
    the caller's generator is used.
    """

    def __init__(self, ds: Dataset, augment: bool, seed: int) -> None:
        self.ds = ds
        self.augment = augment
        self.seed = seed
        self._generators: dict[tuple[int, int], torch.Generator] = {}

    def _generator(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        key = (-1, self.seed) if info is None else (info.id, info.seed)
        if key not in self._generators:
            self._generators[key] = torch.Generator().manual_seed(key[1] % (2**63))
        return self._generators[key]

    def __call__(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        if self.augment and self.ds.augment is not None:
            x = self.ds.augment(x, self._generator())
        return self.ds.normalize(x), y


def make_dataloader(
    ds: Dataset,
    train: bool,
    batch_size: int,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
) -> torch.utils.data.DataLoader:
    """DataLoader over the stored tensors, for ``data_on_device: false``.

    Batches are cut by indexing (one index list per item, not one sample per
    item), augmented and normalised in the collate function, on the CPU and
    in the workers; the training loop moves them to its device.

    Args:
        ds: The dataset; its tensors are used on the CPU.
        train: Training split (shuffled, augmented) or test split (in order).
        batch_size: Samples per batch; the last, partial batch is kept.
        num_workers: DataLoader worker processes.
        generator: Generator for the shuffle and the augmentation seeds (a
            non-CPU one seeds a CPU generator); None uses torch's default one.

    Returns:
        A DataLoader yielding ``(x, y)`` like :func:`iterate_batches`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = ds.to("cpu")
    x, y = (ds.x_train, ds.y_train) if train else (ds.x_test, ds.y_test)
    gen = generator if generator is not None else torch.default_generator
    if gen.device.type != "cpu":
        # Samplers shuffle on the CPU: derive a CPU generator from the caller's.
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        gen = torch.Generator().manual_seed(seed)
    data = _IndexedTensors(x, y)
    base: torch.utils.data.Sampler[int]
    if train:
        base = torch.utils.data.RandomSampler(data, generator=gen)
    else:
        base = torch.utils.data.SequentialSampler(data)
    sampler = torch.utils.data.BatchSampler(base, batch_size=batch_size, drop_last=False)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen).item()) if train else 0
    return torch.utils.data.DataLoader(
        data,
        sampler=sampler,
        batch_size=None,  # items are whole batches already
        num_workers=num_workers,
        collate_fn=_BatchCollate(ds, augment=train, seed=seed),
        generator=gen,
    )


# --------------------------------------------------------------------------
# Files


def _write_cache(path: Path, write: Callable[[Any], None]) -> None:
    # Readers see the old file or the whole new one; a read-only data dir is
    # fine (the data is rebuilt next time).
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, write)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Serialises slow one-time work (download, decoding) across concurrent
    # trials on one machine; where locking is unavailable, work is only
    # duplicated, never corrupted, thanks to the atomic writes.
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")  # noqa: SIM115 - held open for the lock's lifetime
    except OSError:
        yield
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _channel_stats(
    x: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Per-channel mean/std of uint8 images in [0, 1], in float64 chunks so
    # 100k images need neither a float copy nor lose precision.
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    # A constant channel would divide by zero; 1/255 keeps it finite.
    std = var.sqrt().clamp_min(1.0 / 255.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# --------------------------------------------------------------------------
# Loaders


def _load_mnist1d(config: Mapping[str, Any], data_dir: Path) -> Dataset:
    cache = data_dir / "mnist1d" / "mnist1d.npz"
    arrays: dict[str, np.ndarray] | None = None
    if cache.exists():
        try:
            with np.load(cache) as npz:
                arrays = {k: npz[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception:  # a corrupt cache is rebuilt, not fatal
            arrays = None
    if arrays is None:
        import mnist1d.data

        # make_dataset reseeds Python's and NumPy's global RNGs; keep the
        # trial's streams untouched.
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            raw = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        arrays = {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}
        _write_cache(cache, lambda fh: np.savez(fh, **arrays))  # regenerating takes a second
    x_train = torch.as_tensor(arrays["x"], dtype=torch.float64)
    x_test = torch.as_tensor(arrays["x_test"], dtype=torch.float64)
    mean, std = x_train.mean(), x_train.std()
    length = int(x_train.shape[1])
    return Dataset(
        name="mnist1d",
        x_train=((x_train - mean) / std).to(torch.float32).unsqueeze(1),
        y_train=torch.as_tensor(arrays["y"], dtype=torch.int64),
        x_test=((x_test - mean) / std).to(torch.float32).unsqueeze(1),
        y_test=torch.as_tensor(arrays["y_test"], dtype=torch.int64),
        num_classes=10,
        input_shape=(1, length),
    )


def _load_digits(config: Mapping[str, Any], data_dir: Path) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=_DIGITS_SPLIT_SEED
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return Dataset(
        name="digits",
        x_train=torch.as_tensor((x_tr - mean) / std, dtype=torch.float32).unsqueeze(1),
        y_train=torch.as_tensor(y_tr),
        x_test=torch.as_tensor((x_te - mean) / std, dtype=torch.float32).unsqueeze(1),
        y_test=torch.as_tensor(y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
    )


def _load_cifar10(config: Mapping[str, Any], data_dir: Path) -> Dataset:
    return _load_cifar("cifar10", data_dir, config["augment"])


def _load_cifar100(config: Mapping[str, Any], data_dir: Path) -> Dataset:
    return _load_cifar("cifar100", data_dir, config["augment"])


def _load_cifar(name: str, data_dir: Path, augment: bool) -> Dataset:
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    archive, folder = CIFAR_FILES[name]

    def missing(cause: BaseException | None) -> DatasetError:
        why = f" (download failed: {cause})" if cause is not None else ""
        return DatasetError(
            f"{name} is not in data directory {data_dir}{why}. Fill it by downloading "
            f"{cls.url} ({archive}) and extracting it under {data_dir}, so that "
            f"{data_dir / folder} exists; or run once on an online machine with the "
            f"same data_dir (set data_dir or $XSAM_DATA_DIR)."
        )

    def build(train: bool) -> Any:
        try:
            return cls(root=str(data_dir), train=train, download=False)
        except RuntimeError:  # not there (or corrupt): try to download once
            pass
        try:
            with _file_lock(data_dir / f".{name}.lock"):
                return cls(root=str(data_dir), train=train, download=True)
        except Exception as exc:  # offline, disk full, bad archive, ...
            raise missing(exc) from exc

    splits = []
    for train in (True, False):
        ds = build(train)
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        splits.append((x, y))
    (x_train, y_train), (x_test, y_test) = splits
    mean, std = CIFAR_STATS[name]
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=10 if name == "cifar10" else 100,
        input_shape=tuple(x_train.shape[1:]),
        augment=PaperAugment() if augment else None,
        mean=mean,
        std=std,
    )


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS
    )


def _tiny_listing(
    root: Path, data_dir: Path
) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    # Returns the class ids and (file, label) lists of both splits, or raises
    # a DatasetError that says how to fill the directory.
    how = (
        f"Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it under "
        f"{data_dir} (so that {root / 'train'} exists), or set data_dir / $XSAM_DATA_DIR "
        f"to the directory that contains {TINY_DIR}/."
    )
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DatasetError(
            f"tinyimagenet is not in data directory {data_dir}: {root} lacks train/ or val/. {how}"
        )
    wnids_file = root / "wnids.txt"
    if wnids_file.is_file():
        classes = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    else:
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"tinyimagenet: no class folders in {train_dir}. {how}")
    index = {wnid: i for i, wnid in enumerate(classes)}

    def class_files(folder: Path) -> list[Path]:
        # Official layout keeps images in <wnid>/images/; accept <wnid>/ too.
        return _image_files(folder / "images") or _image_files(folder)

    train: list[tuple[Path, int]] = []
    for wnid in classes:
        files = class_files(train_dir / wnid)
        if not files:
            raise DatasetError(f"tinyimagenet: no images in {train_dir / wnid}/images. {how}")
        train.extend((f, index[wnid]) for f in files)

    test: list[tuple[Path, int]] = []
    annotations = val_dir / "val_annotations.txt"
    if (val_dir / "images").is_dir() and annotations.is_file():
        for line in annotations.read_text().splitlines():
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 2:
                continue
            fname, wnid = parts[0], parts[1]
            if wnid not in index:
                raise DatasetError(f"tinyimagenet: {annotations} names unknown class {wnid!r}")
            path = val_dir / "images" / fname
            if not path.is_file():
                raise DatasetError(f"tinyimagenet: {path} is listed in {annotations} but missing")
            test.append((path, index[wnid]))
    else:  # reshuffled: val/<wnid>/images/*.JPEG
        for wnid in classes:
            test.extend((f, index[wnid]) for f in class_files(val_dir / wnid))
    if not test:
        raise DatasetError(
            f"tinyimagenet: no validation images in {val_dir} (expected images/ with "
            f"val_annotations.txt, or one folder per class). {how}"
        )
    return classes, train, test


def _decode_images(files: Sequence[Path], size: int) -> torch.Tensor:
    from PIL import Image

    def decode(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # a few Tiny-ImageNet images are greyscale
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)

    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    # PIL releases the GIL while decoding, so threads scale.
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(decode, files, chunksize=64)):
            out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float32)
        part = torch.nn.functional.interpolate(
            part, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _tiny_cache_valid(blob: Any, classes: list[str]) -> bool:
    return (
        isinstance(blob, dict)
        and blob.get("version") == _TINY_CACHE_VERSION
        and blob.get("classes") == classes
    )


def _load_tinyimagenet(config: Mapping[str, Any], data_dir: Path) -> Dataset:
    image_size = config["image_size"]
    if image_size is not None and int(image_size) < 1:
        raise DatasetError(f"image_size must be a positive integer or null, got {image_size}")
    root = data_dir / TINY_DIR
    if not root.is_dir():
        raise DatasetError(
            f"tinyimagenet is not in data directory {data_dir}: {root} does not exist. "
            f"Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it under "
            f"{data_dir}, or set data_dir / $XSAM_DATA_DIR to the directory that contains "
            f"{TINY_DIR}/."
        )
    size = int(image_size) if image_size else _TINY_NATIVE
    wnids_file = root / "wnids.txt"

    def cache_path(s: int) -> Path:
        return root / f"xsam-cache-{s}.pt"

    def read_cache(s: int, classes: list[str] | None) -> dict[str, Any] | None:
        path = cache_path(s)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt or from another version: rebuild
            return None
        if classes is None:
            classes = blob.get("classes") if isinstance(blob, dict) else None
        return blob if classes is not None and _tiny_cache_valid(blob, classes) else None

    # Cheap validity check without listing 110k files: the class list.
    known = None
    if wnids_file.is_file():
        known = [ln.strip() for ln in wnids_file.read_text().splitlines() if ln.strip()]
    blob = read_cache(size, known)
    if blob is None:
        with _file_lock(root / ".xsam-cache.lock"):
            blob = read_cache(size, known)  # another trial may have built it meanwhile
            if blob is None:
                blob = _build_tiny_cache(root, data_dir, size, read_cache)
                _write_cache(cache_path(size), lambda fh: torch.save(blob, fh))
    return Dataset(
        name="tinyimagenet",
        x_train=blob["x_train"],
        y_train=blob["y_train"],
        x_test=blob["x_test"],
        y_test=blob["y_test"],
        num_classes=len(blob["classes"]),
        input_shape=tuple(blob["x_train"].shape[1:]),
        augment=PaperAugment() if config["augment"] else None,
        mean=tuple(blob["mean"]),
        std=tuple(blob["std"]),
    )


def _build_tiny_cache(
    root: Path,
    data_dir: Path,
    size: int,
    read_cache: Callable[[int, list[str] | None], dict[str, Any] | None],
) -> dict[str, Any]:
    classes, train, test = _tiny_listing(root, data_dir)
    native = read_cache(_TINY_NATIVE, classes) if size != _TINY_NATIVE else None
    if native is not None:  # resizing the decoded native images is much faster
        x_train = _resize_uint8(native["x_train"], size)
        x_test = _resize_uint8(native["x_test"], size)
        y_train, y_test = native["y_train"], native["y_test"]
    else:
        x_train = _decode_images([f for f, _ in train], _TINY_NATIVE)
        x_test = _decode_images([f for f, _ in test], _TINY_NATIVE)
        if size != _TINY_NATIVE:
            x_train, x_test = _resize_uint8(x_train, size), _resize_uint8(x_test, size)
        y_train = torch.tensor([lbl for _, lbl in train], dtype=torch.int64)
        y_test = torch.tensor([lbl for _, lbl in test], dtype=torch.int64)
    mean, std = _channel_stats(x_train)
    return {
        "version": _TINY_CACHE_VERSION,
        "classes": classes,
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "mean": list(mean),
        "std": list(std),
    }


def _load_fake(config: Mapping[str, Any], data_dir: Path) -> Dataset:
    import torchvision.datasets as tvd

    shape = tuple(int(v) for v in config["fake_shape"])
    classes = int(config["fake_classes"])
    n_train = int(config["fake_train_size"])
    n_test = int(config["fake_test_size"])
    seed = int(config["seed"])
    if len(shape) != 3 or not 1 <= shape[0] <= 4 or min(shape) < 1:
        raise DatasetError(
            f"fake_shape must be [channels, height, width] with 1-4 channels, got {list(shape)}"
        )
    if classes < 2 or n_train < 1 or n_test < 1:
        raise DatasetError(
            f"fake needs fake_classes >= 2 and sizes >= 1, got fake_classes={classes}, "
            f"fake_train_size={n_train}, fake_test_size={n_test}"
        )

    def build(size: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        fake = tvd.FakeData(size=size, image_size=shape, num_classes=classes, random_offset=offset)
        xs = np.empty((size, shape[1], shape[2], shape[0]), dtype=np.uint8)
        ys = np.empty(size, dtype=np.int64)
        for i in range(size):
            img, label = fake[i]
            arr = np.asarray(img, dtype=np.uint8)
            xs[i] = arr.reshape(shape[1], shape[2], shape[0])  # 1 channel comes back 2-D
            ys[i] = label
        return torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(ys)

    # FakeData seeds image i with i + offset: disjoint offsets keep the test
    # images distinct from the training images and from other seeds' data.
    base = seed * 10_000_019
    x_train, y_train = build(n_train, base)
    x_test, y_test = build(n_test, base + n_train)
    mean, std = _channel_stats(x_train)
    return Dataset(
        name="fake",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=classes,
        input_shape=shape,
        augment=PaperAugment() if config["augment"] else None,
        mean=mean,
        std=std,
    )


def load_dataset(config: Mapping[str, Any]) -> Dataset:
    """Loads the dataset a trial config names, on the CPU.

    Args:
        config: Trial config; reads ``dataset``, ``data_dir``, ``image_size``,
            ``fake_shape``, ``fake_classes``, ``fake_train_size``,
            ``fake_test_size``, ``augment`` and ``seed`` (``fake`` only);
            missing keys take the defaults of ``xsam_contract.TRIAL_KEYS``.

    Returns:
        The dataset; call :meth:`Dataset.to` to move it to a device.

    Raises:
        DatasetError: Unknown name (the message lists the registered ones),
            bad parameters, or data that is missing and cannot be fetched
            (the message says how to provide it).
    """
    full = {**trial_defaults(), **config}
    try:
        loader = DATASETS.load(full["dataset"])
    except RegistryError as err:
        raise DatasetError(f"dataset: {err}") from None
    return loader(full, resolve_data_dir(full))
