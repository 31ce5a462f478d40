import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import transforms

from cifar_course import data
from cifar_course.errors import CourseError


def test_smoke_slice_sizes_and_items(data_root):
    train, test = data.get_datasets()
    assert (len(train), len(test)) == (data.SMOKE_TRAIN, data.SMOKE_TEST)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    # first labels of the official release, per the data's README
    assert train.targets[:10] == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test.targets[:10] == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert train.classes[0] == "airplane" and len(train.classes) == 10


def test_tensor_path_matches_totensor(data_root):
    train = data.CourseCIFAR10(True, transforms.ToTensor())
    fast = data.TensorData(True)
    images, labels = next(fast.batches(16))
    expected = torch.stack([train[i][0] for i in range(16)])
    torch.testing.assert_close(images, expected)
    assert labels.tolist() == train.targets[:16]


def test_tensor_path_shuffles_per_generator(data_root):
    fast = data.TensorData(False, limit=100)
    a = next(fast.batches(10, shuffle=True, generator=torch.Generator().manual_seed(1)))[1]
    b = next(fast.batches(10, shuffle=True, generator=torch.Generator().manual_seed(2)))[1]
    seen = torch.cat([y for _, y in fast.batches(7, shuffle=True)])
    assert not torch.equal(a, b)
    assert sorted(seen.tolist()) == sorted(fast.labels.tolist())


def test_full_data_check_counts(data_root, monkeypatch):
    monkeypatch.delenv("CIFAR_COURSE_SMOKE")
    root, n_train, n_test = data.check_data()
    assert (n_train, n_test) == (50_000, 10_000)


def test_no_data_message_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR_COURSE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr("torchvision.datasets.CIFAR10.download", offline)
    with pytest.raises(CourseError) as info:
        data.get_datasets()
    message = str(info.value)
    assert "CIFAR_COURSE_DATA" in message and "download" in message


def test_a_download_that_receives_nothing_fails_instead_of_hanging(tmp_path, monkeypatch):
    """A server that accepts the connection and never answers, as behind a firewall that drops
    packets: without a timeout torchvision would wait for ever."""
    monkeypatch.delenv("CIFAR_COURSE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    host, port = silent.getsockname()
    monkeypatch.setattr("torchvision.datasets.CIFAR10.url", f"http://{host}:{port}/cifar.tar.gz")
    monkeypatch.setattr(data, "DOWNLOAD_STALL_S", 1.0)
    outcome: list[BaseException] = []

    def download() -> None:
        try:
            data.find_data_root()
        except BaseException as error:
            outcome.append(error)

    waiting = threading.Thread(target=download, daemon=True)  # a hang fails, not blocks, the test
    waiting.start()
    waiting.join(timeout=30)
    silent.close()
    assert not waiting.is_alive(), "the download still waits on a server that never answers"
    assert len(outcome) == 1 and isinstance(outcome[0], CourseError), outcome
    assert "download failed" in str(outcome[0]) and "CIFAR_COURSE_DATA" in str(outcome[0])
    assert socket.getdefaulttimeout() is None  # the process's default is put back


def test_env_var_pointing_at_wrong_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(tmp_path))
    with pytest.raises(CourseError, match="cifar-10-batches-py"):
        data.get_datasets()


def test_env_var_pointing_at_the_batches_folder_itself_names_the_folder_above(
    data_root, monkeypatch
):
    batches = data_root / data.BASE_FOLDER
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(batches))
    with pytest.raises(CourseError) as info:
        data.find_data_root()
    assert "is the 'cifar-10-batches-py/' folder itself" in str(info.value)
    assert f"'{data_root}'" in str(info.value)


def _copy_with_links(src: Path, dst: Path) -> Path:
    folder = dst / data.BASE_FOLDER
    folder.mkdir(parents=True)
    for f in (src / data.BASE_FOLDER).iterdir():
        os.symlink(f, folder / f.name)
    shutil.copy(src / "MD5SUMS", dst / "MD5SUMS")
    return folder


def test_corrupted_batch_is_detected(data_root, tmp_path):
    folder = _copy_with_links(data_root, tmp_path)
    (folder / "test_batch").unlink()
    raw = bytearray((data_root / data.BASE_FOLDER / "test_batch").read_bytes())
    raw[5000] ^= 0xFF
    (folder / "test_batch").write_bytes(raw)
    with pytest.raises(CourseError, match="test_batch.*damaged"):
        data.verify_files(tmp_path)


def test_truncated_batch_fails_clearly_when_loading(data_root, tmp_path, monkeypatch):
    folder = _copy_with_links(data_root, tmp_path)
    (folder / "test_batch").unlink()
    raw = (data_root / data.BASE_FOLDER / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(tmp_path))
    with pytest.raises(CourseError, match="test_batch.*damaged"):
        data.get_datasets()
    # with a matching MD5SUMS the md5 check passes, and unpickling reports the damage
    with (tmp_path / "MD5SUMS").open("a") as sums:  # a later line wins
        sums.write(f"{data._md5(folder / 'test_batch')}  x/test_batch\n")
    with pytest.raises(CourseError, match="Cannot read CIFAR-10 file .*test_batch"):
        data.get_datasets()


def test_missing_batch_is_named(data_root, tmp_path):
    folder = _copy_with_links(data_root, tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(CourseError, match="data_batch_3.*missing"):
        data.verify_files(tmp_path)


@pytest.mark.slow
def test_pixels_are_the_published_statistics(data_root, monkeypatch):
    monkeypatch.delenv("CIFAR_COURSE_SMOKE")
    images = data.load_arrays(True, data_root).images.astype(np.float64) / 255
    mean = images.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, [0.49139968, 0.48215841, 0.44653091], atol=1e-6)


def test_tensor_path_shuffles_exactly_like_the_dataloader():
    from torch.utils.data import DataLoader

    loader = DataLoader(
        range(1000), batch_size=1000, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    expected = next(iter(loader)).tolist()
    assert data.shuffled_order(1000, torch.Generator().manual_seed(3)).tolist() == expected


def test_by_mode_answers_with_the_full_runs_size_unless_in_smoke_mode(monkeypatch):
    from cifar_course import by_mode

    for value in ("", "0", "false"):
        monkeypatch.setenv("CIFAR_COURSE_SMOKE", value)
        assert by_mode(full=10, smoke=2) == 10
    monkeypatch.setenv("CIFAR_COURSE_SMOKE", "1")
    assert by_mode(full=10, smoke=2) == 2
