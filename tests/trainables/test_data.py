"""Tests of the dataset registry: loaders, augmentation and batch iteration."""

from __future__ import annotations

import pickle
import random
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import data
from trainables.data import (
    CIFAR_STATS,
    Dataset,
    DatasetError,
    PaperAugment,
    iterate_batches,
    load_dataset,
    make_dataloader,
)
from xsam_contract import DATASETS

# --------------------------------------------------------------------------
# helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_images(
    n: int, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0
) -> torch.Tensor:
    # Strictly positive values: a zero in an output can only come from padding or Cutout.
    return torch.randint(1, 256, (n, *shape), generator=_gen(seed), dtype=torch.uint8)


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = img[..., i + dy, j + dx], zero outside the image."""
    h, w = img.shape[-2:]
    out = torch.zeros_like(img)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    out[..., ys:ye, xs:xe] = img[..., ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def _index_dataset(n: int, augment: bool = False) -> Dataset:
    """A dataset whose label is the sample index, so coverage can be checked exactly."""
    x = _random_images(n, (3, 8, 8), seed=3)
    return Dataset(
        name="fake",
        x_train=x,
        y_train=torch.arange(n),
        x_test=x.clone(),
        y_test=torch.arange(n),
        num_classes=n,
        input_shape=(3, 8, 8),
        augment=PaperAugment(pad=1, cutout_size=2) if augment else None,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


def _fake_config(**overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "dataset": "fake",
        "fake_shape": [3, 32, 32],
        "fake_classes": 10,
        "fake_train_size": 64,
        "fake_test_size": 32,
        "seed": 0,
    }
    config.update(overrides)
    return config


# --------------------------------------------------------------------------
# registry and data_dir


def test_registry_names_and_unknown_dataset() -> None:
    assert set(DATASETS) == {"mnist1d", "digits", "cifar10", "cifar100", "tinyimagenet", "fake"}
    with pytest.raises(DatasetError) as err:
        load_dataset({"dataset": "imagenet"})
    assert str(err.value).startswith("dataset: unknown dataset 'imagenet'")
    for name in DATASETS:
        assert name in str(err.value)


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XSAM_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir({}) == tmp_path / "env"
    assert data.resolve_data_dir({"data_dir": None}) == tmp_path / "env"
    assert data.resolve_data_dir({"data_dir": str(tmp_path / "x")}) == tmp_path / "x"
    monkeypatch.delenv("XSAM_DATA_DIR")
    assert data.resolve_data_dir({}) == Path.home() / ".cache" / "xsam-tune" / "data"
    assert data.resolve_data_dir({"data_dir": "~/d"}) == Path.home() / "d"


# --------------------------------------------------------------------------
# mnist1d


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mnist1d-data")


def test_mnist1d_shapes_and_standardisation(mnist1d_dir: Path) -> None:
    ds = load_dataset({"dataset": "mnist1d", "data_dir": str(mnist1d_dir)})
    assert ds.input_shape == (1, 40)
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())
    assert ds.mean is None and ds.augment is None
    assert abs(ds.x_train.mean().item()) < 1e-4
    assert abs(ds.x_train.std().item() - 1.0) < 1e-3
    # Batches are the stored (standardised) signals themselves.
    xb, _ = next(iterate_batches(ds, False, 7, None))
    torch.testing.assert_close(xb, ds.x_test[:7])


def test_mnist1d_cache_written_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    calls = Counter()
    real = mnist1d.data.make_dataset

    def counting(*args: object, **kwargs: object) -> dict[str, object]:
        calls["make"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(mnist1d.data, "make_dataset", counting)
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    first = load_dataset({"dataset": "mnist1d", "data_dir": str(tmp_path)})
    assert calls["make"] == 1
    # Generation reseeds the global RNGs internally; the loader restores them.
    assert (random.random(), np.random.rand()) == expected
    cache = tmp_path / "mnist1d" / "mnist1d.npz"
    assert cache.is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("make_dataset called although the cache exists")

    monkeypatch.setattr(mnist1d.data, "make_dataset", forbidden)
    second = load_dataset({"dataset": "mnist1d", "data_dir": str(tmp_path)})
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(second, name))

    # A corrupt cache is rebuilt rather than fatal.
    cache.write_bytes(b"not an npz")
    monkeypatch.setattr(mnist1d.data, "make_dataset", counting)
    third = load_dataset({"dataset": "mnist1d", "data_dir": str(tmp_path)})
    assert calls["make"] == 2
    assert torch.equal(first.x_train, third.x_train)


# --------------------------------------------------------------------------
# digits


def test_digits_split_is_stratified_and_deterministic() -> None:
    ds = load_dataset({"dataset": "digits"})
    again = load_dataset({"dataset": "digits", "seed": 7})  # the split ignores the trial seed
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    assert ds.input_shape == (1, 8, 8)
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == torch.float32
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10
    n_train, n_test = ds.num_train, ds.num_test
    assert n_train + n_test == 1797
    assert abs(n_test / 1797 - 0.2) < 0.01
    train_counts = torch.bincount(ds.y_train, minlength=10).double()
    test_counts = torch.bincount(ds.y_test, minlength=10).double()
    # Stratified: every class keeps (about) the same share in both splits.
    share = test_counts / (train_counts + test_counts)
    assert torch.all((share - 0.2).abs() < 0.02)
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-2
    assert ds.augment is None


# --------------------------------------------------------------------------
# fake


def test_fake_shapes_seeding_and_stats() -> None:
    ds = load_dataset(_fake_config())
    assert ds.input_shape == (3, 32, 32)
    assert ds.x_train.shape == (64, 3, 32, 32) and ds.x_test.shape == (32, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10
    assert int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) < 10
    assert isinstance(ds.augment, PaperAugment)
    # Same seed, same data; another seed, other data; test differs from train.
    same = load_dataset(_fake_config())
    other = load_dataset(_fake_config(seed=1))
    assert torch.equal(ds.x_train, same.x_train) and torch.equal(ds.y_test, same.y_test)
    assert not torch.equal(ds.x_train, other.x_train)
    assert not torch.equal(ds.x_train[:32], ds.x_test)
    # The per-channel statistics standardise the training images.
    x = ds.normalize(ds.x_train)
    assert torch.all(x.mean(dim=(0, 2, 3)).abs() < 1e-3)
    assert torch.all((x.std(dim=(0, 2, 3)) - 1).abs() < 1e-2)


def test_fake_other_shapes_and_options() -> None:
    ds = load_dataset(_fake_config(fake_shape=[1, 8, 12], fake_classes=3, augment=False))
    assert ds.x_train.shape == (64, 1, 8, 12) and ds.input_shape == (1, 8, 12)
    assert ds.num_classes == 3 and int(ds.y_train.max()) < 3
    assert ds.augment is None
    assert len(ds.mean or ()) == 1
    for bad in ([3, 32], [5, 32, 32], [3, 0, 32]):
        with pytest.raises(DatasetError, match="fake_shape"):
            load_dataset(_fake_config(fake_shape=bad))
    with pytest.raises(DatasetError, match="fake_classes"):
        load_dataset(_fake_config(fake_classes=1))


def test_normalize_and_to_keep_uint8() -> None:
    ds = load_dataset(_fake_config(fake_train_size=8, fake_test_size=4))
    moved = ds.to("cpu")
    assert moved.x_train.dtype == torch.uint8 and moved.x_test.dtype == torch.uint8
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    zeros = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    full = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    torch.testing.assert_close(ds.normalize(zeros), (-mean / std).expand(2, 3, 4, 4))
    torch.testing.assert_close(ds.normalize(full), ((1 - mean) / std).expand(2, 3, 4, 4))
    assert ds.normalize(zeros).dtype == torch.float32


# --------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize(
    ("name", "archive"),
    [("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz")],
)
def test_cifar_offline_raises_naming_the_directory(
    name: str, archive: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)  # belt and braces: never go online
    data_dir = tmp_path / "no-data-here"
    with pytest.raises(DatasetError) as err:
        load_dataset({"dataset": name, "data_dir": str(data_dir)})
    message = str(err.value)
    assert str(data_dir) in message
    assert archive in message
    assert "unreachable" in message


def _write_cifar10(root: Path, n_per_batch: int) -> None:
    """Writes a tiny CIFAR-10 in the python-pickle layout; channel c of every image is 10(c+1)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    image = np.concatenate([np.full(1024, 10 * (c + 1), dtype=np.uint8) for c in range(3)])
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = np.stack([image] * n_per_batch)
        # Make one pixel of each image unique so the row-major layout is checked too.
        rows[:, 5] = np.arange(n_per_batch, dtype=np.uint8) + 100
        labels = [i % 10 for i in range(n_per_batch)]
        with open(folder / fname, "wb") as fh:
            pickle.dump({"data": rows, "labels": labels}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)


