"""The Dockerfile, checked without a Docker engine: instructions parse, the image runs as
user 1000 on port 7860 bound to 0.0.0.0, installs exactly what the README says, and never
pulls TensorFlow."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOWN = {"FROM", "RUN", "COPY", "ADD", "ENV", "USER", "WORKDIR", "EXPOSE", "CMD", "ENTRYPOINT", "ARG", "LABEL"}


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every `pip install` in a shell command line."""
    found = []
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        if "pip" in words and "install" in words:
            found.append([w for w in words[words.index("install") + 1:] if w not in ("--no-cache-dir", "--user", "-q")])
    return found


def test_dockerfile_parses_and_serves_the_app_as_user_1000():
    ins = _instructions()
    assert ins[0][0] == "FROM" and "python:3.11" in ins[0][1]
    assert all(word in KNOWN for word, _ in ins), [w for w, _ in ins if w not in KNOWN]
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "useradd" in runs and "-u 1000" in runs
    assert ("USER", "user") in ins
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert "GRADIO_SERVER_NAME=0.0.0.0" in env and "GRADIO_SERVER_PORT=7860" in env
    assert ("EXPOSE", "7860") in ins
    assert ins[-1] == ("CMD", '["python", "app.py"]')


def test_dockerfile_installs_what_the_readme_says():
    docker = [args for word, rest in _instructions() if word == "RUN" for args in _pip_installs(rest)]
    readme_block = re.search(r"Run the app.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    readme = _pip_installs(readme_block)
    assert docker == readme, (docker, readme)
    copied = " ".join(rest for word, rest in _instructions() if word == "COPY")
    for args in docker:
        for f in args:
            if f.endswith(".txt"):
                assert f in copied, f"{f} is installed but not copied before the install"


def test_no_tensorflow_anywhere():
    for name in ("requirements.txt", "requirements-models.txt", "requirements-test.txt"):
        text = (ROOT / name).read_text().lower()
        assert not re.search(r"^\s*(tensorflow|tf-keras|keras)\b", text, re.M), name
    models = (ROOT / "requirements-models.txt").read_text()
    assert "--no-deps" in models  # the file tells how it must be installed
