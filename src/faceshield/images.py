"""Photos in and out: every user file passes through `load_image`, every result through `save_png`.

`load_image` turns whatever the user gave (path, bytes, PIL image, array) into an RGB uint8
array, applying EXIF orientation and converting odd modes; anything it cannot use raises
`ImageError` with a message meant for the user. `save_png` writes pixels only: no EXIF, GPS,
ICC profile or text chunks survive, so nothing the user wanted hidden leaks.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from faceshield import settings

# Pillow's own bomb guard, set to our documented limit (it raises above 2x, warns above 1x).
Image.MAX_IMAGE_PIXELS = settings.MAX_DECODE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(settings.InputError):
    """A user-facing problem with an input photo."""


# The only formats Pillow may open for FaceShield: everyday photo formats. Never EPS (Pillow
# hands it to Ghostscript), PSD, PDF or the dozens of rare decoders an upload could aim at.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO
# Recognised by their first bytes so the message can say what the file is.
_REFUSED_SIGNATURES = (
    (b"%!PS", "an EPS/PostScript file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS/PostScript file"),
    (b"%PDF", "a PDF document"),
    (b"8BPS", "a Photoshop (PSD) file"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}


def allowed_formats() -> tuple[str, ...]:
    """ALLOWED_FORMATS plus HEIF/HEIC when the pillow-heif plugin is installed and AVIF when
    Pillow was built with it."""
    extra = []
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        extra.append("HEIF")
    except ImportError:
        pass
    Image.init()
    if "AVIF" in Image.OPEN:
        extra.append("AVIF")
    return ALLOWED_FORMATS + tuple(extra)


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    notices: list[str] = field(default_factory=list)  # what was changed on the way in

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def pil_open(source, formats=None):
    """Pillow's own Image.open (only `formats`, when given). Importing ultralytics replaces
    PIL.Image.open with a wrapper that, on a file Pillow cannot identify, tries to pip-install
    a HEIF plugin and then fails with ModuleNotFoundError instead of saying "not an image"."""
    import sys

    patches = sys.modules.get("ultralytics.utils.patches")
    opener = Image.open
    if patches is not None and opener is getattr(patches, "image_open", None):
        opener = patches._image_open
    return opener(source, formats=formats)


def load_image(source, max_side: int | None = None, name: str | None = None) -> LoadedImage:
    """Decode and normalise a user photo.

    source: a path, raw bytes, a PIL image or an (H, W[, C]) array.
    Returns RGB uint8 pixels with EXIF rotation applied, transparency composited on white,
    16-bit/CMYK/palette/grey converted, and the longer side capped at `max_side`
    (default settings.MAX_SIDE). Raises ImageError with a clear message otherwise; `name`
    is how the messages call raw bytes (default "upload").
    """
    max_side = settings.MAX_SIDE if max_side is None else max_side
    notices: list[str] = []
    if isinstance(source, np.ndarray):
        image = _array_to_pil(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source, name)

    n_frames = getattr(image, "n_frames", 1)
    if n_frames > 1:
        notices.append(f"Animated image: only the first of {n_frames} frames is protected.")
        image.seek(0)
    image = _reduce_while_decoding(image, max_side)
    try:
        image.load()
        orientation = image.getexif().get(0x0112, 1)
        transposed = ImageOps.exif_transpose(image) if orientation not in (0, 1) else image
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"The image file is truncated or corrupt ({exc}).") from exc
    if orientation not in (0, 1):
        notices.append("Rotated according to the photo's EXIF orientation.")
    pixels = _to_rgb(transposed, notices)

    h, w = pixels.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(new_size, Image.Resampling.LANCZOS))
        notices.append(
            f"Downscaled from {w}x{h} to {new_size[0]}x{new_size[1]} px (limit: {max_side} px on the longer side)."
        )
    if min(pixels.shape[:2]) < 20:
        notices.append("The image is smaller than 20 px: no detector can find a face in it.")
    return LoadedImage(np.ascontiguousarray(pixels), notices)


def save_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write RGB uint8 pixels as a PNG that carries no metadata at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh image from raw pixels has no info dict: no EXIF, GPS, ICC or text chunks.
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB").save(path, format="PNG", optimize=False)
    return path


def thumbnail(pixels: np.ndarray, side: int | None = None) -> np.ndarray:
    """(H, W, C) uint8 with its longer side at most `side` (settings.THUMB_SIDE), area-averaged;
    the same array when already small enough. For the page's views, never for a download."""
    import cv2

    side = side or settings.THUMB_SIDE
    h, w = pixels.shape[:2]
    if max(h, w) <= side:
        return pixels
    scale = side / max(h, w)
    return cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def png_roundtrip(pixels: np.ndarray) -> np.ndarray:
    """What the user gets back after download: pixels -> PNG bytes -> pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return np.asarray(pil_open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def check_file(path: str | Path) -> None:
    """ImageError unless `path` is a file that can be opened and is within
    settings.MAX_FILE_BYTES (checked before any byte is read)."""
    path = Path(path)
    name = _short(path.name)
    if not path.is_file():
        raise ImageError(f"No such file: {name}")
    size = path.stat().st_size
    if size > settings.MAX_FILE_BYTES:
        raise ImageError(f"{name} is {_megabytes(size)}; the limit is {_megabytes(settings.MAX_FILE_BYTES)}.")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ImageError(f"{name} cannot be read ({exc.strerror or exc}).") from exc


def _short(name: str) -> str:
    return name if len(name) <= 60 else name[:57] + "..."


def _open(source, name: str | None = None) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = _short(name) if name else "upload"
    else:
        path = Path(source)
        name = _short(path.name)
        check_file(path)
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError(f"{name} is empty (0 bytes).")
    formats = allowed_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = pil_open(io.BytesIO(data), formats=formats)
            w, h = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{name} declares more pixels than FaceShield decodes "
            f"(limit {settings.MAX_DECODE_PIXELS:,} px): refused as a possible decompression bomb."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(_unreadable(name, data, formats)) from exc
    except OSError as exc:
        raise ImageError(f"{name} could not be read as an image ({exc}).") from exc
    if w * h > settings.MAX_DECODE_PIXELS:
        raise ImageError(f"{name} is {w}x{h} px, more than the {settings.MAX_DECODE_PIXELS:,} px limit.")
    return image


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 10 * 2**20 else f"{size / 2**20:.2g} MB"


def _unreadable(name: str, data: bytes, formats: tuple[str, ...]) -> str:
    """Why `data` is refused, in words for the user (the file's name only, never a path)."""
    accepted = ", ".join("WebP" if f == "WEBP" else f for f in formats)
    if "HEIF" not in formats and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return (
            f"{name} is a HEIC/HEIF photo, which this server cannot read (no HEIF plugin is installed): "
            f"save it as JPEG or PNG and upload that."
        )
    for signature, kind in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return f"{name} is {kind}, which FaceShield does not open: export the photo as JPEG or PNG."
    return f"{name} is not an image FaceShield can read ({accepted})."


def _reduce_while_decoding(image: Image.Image, max_side: int) -> Image.Image:
    """Let JPEG decode at 1/2, 1/4 or 1/8 scale when the photo is far above max_side."""
    if image.format == "JPEG" and max(image.size) > 2 * max_side:
        image.draft("RGB", (max_side, max_side))
    return image


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"Expected an (H, W, 1|3|4) image array, got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    if array.shape[2] == 1:
        return Image.fromarray(array[..., 0], mode="L")
    return Image.fromarray(array, mode="RGBA" if array.shape[2] == 4 else "RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    if array.dtype == np.uint16 or array.max(initial=0) > 255:
        return (array.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    return array.clip(0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image, notices: list[str]) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Pillow's convert("RGB") clips 16-bit values instead of scaling them. A 16-bit photo is
        # scaled by its depth, not its content (a dark one stays dark); 32-bit integers only
        # when they exceed 8 bits (Pillow opens some 16-bit PNGs as "I").
        array = np.asarray(image)
        if mode.startswith("I;16"):
            array = (array.astype(np.uint16) >> 8).astype(np.uint8)
        elif mode == "F" or array.max(initial=0) > 255:
            array = _to_uint8(array.astype(np.uint16) if mode != "F" else array)
        notices.append(f"Converted {mode} (high bit depth) to 8-bit RGB.")
        return np.repeat(np.asarray(array, dtype=np.uint8)[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
        notices.append("Transparency was flattened onto white.")
    elif mode == "CMYK":
        notices.append("Converted CMYK to RGB.")
    elif mode in ("L", "1"):
        notices.append("Grey-scale photo: converted to RGB.")
    elif mode not in ("RGB",):
        notices.append(f"Converted colour mode {mode} to RGB.")
    return np.asarray(image.convert("RGB"))