def test_cifar_files_become_uint8_nchw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    _write_cifar10(tmp_path, n_per_batch=4)
    # The synthetic files cannot match the real archive's checksums.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    ds = load_dataset({"dataset": "cifar10", "data_dir": str(tmp_path)})
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    for c in range(3):
        plane = ds.x_test[:, c].reshape(4, -1)
        if c == 0:  # pixel 5 of the red plane is row 0, column 5
            assert ds.x_test[:, 0, 0, 5].tolist() == [100, 101, 102, 103]
            plane = torch.cat([plane[:, :5], plane[:, 6:]], dim=1)
        assert torch.all(plane == 10 * (c + 1))
    assert ds.y_test.tolist() == [0, 1, 2, 3]
    assert (ds.mean, ds.std) == CIFAR_STATS["cifar10"]
    assert isinstance(ds.augment, PaperAugment)


# --------------------------------------------------------------------------
# Tiny-ImageNet from a synthetic directory


_TINY_CLASSES = ("n0001", "n0002")


def _colour(label: int, i: int) -> tuple[int, int, int]:
    return (40 + 150 * label, 20 + 40 * i, 90)


def _make_tiny(
    root: Path, reshuffled: bool, per_class: int = 3
) -> list[tuple[int, tuple[int, int, int]]]:
    """Writes a 2-class Tiny-ImageNet; returns the expected (label, colour) of the val images."""
    tiny = root / "tiny-imagenet-200"
    (tiny / "wnids.txt").parent.mkdir(parents=True)
    (tiny / "wnids.txt").write_text("\n".join(_TINY_CLASSES) + "\n")
    for label, wnid in enumerate(_TINY_CLASSES):
        folder = tiny / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (64, 64), _colour(label, i)).save(
                folder / f"{wnid}_{i}.JPEG", quality=95
            )
        (tiny / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    # One greyscale training image, as in the real data.
    Image.new("L", (64, 64), 128).save(tiny / "train" / "n0001" / "images" / "n0001_grey.JPEG")
    expected = []
    lines = []
    for k in range(4):
        label = k % 2
        wnid = _TINY_CLASSES[label]
        colour = _colour(label, k)
        fname = f"val_{k}.JPEG"
        if reshuffled:
            folder = tiny / "val" / wnid / "images"
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = tiny / "val" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            lines.append(f"{fname}\t{wnid}\t0\t0\t63\t63")
        Image.new("RGB", (64, 64), colour).save(folder / fname, quality=95)
        expected.append((label, colour))
    if not reshuffled:
        (tiny / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return expected


def _observed(x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, tuple[int, ...]]]:
    colours = x.double().mean(dim=(2, 3)).round().long()
    return sorted((int(lbl), tuple(int(v) for v in c)) for lbl, c in zip(y, colours, strict=True))


def _assert_colours_match(got: list, want: list, tol: int = 3) -> None:
    assert len(got) == len(want)
    for (gl, gc), (wl, wc) in zip(got, sorted(want), strict=True):
        assert gl == wl
        assert max(abs(a - b) for a, b in zip(gc, wc, strict=True)) <= tol, (gc, wc)


@pytest.mark.parametrize("reshuffled", [False, True], ids=["raw-val", "reshuffled-val"])
def test_tinyimagenet_from_directory(tmp_path: Path, reshuffled: bool) -> None:
    expected_val = _make_tiny(tmp_path, reshuffled)
    ds = load_dataset({"dataset": "tinyimagenet", "data_dir": str(tmp_path)})
    assert ds.input_shape == (3, 64, 64) and ds.num_classes == 2
    assert ds.x_train.shape == (7, 3, 64, 64) and ds.x_test.shape == (4, 3, 64, 64)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    _assert_colours_match(_observed(ds.x_test, ds.y_test), expected_val)
    want_train = [(lbl, _colour(lbl, i)) for lbl in (0, 1) for i in range(3)] + [
        (0, (128, 128, 128))
    ]
    _assert_colours_match(_observed(ds.x_train, ds.y_train), want_train)
    assert isinstance(ds.augment, PaperAugment)
    assert ds.mean is not None and len(ds.mean) == 3
    assert (tmp_path / "tiny-imagenet-200" / "xsam-cache-64.pt").is_file()


def test_tinyimagenet_cache_reuse_and_resize(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected_val = _make_tiny(tmp_path, reshuffled=False)
    first = load_dataset({"dataset": "tinyimagenet", "data_dir": str(tmp_path), "augment": False})
    assert first.augment is None

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded images although a cache exists")

    monkeypatch.setattr(data, "_decode_images", forbidden)
    second = load_dataset({"dataset": "tinyimagenet", "data_dir": str(tmp_path)})
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    # A new size is derived from the decoded cache, not from the JPEGs.
    small = load_dataset({"dataset": "tinyimagenet", "data_dir": str(tmp_path), "image_size": 32})
    assert small.input_shape == (3, 32, 32) and small.x_test.shape == (4, 3, 32, 32)
    assert small.x_train.dtype == torch.uint8
    _assert_colours_match(_observed(small.x_test, small.y_test), expected_val)
    assert (tmp_path / "tiny-imagenet-200" / "xsam-cache-32.pt").is_file()


def test_tinyimagenet_missing_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset({"dataset": "tinyimagenet", "data_dir": str(tmp_path)})
    assert str(tmp_path) in str(err.value) and "tiny-imagenet-200" in str(err.value)
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="val"):
        load_dataset({"dataset": "tinyimagenet", "data_dir": str(tmp_path)})


# --------------------------------------------------------------------------
# augmentation


def test_augment_reproducible_and_shape_preserving() -> None:
    x = _random_images(32)
    aug = PaperAugment()
    a, b = aug(x, _gen(0)), aug(x, _gen(0))
    c = aug(x, _gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, x)
    # Float input works the same way.
    assert torch.equal(aug(x.float(), _gen(0)), a.float())


def test_crop_is_a_zero_filled_shift_within_the_padding() -> None:
    x = _random_images(24)
    out = PaperAugment(pad=4, flip_p=0.0, cutout_p=0.0)(x, _gen(5))
    shifts = set()
    for img, res in zip(x, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.equal(res, _shift(img, dy, dx))
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    # Offsets vary across the batch, independently in both directions.
    assert len({dy for dy, _ in shifts}) > 3 and len({dx for _, dx in shifts}) > 3
    assert any(dy != dx for dy, dx in shifts)


def test_flip_is_horizontal_with_probability_half() -> None:
    x = _random_images(400, (1, 8, 8))
    out = PaperAugment(pad=0, flip_p=0.5, cutout_p=0.0)(x, _gen(2))
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    assert torch.all(same ^ flipped)
    assert 0.4 < flipped.double().mean().item() < 0.6


def test_cutout_zeroes_a_clipped_square() -> None:
    x = _random_images(300)
    out = PaperAugment(pad=0, flip_p=0.0, cutout_p=1.0, cutout_size=16)(x, _gen(3))
    clipped_rows = clipped_cols = 0
    for img, res in zip(x, out, strict=True):
        hole = res == 0
        assert torch.equal(hole[0], hole[1]) and torch.equal(hole[0], hole[2])  # all channels
        assert torch.equal(res[~hole], img[~hole])  # nothing else changed
        rows = hole[0].any(dim=1).nonzero().flatten()
        cols = hole[0].any(dim=0).nonzero().flatten()
        assert len(rows) > 0
        # A solid rectangle of contiguous rows and columns...
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
        assert int(hole[0].sum()) == len(rows) * len(cols)
        # ... 16 x 16 unless cut by the border.
        for idx, size in ((rows, 32), (cols, 32)):
            assert len(idx) <= 16
            if len(idx) < 16:
                assert idx[0] == 0 or idx[-1] == size - 1
        clipped_rows += len(rows) < 16
        clipped_cols += len(cols) < 16
    # Centres reach every border, so holes get clipped in both directions.
    assert clipped_rows > 0 and clipped_cols > 0


def test_cutout_probability_half() -> None:
    x = _random_images(400, (1, 8, 8))
    out = PaperAugment(pad=0, flip_p=0.0, cutout_p=0.5, cutout_size=4)(x, _gen(4))
    with_hole = (out == 0).flatten(1).any(dim=1).double().mean().item()
    assert 0.4 < with_hole < 0.6


# --------------------------------------------------------------------------
# batches


def test_iterate_batches_covers_every_sample_once() -> None:
    ds = _index_dataset(103, augment=True)
    seen = []
    sizes = []
    for xb, yb in iterate_batches(ds, True, 10, _gen(0)):
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 8, 8)
        seen.append(yb)
        sizes.append(len(yb))
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(103))
    assert sizes == [10] * 10 + [3]
    assert not torch.equal(order, torch.arange(103))  # shuffled
    again = torch.cat([y for _, y in iterate_batches(ds, True, 10, _gen(0))])
    other = torch.cat([y for _, y in iterate_batches(ds, True, 10, _gen(1))])
    assert torch.equal(order, again) and not torch.equal(order, other)

    test_batches = list(iterate_batches(ds, False, 10, None))
    assert torch.equal(torch.cat([y for _, y in test_batches]), torch.arange(103))
    torch.testing.assert_close(torch.cat([x for x, _ in test_batches]), ds.normalize(ds.x_test))


