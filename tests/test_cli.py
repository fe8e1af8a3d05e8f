"""The command line: help lists the methods, protect writes metadata-free PNGs."""

import subprocess
import sys

from PIL import Image

from faceshield.cli import main


def test_help_lists_methods():
    out = subprocess.run([sys.executable, "-m", "faceshield", "protect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "detector-pgd" in out.stdout


def test_protect_folder_keeps_names_and_skips_bad_files(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(src / "plain.jpg")
    (src / "broken.png").write_bytes(b"not an image")
    code = main(["--threads", "1", "protect", str(src), "-o", str(tmp_path / "out"), "--steps", "2"])
    assert code == 0
    out = tmp_path / "out" / "plain.png"
    assert out.is_file() and Image.open(out).format == "PNG"
    assert "skipped" in capsys.readouterr().out


def test_models_command(capsys):
    assert main(["models"]) == 0
    assert "dlib-resnet" in capsys.readouterr().out


def _photo(path, colour=(90, 120, 150)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)


def test_protect_mirrors_the_folder_tree(tmp_path):
    src = tmp_path / "in"
    _photo(src / "day1" / "IMG_0001.jpg", (10, 20, 30))
    _photo(src / "day2" / "IMG_0001.jpg", (200, 100, 50))
    assert main(["--threads", "1", "protect", str(src), "-o", str(tmp_path / "out"), "--steps", "1"]) == 0
    first = Image.open(tmp_path / "out" / "day1" / "IMG_0001.png").getpixel((0, 0))
    second = Image.open(tmp_path / "out" / "day2" / "IMG_0001.png").getpixel((0, 0))
    assert first == (10, 20, 30) and second == (200, 100, 50)  # no face: unchanged, and not mixed up


def test_protect_never_overwrites_an_input(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(src / "photo.png")
    before = (src / "photo.png").read_bytes()
    assert main(["--threads", "1", "protect", str(src), "-o", str(src), "--steps", "1"]) == 2
    assert (src / "photo.png").read_bytes() == before
    assert "input photos" in capsys.readouterr().err


def test_protect_resumes_and_force_redoes(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _photo(src / "a.jpg")
    _photo(src / "b.jpg")
    out.mkdir()
    (out / "a.png").write_bytes(b"kept")  # what an interrupted run left
    assert main(["--threads", "1", "protect", str(src), "-o", str(out), "--steps", "1"]) == 0
    assert (out / "a.png").read_bytes() == b"kept" and (out / "b.png").is_file()
    assert "1 protected, 1 already there" in capsys.readouterr().out
    assert main(["--threads", "1", "protect", str(src), "-o", str(out), "--steps", "1", "--force"]) == 0
    assert Image.open(out / "a.png").format == "PNG"
    assert "2 protected, 0 already there" in capsys.readouterr().out


def test_a_refused_option_is_a_message_not_a_traceback(tmp_path, capsys):
    """A value a protection refuses (--set margin=-3, --eps 99: the range the page accepts too,
    stated in --help) ends with its message and exit code 2, before any photo is read."""
    _photo(tmp_path / "in" / "a.jpg")
    args = ["--threads", "1", "protect", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert main([*args, "--method", "tip-im", "--set", "margin=-3"]) == 2
    err = capsys.readouterr().err
    assert "margin must be between 0 and inf (got -3)" in err and "Traceback" not in err
    assert main([*args, "--eps", "99"]) == 2
    assert "eps must be between 1 and 16 (got 99)" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--methods", "blur", "--set", "strength=-1"]) == 2
    assert "strength must be between 0 and inf" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    out = subprocess.run([sys.executable, "-m", "faceshield", "protect", "--help"], capture_output=True, text=True)
    assert "(1 to 16; default 8)" in " ".join(out.stdout.split())


def test_speed_times_a_method_on_a_resized_photo(tmp_path, capsys):
    """`speed`: a warm-up call, then the median and fastest of the timed runs, at the size asked
    for; a photo it cannot read is a message and exit code 2."""
    from faceshield.examples import example_photos

    code = main(["--threads", "1", "speed", str(example_photos()["astronaut"]), "--size", "256", "--runs", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "generator on 256x256 px, 1 face(s)" in out and "median" in out
    assert main(["speed", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
