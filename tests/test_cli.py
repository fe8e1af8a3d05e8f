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
