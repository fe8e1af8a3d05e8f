"""Odd and hostile inputs. First through the path the app's Protect button takes
(service.protect_photo): each gives a result or a clear ImageError, and the downloaded PNG
never carries the input's metadata. Then through the running app (gradio_client, raw HTTP):
bad numbers, unusable uploads and stray files in the download folder each get a clear
message or are ignored, and the next ordinary request is served."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import protect_args
from PIL import Image

from faceshield import page
from faceshield.images import ImageError
from faceshield.service import protect_photo


def _jpeg_with_gps(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    image = Image.fromarray(pixels).convert(mode)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPS IFD
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def _assert_clean_png(path):
    png = Image.open(path)
    assert png.format == "PNG"
    assert not png.getexif() and not png.info.get("exif") and not png.info.get("icc_profile")
    assert not any(k.lower().startswith(("gps", "xmp", "comment")) for k in png.info)


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_gps_and_exif_never_reach_the_download(photos, mode):
    face = np.ascontiguousarray(photos["astronaut"][:192, 136:328])  # small: quick to judge
    page = protect_photo(_jpeg_with_gps(face, mode), method="blur")
    _assert_clean_png(page.png_path)
    assert page.protected.shape == face.shape and not np.array_equal(page.protected, page.original)


def test_one_pixel_photo_is_handled():
    page = protect_photo(np.full((1, 1, 3), 200, np.uint8), method="detector-pgd", steps=5)
    assert page.protected.shape == (1, 1, 3)
    assert any("No face" in n or "small" in n.lower() for n in page.notices)


def test_photo_without_a_face_is_left_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    page = protect_photo(pixels, method="tip-im", steps=5)
    assert np.array_equal(page.protected, pixels)
    assert any("No face" in n for n in page.notices)


def test_fifty_faces_in_one_photo(photos, monkeypatch):
    """A 7x7 grid of the astronaut's face (49 faces) plus one: every face is obfuscated. (The
    page judges identities with one recogniser here: every recogniser on 49 faces, twice,
    takes minutes, and this test is about the detectors.)"""
    from faceshield import evaluation, models

    monkeypatch.setattr(evaluation, "DEFAULT_RECOGNISERS", ["facenet"])

    face = photos["astronaut"][20:200, 140:300]
    face = np.asarray(Image.fromarray(face).resize((80, 90)))
    grid = np.full((7 * 100, 8 * 90, 3), 255, np.uint8)
    for i in range(50):
        r, c = divmod(i, 8)
        if r < 7:
            grid[r * 100 : r * 100 + 90, c * 90 : c * 90 + 80] = face
    page = protect_photo(grid, method="pixelate")
    before = len(models.load("mtcnn").detect(grid))
    assert before >= 40  # MTCNN sees (most of) them
    assert len(models.load("mtcnn").detect(page.protected)) <= before // 4


def test_garbage_gives_a_clear_message():
    with pytest.raises(ImageError):
        protect_photo(b"\x00" * 10, method="blur")
    with pytest.raises(ImageError):
        protect_photo(b"", method="blur")


# The same web path end to end: the app served as `python app.py` serves it (show_error off),
# called through its API like a browser or a script would (`client` fixture in conftest.py).

NO_PATH = re.compile(r"(/[\w.-]+){2,}|[A-Za-z]:\\|Traceback")  # a server path or a traceback


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if a callback got as far as protecting, tracing or sweeping."""
    import app

    ran = []

    def spy(name):
        def called(*args, **kwargs):
            ran.append(name)
            raise AssertionError(f"{name} ran")

        return called

    monkeypatch.setattr(app, "protect_photo", spy("protect_photo"))
    monkeypatch.setattr(app.lab, "trace_attack", spy("trace_attack"))
    monkeypatch.setattr(app.lab, "budget_sweep", spy("budget_sweep"))
    yield ran
    assert not ran, f"work started despite a refused input: {ran}"


@pytest.fixture(scope="module")
def small_face(photos, tmp_path_factory) -> Path:
    """The astronaut's face, 192 px: quick to protect and judge."""
    path = tmp_path_factory.mktemp("photos") / "face.png"
    Image.fromarray(np.ascontiguousarray(photos["astronaut"][:192, 136:328])).save(path)
    return path


