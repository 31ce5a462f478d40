import subprocess
import sys
import textwrap

import pytest
import torch

from cifar_course import checkpoints
from cifar_course.errors import CourseError
from cifar_course.models import LessonNet, LessonNetSequential


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LessonNet().eval()


def same_outputs(a, b):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_method2_state_dict_round_trip(model, tmp_path):
    path = checkpoints.save_state_dict(model, tmp_path / "m2.pth")
    loaded = LessonNet()
    loaded.load_state_dict(checkpoints.load(path))
    assert same_outputs(model, loaded)
    assert same_outputs(model, checkpoints.load_model(path))


def test_method1_needs_opt_in(model, tmp_path):
    path = checkpoints.save_whole_model(model, tmp_path / "m1.pth")
    with pytest.raises(CourseError, match="trust_pickle=True"):
        checkpoints.load(path)
    assert same_outputs(model, checkpoints.load(path, trust_pickle=True))
    assert same_outputs(model, checkpoints.load_model(path, trust_pickle=True))


def test_method1_loads_in_a_fresh_process(model, tmp_path):
    path = checkpoints.save_whole_model(model, tmp_path / "m1.pth")
    expected = model(torch.ones(1, 3, 32, 32)).detach()
    torch.save(expected, tmp_path / "expected.pt")
    code = textwrap.dedent(f"""
        import torch
        m = torch.load({str(path)!r}, weights_only=False)
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert type(m).__module__ == "cifar_course.models", type(m)
        assert torch.equal(m(torch.ones(1, 3, 32, 32)), expected)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_training_checkpoint_round_trip_and_map_location(model, tmp_path):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    history = [{"epoch": 1, "test_accuracy": 0.3}]
    path = checkpoints.save_checkpoint(
        tmp_path / "c.pt", model, optimizer, 1, history, {"lr": 0.01}
    )
    state = checkpoints.load_checkpoint(path, map_location=torch.device("cpu"))
    assert state["epoch"] == 1 and state["history"] == history
    assert state["optimizer"]["state"]  # momentum buffers survived
    assert same_outputs(model, checkpoints.load_model(path, map_location="cpu"))
    assert same_outputs(model, checkpoints.load_model(path, map_location=lambda s, loc: s))


def test_a_recipes_extra_entries_are_saved_but_never_replace_the_checkpoints_own(model, tmp_path):
    slow = {"weight": torch.ones(3)}
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", model, extra={"lookahead": slow})
    state = checkpoints.load_checkpoint(path)
    assert torch.equal(state["lookahead"]["weight"], slow["weight"])
    assert same_outputs(model, checkpoints.load_model(path))  # evaluate/predict ignore it
    with pytest.raises(ValueError, match=r"\['epoch', 'model'\]"):
        checkpoints.save_checkpoint(tmp_path / "d.pt", model, extra={"model": {}, "epoch": 3})
    assert not (tmp_path / "d.pt").exists()


def test_sequential_state_dict_is_recognised(tmp_path):
    seq = LessonNetSequential()
    path = checkpoints.save_state_dict(seq, tmp_path / "seq.pth")
    assert isinstance(checkpoints.load_model(path), LessonNetSequential)


def test_crash_mid_save_keeps_previous_file(model, tmp_path, monkeypatch):
    path = checkpoints.save_state_dict(model, tmp_path / "keep.pth")
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_state_dict(LessonNet(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pth"]  # no temporary file left


class Boom:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_default_load_does_not_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": Boom(str(marker))}, path)
    with pytest.raises(CourseError, match="trust_pickle=True"):
        checkpoints.load(path)
    with pytest.raises(CourseError):
        checkpoints.load_model(path)
    assert not marker.exists()
    # the same file does run code when unpickled without protection: the test is real
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"this is not a checkpoint", "not a PyTorch checkpoint")],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CourseError, match=message):
        checkpoints.load_model(path)


def test_truncated_checkpoint(model, tmp_path):
    path = checkpoints.save_state_dict(model, tmp_path / "t.pth")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CourseError, match="truncated"):
        checkpoints.load_model(path)


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(CourseError, match="does not exist"):
        checkpoints.load(tmp_path / "nope.pt")
    with pytest.raises(CourseError, match="folder"):
        checkpoints.load(tmp_path)


def test_wrong_architecture_names_the_keys(tmp_path):
    sd = LessonNet().state_dict()
    del sd["linear2.bias"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(CourseError, match="linear2.bias.*extra.weight"):
        checkpoints.load_model(tmp_path / "w.pth")
    sd = LessonNet().state_dict()
    sd["linear2.weight"] = torch.zeros(5, 64)
    torch.save(sd, tmp_path / "s.pth")
    with pytest.raises(CourseError, match="wrong shapes"):
        checkpoints.load_model(tmp_path / "s.pth")


def test_not_a_model(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CourseError, match="list"):
        checkpoints.load_model(tmp_path / "list.pt")
    with pytest.raises(CourseError, match="not a training checkpoint"):
        checkpoints.load_checkpoint(tmp_path / "list.pt")


def test_unwritable_folder(model, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CourseError, match="Cannot write"):
        checkpoints.save_state_dict(model, tmp_path / "file" / "m.pth")


@pytest.mark.parametrize(
    "content",
    [b"import torch\nclass Tudui: ...\n", bytes(range(7, 256)) * 4],
    ids=["python source", "random bytes"],
)
def test_a_file_that_is_no_pytorch_file_is_named_so_and_never_sent_to_trust_pickle(
    tmp_path, content
):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    for trust_pickle in (False, True):
        with pytest.raises(CourseError) as info:
            checkpoints.load_model(path, trust_pickle=trust_pickle)
        assert "is not a PyTorch checkpoint" in str(info.value)
        assert "trust" not in str(info.value)


def test_a_checkpoint_with_damaged_bytes_is_refused_before_its_numbers_are_used(model, tmp_path):
    path = checkpoints.save_state_dict(model, tmp_path / "w.pth")
    data = bytearray(path.read_bytes())
    at = data.index(b"data/0") + 400  # inside the first tensor's bytes, past its file header
    data[at : at + 64] = bytes(64)
    path.write_bytes(data)
    torch.load(path, weights_only=True)  # PyTorch itself loads the wrong numbers without a word
    with pytest.raises(CourseError, match="is damaged: its part .* does not read back as it was"):
        checkpoints.load_model(path)


def test_a_file_saved_without_checksums_loads(model, tmp_path):
    """PyTorch can save without computing the zip checksums (it stores 0): nothing to check."""
    config = torch.utils.serialization.config.save
    kept = config.compute_crc32
    config.compute_crc32 = False
    try:
        path = checkpoints.save_state_dict(model, tmp_path / "nocrc.pth")
    finally:
        config.compute_crc32 = kept
    assert isinstance(checkpoints.load_model(path), type(model))


def test_a_zip_with_a_damaged_directory_gets_one_line_not_a_traceback(model, tmp_path):
    path = checkpoints.save_state_dict(model, tmp_path / "w.pth")
    data = bytearray(path.read_bytes())
    at = data.rindex(b"PK\x01\x02")  # a central directory entry's signature
    data[at : at + 4] = b"XXXX"
    path.write_bytes(data)
    with pytest.raises(CourseError, match="is truncated or not a PyTorch checkpoint"):
        checkpoints.load_model(path)


def test_export_into_a_folder_is_refused_and_writes_nothing(model, tmp_path):
    source = checkpoints.save_state_dict(model, tmp_path / "w.pth")
    folder = tmp_path / "out"
    folder.mkdir()
    for force in (False, True):
        with pytest.raises(CourseError, match="is a folder; give a file name"):
            checkpoints.export_state_dict(source, folder, force=force)
    assert list(folder.iterdir()) == []
