import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar_course.errors import CourseError
from cifar_course.inference import image_to_tensor, load_image, predict
from cifar_course.models import LessonNet

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "cifar_course" / "images"


def check_input(x: torch.Tensor) -> None:
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def rgb_mean(path) -> np.ndarray:
    return image_to_tensor(path)[0].mean(dim=(1, 2)).numpy()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I", "F", "YCbCr"])
def test_every_mode_becomes_the_model_input(tmp_path, mode):
    image = Image.new("RGB", (50, 40), (200, 100, 50)).convert(mode)
    suffix = ".jpg" if mode in ("CMYK", "YCbCr") else ".tiff" if mode in ("I", "F") else ".png"
    path = tmp_path / f"img{suffix}"
    image.save(path)
    check_input(image_to_tensor(path))


def test_rgba_drops_alpha_and_keeps_colour(tmp_path):
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(tmp_path / "a.png")
    np.testing.assert_allclose(rgb_mean(tmp_path / "a.png"), [1, 0, 0], atol=1e-6)


def test_cmyk_jpeg_colour(tmp_path):
    Image.new("RGB", (40, 40), (0, 0, 255)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    r, g, b = rgb_mean(tmp_path / "c.jpg")
    assert b > 0.9 and r < 0.1 and g < 0.1


def test_sixteen_bit_png_keeps_brightness(tmp_path):
    values = np.full((40, 40), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_allclose(rgb_mean(tmp_path / "g16.png"), [0.5] * 3, atol=0.01)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))  # left red, right blue, stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "r.jpg")
    assert upright.size == (32, 64)
    top, bottom = np.asarray(upright)[5, 16], np.asarray(upright)[58, 16]
    assert top[0] > 200 and bottom[2] > 200  # red on top, blue below


def test_palette_with_transparency_and_animated_gif(tmp_path):
    frames = [Image.new("P", (30, 30), i) for i in (1, 2, 3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], transparency=0)
    check_input(image_to_tensor(tmp_path / "anim.gif"))


@pytest.mark.parametrize("size", [(1, 1), (3000, 7), (7, 3000)])
def test_any_size(tmp_path, size):
    Image.new("RGB", size, (10, 20, 30)).save(tmp_path / "s.png")
    check_input(image_to_tensor(tmp_path / "s.png"))


def test_non_image_and_damaged_files(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(CourseError, match="not an image"):
        image_to_tensor(tmp_path / "notes.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CourseError, match="empty"):
        image_to_tensor(tmp_path / "empty.jpg")
    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CourseError, match="truncated"):
        image_to_tensor(tmp_path / "cut.jpg")
    with pytest.raises(CourseError, match="no such file"):
        image_to_tensor(tmp_path / "missing.png")
    with pytest.raises(CourseError, match="folder"):
        image_to_tensor(tmp_path)


def test_non_ascii_path_with_spaces(tmp_path):
    path = tmp_path / "测试 图片.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(path)
    check_input(image_to_tensor(path))


def test_predict_returns_sorted_top_k_probabilities():
    torch.manual_seed(0)
    top = predict(LessonNet(), IMAGES / "cat.png", k=10)
    probs = [p for _, p in top]
    assert len(top) == 10 and probs == sorted(probs, reverse=True)
    assert abs(sum(probs) - 1) < 1e-5
    assert {name for name, _ in top} == {
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
    }


@pytest.mark.parametrize("name, mode", [("cat.png", "RGBA"), ("deer.jpg", "L")])
def test_shipped_course_images(name, mode):
    assert Image.open(IMAGES / name).mode == mode
    check_input(image_to_tensor(IMAGES / name))


modes = st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I", "F", "I;16", "HSV"])


@settings(max_examples=60, deadline=None)
@given(mode=modes, width=st.integers(1, 300), height=st.integers(1, 300), seed=st.integers(0, 99))
def test_property_any_image_gives_a_valid_input(mode, width, height, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    image = image.convert("L").convert(mode) if mode in ("I;16", "F", "I") else image.convert(mode)
    check_input(image_to_tensor(image))


def test_dark_sixteen_bit_image_stays_dark(tmp_path):
    values = np.full((40, 40), 200, dtype=np.uint16)  # 200 of 65535: nearly black
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    assert image_to_tensor(image).max() < 0.01