def _refusal(client, api_name: str, **kwargs) -> str:
    """The message the client gets from a call that must be refused."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(**kwargs, api_name=api_name)
    return str(info.value)


def _lab_args(path, **kw) -> dict:
    from gradio_client import handle_file

    return {"image_path": handle_file(str(path)), "method": "detector-pgd", "eps": 8, "steps": 20, **kw}


def _ordinary_request_succeeds(client, path: Path) -> None:
    """A normal blur after the refusals: served, the faces changed, a PNG to download."""
    out = client.predict(**protect_args(path, method="blur", strength=8), api_name="/protect")
    download, summary = out[2], out[6]
    assert "face(s) protected" in summary
    got = np.asarray(Image.open(download).convert("RGB"))
    assert got.shape == np.asarray(Image.open(path).convert("RGB")).shape
    assert not np.array_equal(got, np.asarray(Image.open(path).convert("RGB")))


# (endpoint, arguments on top of a valid call, what the message must say)
BAD_NUMBERS = [
    ("/protect", {"method": "blur", "strength": "NaN"}, "Blur strength .* finite"),
    ("/protect", {"method": "blur", "strength": 1e4}, r"Blur strength .* between 1 and 20 \(got 10000\)"),
    ("/protect", {"method": "blur", "strength": -3}, "between 1 and 20"),
    ("/protect", {"method": "pixelate", "strength": 6e4}, r"Pixelate .* between 1 and 64 \(got 60000\)"),
    ("/protect", {"method": "pixelate", "strength": "inf"}, "Pixelate .* finite"),
    ("/protect", {"method": "mask", "strength": 300}, "grey level must be between 0 and 255"),
    ("/protect", {"method": "blur", "strength": "strong"}, "must be a number"),
    ("/protect", {"eps": "nan"}, "budget .* finite"),
    ("/protect", {"eps": -1}, "budget .* between 1 and 16"),
    ("/protect", {"eps": 1e6}, "budget .* between 1 and 16"),
    ("/protect", {"method": "noise", "eps": "-inf"}, "budget .* finite"),
    ("/protect", {"steps": 1e9}, "iterations must be between 10 and 300"),
    ("/protect", {"steps": -10}, "iterations must be between 10 and 300"),
    ("/protect", {"steps": True}, "iterations must be a number"),
    ("/lab", {"eps": "nan"}, "budget .* finite"),
    ("/lab", {"eps": 100}, "budget .* between 1 and 16"),
    ("/lab", {"steps": 1e6}, "iterations must be between 5 and 100"),
    ("/lab", {"steps": 0}, "iterations must be between 5 and 100"),
    ("/sweep", {"steps": "NaN"}, "iterations must be a finite number"),
    ("/sweep", {"steps": 1e5}, "iterations must be between 5 and 100"),
    # the other inputs reach the callbacks raw too, and are checked as strictly
    ("/protect", {"method": "rm -rf"}, "protection must be one of: detector-pgd, "),
    ("/protect", {"norm": "l3"}, "What the strength bounds must be one of: linf, l2"),
    ("/protect", {"mode": ["targeted"]}, "identity goal must be one of"),
    ("/protect", {"whole_image": "yes"}, "must be true or false"),
    ("/lab", {"method": "blur"}, "attack must be one of: detector-pgd, tip-im"),
    ("/sweep", {"method": None}, "attack must be one of"),
]


def test_bad_numbers_are_refused_before_any_work(client, small_face, no_work):
    """Every numeric input: NaN, inf, text, negative, absurdly large (and choices that are not
    on the page). Each is refused with a message naming the input and its range, before
    anything is loaded or computed."""
    for api_name, bad, expected in BAD_NUMBERS:
        if api_name == "/protect":
            kwargs = protect_args(small_face, **bad)
        else:
            kwargs = _lab_args(small_face, **bad)
            if api_name == "/sweep":
                kwargs.pop("eps")
        message = _refusal(client, api_name, **kwargs)
        assert re.search(expected, message), (api_name, bad, message)
        assert not NO_PATH.search(message), message


def _raw_call(url: str, api_name: str, data: list) -> dict:
    """POST `data` to the queue API as raw JSON (NaN and Infinity literals allowed, which
    gradio_client cannot send); the final event of the stream, decoded."""
    import json

    import httpx

    body = json.dumps({"data": data})  # allow_nan: NaN -> NaN, inf -> Infinity
    assert "NaN" in body or "Infinity" in body
    started = httpx.post(
        f"{url}gradio_api/call{api_name}", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    started.raise_for_status()
    stream = httpx.get(f"{url}gradio_api/call{api_name}/{started.json()['event_id']}", timeout=120).text
    event = [line for line in stream.splitlines() if line.startswith("event:")][-1].split(":", 1)[1].strip()
    data_line = [line for line in stream.splitlines() if line.startswith("data:")][-1]
    return {"event": event, "data": json.loads(data_line.split(":", 1)[1])}


def test_json_nan_and_infinity_do_not_slip_through_the_sliders(client, no_work):
    """Gradio's slider bound check compares NaN as in range; the callbacks refuse it."""
    import app

    url = app.demo.local_url
    names = [argument.name for argument in page.protect_api()]

    def protect(**values):  # the /protect inputs in their order
        args = {**protect_args(None, method="blur"), "eps": 8, **values}
        return [args[name] for name in names]

    cases = [
        ("/protect", protect(eps=float("nan")), "budget .* finite"),
        ("/protect", protect(steps=float("inf")), "iterations .* finite"),
        ("/protect", protect(strength=float("nan")), "Blur .* finite"),
        ("/lab", [None, "detector-pgd", float("nan"), 20], "budget .* finite"),
        ("/sweep", [None, "detector-pgd", float("-inf")], "iterations .* finite"),
    ]
    for api_name, data, expected in cases:
        reply = _raw_call(url, api_name, data)
        assert reply["event"] == "error" and re.search(expected, reply["data"]["error"] or ""), (api_name, reply)


