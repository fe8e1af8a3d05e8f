"""Bad and odd inputs get a clear message or a clean conversion; outputs carry no metadata."""

import io

import numpy as np
import pytest
from PIL import Image

from faceshield import settings
from faceshield.images import ImageError, load_image, png_roundtrip, save_png


def _bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w=64, h=48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_truncated_jpeg():
    data = _bytes(_photo(256, 256), "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated|corrupt|could not be read"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb(monkeypatch):
    # A tiny PNG that declares more pixels than the limit is refused before decoding.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(settings, "MAX_DECODE_PIXELS", 1000)
    data = _bytes(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageError, match="decompression bomb|limit"):
        load_image(data)


def test_huge_photo_is_downscaled_with_notice():
    data = _bytes(Image.new("RGB", (20000, 20000), (120, 130, 140)), "JPEG", quality=50)
    loaded = load_image(data)
    assert max(loaded.pixels.shape[:2]) == settings.MAX_SIDE
    assert any("Downscaled" in n for n in loaded.notices)


def test_exif_rotation_applied():
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(_bytes(image, "JPEG", exif=exif))
    assert loaded.pixels.shape[:2] == (40, 20)
    assert any("EXIF" in n for n in loaded.notices)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "CMYK", "L", "1"])
def test_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    loaded = load_image(_bytes(_photo().convert(mode), fmt))
    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (48, 64, 3)


def test_transparency_flattened_on_white():
    image = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    loaded = load_image(_bytes(image, "PNG"))
    assert (loaded.pixels == 255).all()


def test_palette_with_transparency():
    image = Image.new("P", (30, 30))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    loaded = load_image(_bytes(image, "PNG", transparency=0))
    assert (loaded.pixels == 255).all()


def test_sixteen_bit_scaled_not_clipped():
    array = np.full((20, 20), 40000, np.uint16)
    loaded = load_image(_bytes(Image.fromarray(array), "PNG"))
    assert abs(int(loaded.pixels[0, 0, 0]) - 40000 // 256) <= 1
    dark = load_image(_bytes(Image.fromarray(np.full((20, 20), 200, np.uint16)), "PNG"))
    assert (dark.pixels == 0).all()  # 200 of 65535 is black, however dark the whole photo is


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(buf.getvalue())
    assert loaded.pixels[0, 0, 0] > 200 and any("Animated" in n for n in loaded.notices)


def test_no_exif_no_rotation_notice():
    assert not load_image(_bytes(_photo(), "PNG")).notices


def test_tiny_image_notice():
    loaded = load_image(np.zeros((1, 1, 3), np.uint8))
    assert loaded.pixels.shape == (1, 1, 3) and any("smaller" in n for n in loaded.notices)


def test_saved_png_has_no_metadata(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "SecretCamera"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS IFD
    source = _bytes(_photo(), "JPEG", exif=exif, icc_profile=b"fake-icc")
    loaded = load_image(source)
    out = save_png(loaded.pixels, tmp_path / "out.png")
    reread = Image.open(out)
    assert reread.format == "PNG"
    assert not reread.getexif() and "icc_profile" not in reread.info and "exif" not in reread.info
    assert b"SecretCamera" not in out.read_bytes()


def test_png_roundtrip_is_lossless():
    pixels = np.asarray(_photo())
    assert np.array_equal(png_roundtrip(pixels), pixels)


def test_not_an_image_is_reported_even_after_ultralytics_patched_pillow(tmp_path):
    """ultralytics replaces PIL.Image.open on import; our loader must not go through it."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)

    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError):
        load_image(bad)


def test_only_everyday_photo_formats_are_opened(monkeypatch):
    """EPS (which Pillow would hand to Ghostscript), PSD and PDF are refused by name, before any
    decoder beyond the allow-list runs; an ICO, which Pillow reads, is refused too."""
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was invoked")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    with pytest.raises(ImageError, match="EPS/PostScript"):
        load_image(_bytes(_photo(), "EPS"))
    with pytest.raises(ImageError, match="Photoshop"):
        load_image(b"8BPS\x00\x01" + bytes(100))
    with pytest.raises(ImageError, match="not an image FaceShield can read"):
        load_image(_bytes(_photo(32, 32), "ICO"))
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        assert load_image(_bytes(_photo(), fmt)).pixels.shape == (48, 64, 3), fmt
