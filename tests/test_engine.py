"""Protecting folders: the plain engine and the Ray engine (a local Ray of 2 CPUs, started once for
the session; its tests skip without Ray: pip install -r requirements-ray.txt). A small tree with a
bad file, an unreadable file and one name in two folders; a run interrupted and resumed; a worker
killed mid-run; the Ray engine's outputs against the plain engine's; same-person groups."""

import csv
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceshield.cli import main
from faceshield.engine import MANIFEST_NAME, TMP_MARK
from faceshield.models import Detections
from faceshield.protections.base import PATH, PHOTOS, Param, Protection, ProtectionResult

ENGINES = ["plain", "ray"]


class Toy(Protection):
    """Inverts the photo; row 0 then holds the top-left colours of its same_person photos (sorted),
    so a test sees which photos it was given. `log` gets a line per photo protected; with
    `crash_marker` the first call (while the marker is missing) kills its process."""

    key, title, summary = "toy-engine", "Toy: invert", "inverts the photo (a toy for the engine tests)"
    params = (
        Param("same_person", None, "other photos of this person", kind=PHOTOS),
        Param("log", None, "a file that gets a line per photo protected", kind=PATH),
        Param("crash_marker", None, "kill the worker when this file is missing (creating it)", kind=PATH),
        Param("delay", 0.0, "seconds each photo takes", low=0),
    )

    def __call__(self, pixels, faces=None):
        if self.crash_marker and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).touch()
            os._exit(1)
        time.sleep(self.delay)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{colour(pixels)}\n")
        out = 255 - pixels
        for i, other in enumerate(sorted(colour(p) for p in self.same_person or [])):
            out[0, i] = other
        return ProtectionResult(out, Detections.empty(), 0.0)


def colour(pixels) -> tuple:
    return tuple(int(v) for v in pixels[0, 0])


@pytest.fixture(scope="module", autouse=True)
def toy():
    from faceshield.protections import REGISTRY, register

    register(Toy)
    yield
    REGISTRY.pop(Toy.key, None)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray of 2 CPUs for the whole session; this module's toy is pickled by value, so the
    workers need not import the tests."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    except Exception:
        ray.shutdown()  # what did start (a failed start under heavy load) must not outlive the tests
        raise
    yield ray
    ray.shutdown()


@pytest.fixture(params=ENGINES)
def engine(request):
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


def protect(engine: str, src, out, *more) -> int:
    extra = ["--engine", "ray", "--workers", "2"] if engine == "ray" else []
    return main(["--threads", "1", "protect", str(src), "-o", str(out), *extra, *more])