def _unusable_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """{kind: (file, what the message must say)} for uploads FaceShield must refuse."""
    from faceshield.images import allowed_formats

    files = {
        "empty": (b"", "is empty"),
        "text": (b"name,age\nAda,36\n" * 20, "not an image FaceShield can read"),
        "heic": (
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(300),
            "HEIC/HEIF photo, which this server cannot read" if "HEIF" not in allowed_formats() else "not an image",
        ),
        "psd": (b"8BPS\x00\x01" + bytes(200), "Photoshop"),
        "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(100), "PDF"),
    }
    out = {}
    for kind, (data, expected) in files.items():
        path = folder / f"{kind}.{'png' if kind in ('empty', 'text') else kind}"
        path.write_bytes(data)
        out[kind] = (path, expected)
    eps = folder / "vector.eps"  # a real EPS: Pillow would hand it to Ghostscript
    Image.new("RGB", (40, 40), (128, 90, 60)).save(eps)
    out["eps"] = (eps, "EPS/PostScript file, which FaceShield does not open")
    return out


def test_unusable_uploads_get_a_friendly_message_and_no_path(client, small_face, tmp_path):
    """Empty, non-image, HEIC (no HEIF plugin), PSD, PDF and EPS files, as the photo, the
    reference photo, a target photo, or the lab's photo: one plain sentence naming the file,
    no server path, no traceback; then an ordinary request is served."""
    from gradio_client import handle_file

    for kind, (path, expected) in _unusable_files(tmp_path).items():
        calls = [
            ("/protect", protect_args(path, method="blur")),
            ("/protect", protect_args(small_face, method="blur", reference_path=handle_file(str(path)))),
            (
                "/protect",
                protect_args(small_face, method="tip-im", mode="targeted", targets=[handle_file(str(path))]),
            ),
            ("/lab", _lab_args(path)),
            ("/sweep", {k: v for k, v in _lab_args(path).items() if k != "eps"}),
        ]
        for api_name, kwargs in calls:
            message = _refusal(client, api_name, **kwargs)
            if kwargs.get("targets") and "Invalid file type" in message:
                pass  # the target list accepts image types only: Gradio itself refuses .pdf/.eps there
            else:
                assert path.name in message and expected in message, (kind, api_name, message)
            assert not NO_PATH.search(message) and "gradio" not in message.lower(), message
    _ordinary_request_succeeds(client, small_face)


def test_a_value_left_by_another_protection_is_not_refused(client, small_face):
    """The page switched from Mask (grey level 128) to Noise and Protect was pressed before the
    strength control was cleared: the unused 128 is one a protection accepts, so the request
    is served (a NaN or 1e9 there is still refused: BAD_NUMBERS)."""
    out = client.predict(**protect_args(small_face, method="noise", strength=128), api_name="/protect")
    assert "face(s) protected** with `noise`" in out[6], out[6]
    message = _refusal(client, "/protect", **protect_args(small_face, method="noise", strength=1e9))
    assert "between" in message and "(got 1e+09)" in message, message


def test_an_unexpected_error_shows_no_text(client, small_face, monkeypatch):
    """Anything that is not a user error reaches the client without its text (it could name
    server files); the server still serves the next request."""
    import app

    def broken(*args, **kwargs):
        raise RuntimeError("failed reading /srv/faceshield/secret/config.py")

    monkeypatch.setattr(app, "protect_photo", broken)
    message = _refusal(client, "/protect", **protect_args(small_face, method="blur"))
    assert "secret" not in message and not NO_PATH.search(message), message
    monkeypatch.undo()
    _ordinary_request_succeeds(client, small_face)