def test_train_batches_are_shuffled_augmented_then_normalised() -> None:
    ds = load_dataset(_fake_config())
    got = list(iterate_batches(ds, True, 20, _gen(9)))
    g = _gen(9)
    order = torch.randperm(ds.num_train, generator=g)
    for k, (xb, yb) in enumerate(got):
        idx = order[20 * k : 20 * (k + 1)]
        expected = ds.normalize(ds.augment(ds.x_train[idx], g))
        torch.testing.assert_close(xb, expected)
        assert torch.equal(yb, ds.y_train[idx])
    # Cutout holes show up as the normalised value of a stored zero.
    zero = ds.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    x = torch.cat([b for b, _ in got])
    assert any(bool((x[:, c] == zero[c]).any()) for c in range(3))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_make_dataloader_covers_and_reproduces(num_workers: int) -> None:
    ds = _index_dataset(45, augment=True)

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = make_dataloader(ds, True, 8, num_workers=num_workers, generator=_gen(seed))
        return list(loader)

    batches = run(0)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(45))
    assert [len(y) for _, y in batches] == [8] * 5 + [5]
    assert all(x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8) for x, _ in batches)
    again = run(0)
    for (xa, ya), (xb, yb) in zip(batches, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = torch.cat([x for x, _ in run(1)])
    assert not torch.equal(torch.cat([x for x, _ in batches]), other)
    # Training batches are augmented: some differ from the plain normalised images.
    plain = ds.normalize(ds.x_train[labels])
    assert not torch.equal(torch.cat([x for x, _ in batches]), plain)

    test = list(make_dataloader(ds, False, 8, num_workers=num_workers, generator=None))
    assert torch.equal(torch.cat([y for _, y in test]), torch.arange(45))
    torch.testing.assert_close(torch.cat([x for x, _ in test]), ds.normalize(ds.x_test))