def photo(path: Path, rgb, size=(16, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def manifest(out: Path) -> dict[str, dict]:
    with (out / MANIFEST_NAME).open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_input = {Path(r["input"]).relative_to(out.parent / "in").as_posix(): r for r in rows}
    assert len(by_input) == len(rows), "one row per photo"
    return by_input


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_tree_with_bad_unreadable_and_repeated_names_is_protected_and_recorded(engine, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "day1" / "IMG_1.jpg", (10, 20, 30))
    photo(src / "day2" / "IMG_1.jpg", (200, 100, 50))  # the same name in another folder
    photo(src / "day2" / "b.png", (1, 2, 3))
    (src / "bad.jpg").write_bytes(b"not an image")
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # listed, but cannot be read
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert protect(engine, src, out, "--method", "toy-engine") == 0
    rows = manifest(out)
    assert set(rows) == {"day1/IMG_1.jpg", "day2/IMG_1.jpg", "day2/b.png", "bad.jpg", "gone.jpg"}
    assert rows["bad.jpg"]["status"] == "failed" and "not an image" in rows["bad.jpg"]["error"]
    assert rows["gone.jpg"]["status"] == "failed" and "No such file" in rows["gone.jpg"]["error"]
    for name, rgb in [("day1/IMG_1", (10, 20, 30)), ("day2/IMG_1", (200, 100, 50)), ("day2/b", (1, 2, 3))]:
        row = rows[name + (".png" if name.endswith("b") else ".jpg")]
        assert row["status"] == "protected" and row["method"] == "toy-engine" and row["error"] == ""
        assert row["output"] == str(out / f"{name}.png") and float(row["psnr"]) < 20 and row["faces"] == "0"
        got = pixels(out / f"{name}.png").astype(int)
        assert np.abs(got - (255 - np.array(rgb))).max() <= 3  # JPEG's rounding of a solid colour
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # inputs untouched
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]


@pytest.fixture
def default_ctrl_c():
    """Ctrl-C handled as Python does by default (KeyboardInterrupt) during the test: a library an
    earlier test loaded in this process may have left its own SIGINT handler installed (in one
    full run on a fresh clone the signal was swallowed and the run went on to the end)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_when(out: Path, outputs: int) -> threading.Thread:
    """Send this process SIGINT (as Ctrl-C does) once `outputs` PNGs are in `out`."""

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(list(out.rglob("*.png"))) >= outputs:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_interrupted_run_resumes_without_redoing_finished_photos(engine, tmp_path, capsys, default_ctrl_c):
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.txt"
    for i in range(8):
        photo(src / f"p{i}.png", (i, 0, 0))
    options = ["--method", "toy-engine", "--set", f"log={log}", "--set", "delay=0.4"]
    _interrupt_when(out, 2)
    assert protect(engine, src, out, *options) == 130
    assert "interrupted" in capsys.readouterr().out
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert 2 <= len(first) < 8
    recorded = {Path(r["output"]).name for r in manifest(out).values() if r["status"] == "protected"}
    assert recorded <= set(first)  # with Ray, a photo written just before the stop may miss its row

    assert protect(engine, src, out, *options) == 0
    assert f"{8 - len(first)} protected, {len(first)} already there" in capsys.readouterr().out
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png") if p.name in first} == first
    assert len(list(out.glob("*.png"))) == 8
    rows = manifest(out).values()
    assert len(rows) == 8 and {Path(r["output"]).name for r in rows if r["status"] != "protected"} <= set(first)
    assert {r["status"] for r in rows} <= {"protected", "kept"}
    done = log.read_text().splitlines()
    for name in first:  # each photo finished before the interruption was protected once
        assert done.count(str((int(name[1]), 0, 0))) == 1


def test_a_killed_worker_loses_no_photo(ray_session, tmp_path):
    src, out, marker = tmp_path / "in", tmp_path / "out", tmp_path / "crashed"
    for i in range(4):
        photo(src / f"p{i}.png", (0, i, 0))
    assert protect("ray", src, out, "--method", "toy-engine", "--set", f"crash_marker={marker}") == 0
    assert marker.exists()  # a worker did die
    rows = manifest(out)
    assert len(rows) == 4 and all(r["status"] == "protected" for r in rows.values())
    for i in range(4):
        assert colour(pixels(out / f"p{i}.png")) == (255, 255 - i, 255)


def test_ray_writes_what_the_plain_engine_writes(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    for i in range(3):
        (src / f"d{i}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(src / f"d{i}" / "x.png")
    options = ["--method", "blur", "--whole-image", "--strength", "10"]
    assert protect("plain", src, tmp_path / "plain", *options) == 0
    assert protect("ray", src, tmp_path / "ray", *options) == 0
    for i in range(3):
        plain, ray = pixels(tmp_path / "plain" / f"d{i}" / "x.png"), pixels(tmp_path / "ray" / f"d{i}" / "x.png")
        assert np.array_equal(plain, ray)
        assert not np.array_equal(plain, pixels(src / f"d{i}" / "x.png"))


def test_same_person_photos_are_protected_with_the_others(engine, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    people = {"alice": [(10, 0, 0), (20, 0, 0), (30, 0, 0)], "bob": [(0, 40, 0), (0, 50, 0)]}
    for person, colours in people.items():
        for i, rgb in enumerate(colours):
            photo(src / person / f"{i}.png", rgb)
    (out / "alice").mkdir(parents=True)
    Image.new("RGB", (16, 12), (9, 9, 9)).save(out / "alice" / "0.png")  # done before: kept, still a reference
    assert protect(engine, src, out, "--method", "toy-engine", "--same-person") == 0
    assert colour(pixels(out / "alice" / "0.png")) == (9, 9, 9)
    for person, colours in people.items():
        for i, rgb in enumerate(colours):
            if (person, i) == ("alice", 0):
                continue
            others = sorted(c for j, c in enumerate(colours) if j != i)
            got = pixels(out / person / f"{i}.png")
            assert [tuple(int(v) for v in got[0, k]) for k in range(len(others))] == others
            assert colour(got[1:]) == tuple(255 - v for v in rgb)


def test_same_person_needs_a_protection_that_takes_it(tmp_path, capsys):
    photo(tmp_path / "in" / "a.png", (1, 2, 3))
    assert (
        main(["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--method", "blur", "--same-person"]) == 2
    )
    err = capsys.readouterr().err
    assert "--same-person" in err and "blur does not" in err and "toy-engine" in err
    assert main(["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "2"]) == 2
    assert "--workers: only with --engine ray" in capsys.readouterr().err


def test_bench_scale_prints_throughput_and_the_speed_up(ray_session, tmp_path, capsys):
    for i in range(4):
        photo(tmp_path / "in" / f"p{i}.png", (i, i, i))
    assert main(["bench-scale", str(tmp_path / "in"), "--method", "toy-engine", "--workers", "1", "2"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["1", "2"]  # header, then one row a run
    assert all(line.split("|")[2].strip() == "4" for line in table[1:])  # every photo, each run
    assert table[1].split("|")[9].strip() == "1.00x"  # the speed-up, over the first run's capacity