def test_download_folder_is_private_and_strays_never_break_a_request(client, small_face, tmp_path):
    """Downloads go to this process's own mkdtemp folder (0700, unpredictable name). Files and
    folders that are not ours, odd entries with our prefix, and folders holding something
    else are left alone; only our own folders older than an hour are pruned."""
    import os
    import stat
    import tempfile
    import time

    from faceshield import service

    root = service.output_dir()
    assert root.parent == Path(tempfile.gettempdir()) and root.name != "faceshield-outputs"
    assert root.name.startswith("faceshield-outputs-") and stat.S_IMODE(root.stat().st_mode) == 0o700

    def aged(path: Path) -> Path:
        old = time.time() - 2 * service.OUTPUT_MAX_AGE_S
        os.utime(path, (old, old), follow_symlinks=False)
        return path

    (root / "stray.txt").write_text("left here by someone")
    aged(root / "stray.txt")
    (root / "somebody-else").mkdir()
    (root / "somebody-else" / "protected.png").write_bytes(b"theirs")
    aged(root / "somebody-else")
    (root / "request-file").write_text("a file with our prefix")
    aged(root / "request-file")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "protected.png").write_bytes(b"not in the output folder")
    (root / "request-link").symlink_to(elsewhere, target_is_directory=True)
    aged(root / "request-link")
    for name in ("request-old", "request-shared", "request-fresh"):
        (root / name).mkdir()
        (root / name / "protected.png").write_bytes(b"png")
    (root / "request-shared" / "notes.txt").write_text("not ours")
    aged(root / "request-old")
    aged(root / "request-shared")
    before = set(root.iterdir())

    out = client.predict(**protect_args(small_face, method="blur", strength=8), api_name="/protect")

    assert not (root / "request-old").exists()  # ours and old: pruned
    assert (root / "request-fresh" / "protected.png").exists()  # ours and recent: kept
    assert (root / "stray.txt").exists() and (root / "somebody-else" / "protected.png").exists()
    assert (root / "request-file").is_file() and (elsewhere / "protected.png").exists()
    assert (root / "request-shared" / "notes.txt").exists()
    new = [p for p in set(root.iterdir()) - before if p.name.startswith("request-")]
    assert len(new) == 1 and stat.S_IMODE(new[0].stat().st_mode) == 0o700
    assert np.array_equal(np.asarray(Image.open(new[0] / "protected.png")), np.asarray(Image.open(out[2])))


def test_pruning_survives_folders_that_vanish_meanwhile(tmp_path):
    """Another request (or a cancelled one finishing) removes an old folder between the
    listing and its removal here: pruning carries on and never raises."""
    import os
    import shutil
    import time

    from faceshield import service

    class Racy(type(tmp_path)):
        def rmdir(self):
            shutil.rmtree(self)  # the other request is quicker
            super().rmdir()  # -> FileNotFoundError

    old = time.time() - 2 * service.OUTPUT_MAX_AGE_S
    for name in ("request-a", "request-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "protected.png").write_bytes(b"png")
        os.utime(tmp_path / name, (old, old))
    service.prune_downloads(Racy(tmp_path))
    assert not any(tmp_path.iterdir())
    service.prune_downloads(tmp_path / "gone")  # the whole folder gone: nothing to do


def test_each_process_gets_its_own_download_folder_removed_at_exit():
    import subprocess
    import sys

    from faceshield import service

    code = "from faceshield.service import output_dir; print(output_dir())"
    other = Path(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
        ).stdout.strip()
    )
    assert other != service.output_dir() and other.name.startswith("faceshield-outputs-")
    assert not other.exists()


def _face_and_panel(small_face: Path) -> np.ndarray:
    """The small face with a 96 px colour gradient on its right (no face there)."""
    face = np.asarray(Image.open(small_face).convert("RGB"))
    ramp = np.linspace(0, 255, 96, dtype=np.float32)
    panel = np.stack(
        [
            np.tile(ramp, (face.shape[0], 1)),
            np.full((face.shape[0], 96), 90.0),
            ramp[::-1][None].repeat(face.shape[0], 0),
        ],
        axis=2,
    )
    return np.concatenate([face, panel.astype(np.uint8)], axis=1)


def test_sixteen_bit_and_transparent_pngs_keep_their_pixels_on_the_page(client, small_face, tmp_path):
    """A 16-bit grey PNG (which a plain RGB conversion clips to white) and a 16-bit RGBA PNG
    with fully and half transparent areas, uploaded through the page: the face is found and
    protected, and the rest of the download is the photo's own pixels (16 bits scaled to 8,
    transparency flattened on white)."""
    import cv2

    base = _face_and_panel(small_face)
    grey8 = np.asarray(Image.fromarray(base).convert("L"))
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(grey8.astype(np.uint16) * 257).save(grey16)
    assert Image.open(grey16).mode == "I;16"
    alpha = np.full(base.shape[:2], 255, np.uint8)
    alpha[:96, -96:], alpha[96:, -96:] = 0, 128  # the panel: transparent above, half below
    rgba16 = tmp_path / "rgba16.png"
    rgba = np.dstack([base, alpha]).astype(np.uint16) * 257
    assert cv2.imwrite(str(rgba16), rgba[..., [2, 1, 0, 3]])  # OpenCV writes BGRA
    composite = (base[96:, -96:].astype(np.float32) * 128 + 255 * 127) / 255
    cases = [
        (grey16, np.repeat(grey8[..., None], 3, axis=2)),
        (rgba16, np.concatenate([np.full((96, 96, 3), 255.0), composite]).round()),
    ]
    for path, expected in cases:
        out = client.predict(**protect_args(path, method="blur", strength=8), api_name="/protect")
        got = np.asarray(Image.open(out[2]).convert("RGB")).astype(np.int16)
        assert got.shape == base.shape and "face(s) protected" in out[6], (path.name, out[6])
        outside = got[:, -64:] - np.asarray(expected)[:, -64:]
        assert np.abs(outside).max() <= 1, (path.name, np.abs(outside).max())
        face = got[:, :-96] - (expected[:, :-96] if expected.shape[1] == base.shape[1] else base[:, :-96])
        assert np.abs(face).max() > 8, path.name  # the face itself was blurred


def _png_bomb(path: Path, side: int) -> Path:
    """A real 1-bit PNG of side x side black pixels: a few hundred KB that decode to side^2/8
    bytes (and 3 side^2 bytes as RGB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze, row = zlib.compressobj(9), bytes(1 + (side + 7) // 8)
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_bombs_and_oversized_uploads_are_refused_unopened(client, small_face, tmp_path, monkeypatch):
    """A 28000 x 28000 PNG bomb (2.4 GB as RGB) as the photo, the reference or the lab's photo:
    refused from its header, quickly, with a plain message. A file over the upload limit is
    refused by Gradio (max_file_size, set from FACESHIELD_MAX_FILE_BYTES) before it is stored,
    and by the loader if it got through; then an ordinary request is served."""
    import time

    import httpx
    from gradio_client import handle_file

    import app
    from faceshield import settings

    bomb = _png_bomb(tmp_path / "bomb.png", 28000)
    assert bomb.stat().st_size < settings.MAX_FILE_BYTES and 28000**2 > settings.MAX_DECODE_PIXELS
    calls = [
        ("/protect", protect_args(bomb, method="blur")),
        ("/protect", protect_args(small_face, method="blur", reference_path=handle_file(str(bomb)))),
        ("/lab", _lab_args(bomb)),
    ]
    for api_name, kwargs in calls:
        start = time.monotonic()
        message = _refusal(client, api_name, **kwargs)
        assert "bomb.png declares more pixels than FaceShield decodes" in message, message
        assert "decompression bomb" in message and not NO_PATH.search(message), message
        assert time.monotonic() - start < 30

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (260, 260, 3), dtype=np.uint8)).save(big)
    assert app.demo.max_file_size == settings.MAX_FILE_BYTES  # launch() hands Gradio the limit
    monkeypatch.setattr(app.demo, "max_file_size", big.stat().st_size // 2)
    with pytest.raises(Exception, match="413"):  # gradio_client's upload is refused
        client.predict(**protect_args(big, method="blur"), api_name="/protect")
    with open(big, "rb") as f:  # what the server says to a page's upload
        refused = httpx.post(f"{app.demo.local_url}gradio_api/upload", files={"files": ("big.png", f, "image/png")})
    assert refused.status_code == 413 and "maximum allowed size" in refused.text, refused.text
    assert not NO_PATH.search(refused.text), refused.text
    monkeypatch.undo()
    monkeypatch.setattr(settings, "MAX_FILE_BYTES", big.stat().st_size // 2)
    message = _refusal(client, "/protect", **protect_args(big, method="blur"))
    assert re.search(r"big\.png is 0\.\d+ MB; the limit is 0\.\d+ MB", message) and not NO_PATH.search(message), message
    monkeypatch.undo()
    _ordinary_request_succeeds(client, small_face)
