"""Load test: N clients submit photos with a face to a running FaceShield app at once (gradio_client).

  python scripts/load_test.py [--clients 20] [--method blur] [--port 7861] [--max-queue 16]

Starts `python app.py` on the port and gives every client its own photo: the astronaut's face
(scikit-image) beside a panel of noise drawn for that client alone. All clients submit at the
same moment; each checks what it gets back: its own panel, untouched (a client that received
anyone else's photo is caught), and its face changed by the protection. It reports completed /
refused with the queue-full message / wrong photo / unprotected / failed, latency, and the
server's resident memory before and after; then it cancels a long protection and times a short
request behind it. It fails (exit code 1, the reasons printed) unless every client was served
or cleanly refused, none got a wrong or unprotected photo, the server's memory grew by less
than --max-growth-mb, and the request behind the cancelled one was served within
--max-short-seconds. tests/test_bounded_compute.py runs a small variant of it (run()) against
the app the tests serve.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

COMPLETED, REFUSED, WRONG, UNPROTECTED, FAILED = (
    "completed",
    "refused (queue full)",
    "WRONG PHOTO",
    "UNPROTECTED",
    "FAILED",
)
PANEL = 96  # width of each client's own noise panel, px
ACTIVE = ("PROCESSING", "PROGRESS", "ITERATING")  # gradio_client statuses of a running job


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_up(url: str, timeout: float = 180) -> None:
    import urllib.request

    start = time.time()
    while time.time() - start < timeout:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"app did not start at {url}")


def face_photo() -> np.ndarray:
    """The astronaut's face (skimage's astronaut.png, public domain), 192 x 192 px."""
    from faceshield.examples import example_photos
    from faceshield.images import load_image

    return np.ascontiguousarray(load_image(example_photos()["astronaut"]).pixels[:192, 136:328])


def client_photos(n: int, folder: Path, seed: int = 0) -> list[tuple[Path, np.ndarray]]:
    """n photos: the face beside a noise panel of each client's own (the face on the left,
    PANEL px of noise on the right), saved as PNGs in `folder`."""
    face = face_photo()
    photos = []
    for i in range(n):
        panel = np.random.default_rng(seed + i).integers(0, 256, (face.shape[0], PANEL, 3), dtype=np.uint8)
        pixels = np.concatenate([face, panel], axis=1)
        path = folder / f"client{i}.png"
        Image.fromarray(pixels).save(path)
        photos.append((path, pixels))
    return photos


def judge(got: np.ndarray, mine: np.ndarray, photos: list[tuple[Path, np.ndarray]]) -> str:
    """What a client received: its own photo, protected (COMPLETED); its own photo unchanged
    in the face (UNPROTECTED); or someone else's or something else (WRONG)."""
    if got.shape != mine.shape:
        return WRONG
    panel = np.s_[:, -PANEL:]
    own = np.mean(got[panel] == mine[panel])
    if own < 0.99 or any(np.mean(got[panel] == other[panel]) > own for _, other in photos if other is not mine):
        return WRONG
    return COMPLETED if not np.array_equal(got[:, :-PANEL], mine[:, :-PANEL]) else UNPROTECTED


def submit(client, path: Path, method: str, **options):
    """One /protect request: every argument of the recorded API schema at its default (empty:
    the protection's own), `options` on top."""
    from gradio_client import handle_file

    from faceshield.page import api_schema

    args = {a["name"]: a["default"] for a in api_schema()["arguments"]}
    args.update(image_path=handle_file(str(path)), method=method, **options)
    return client.submit(**args, api_name="/protect")


@dataclass
class Report:
    clients: int
    outcomes: dict[int, tuple[str, float, str]] = field(default_factory=dict)  # client -> (kind, s, message)
    wall: float = float("nan")
    rss_before: float = float("nan")
    rss_after: float = float("nan")
    after_cancel: float = float("nan")  # seconds to serve a short request behind a cancelled long one

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes.values() if o[0] == kind)

    def problems(self, max_growth_mb: float, max_short_seconds: float) -> list[str]:
        """Everything that went wrong (empty: the load test passed)."""
        found = [
            f"client {i}: {kind} {msg}"
            for i, (kind, _, msg) in sorted(self.outcomes.items())
            if kind not in (COMPLETED, REFUSED)
        ]
        if len(self.outcomes) != self.clients:
            found.append(f"{self.clients - len(self.outcomes)} clients never finished")
        if not self.count(COMPLETED):
            found.append("no client was served")
        growth = self.rss_after - self.rss_before
        if not growth < max_growth_mb:
            found.append(f"server memory grew by {growth:.0f} MB (limit {max_growth_mb:g} MB)")
        if not self.after_cancel < max_short_seconds:
            found.append(
                f"a request behind a cancelled one took {self.after_cancel:.1f} s (limit {max_short_seconds:g} s)"
            )
        return found

    def table(self) -> str:
        done = [o[1] for o in self.outcomes.values() if o[0] == COMPLETED] or [float("nan")]
        return (
            "| clients | completed | refused (queue full) | wrong photo | unprotected | failed | median s | max s "
            "| wall s | server RSS MB before -> after | short request after a cancel, s |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
            f"| {self.clients} | {self.count(COMPLETED)} | {self.count(REFUSED)} | {self.count(WRONG)} "
            f"| {self.count(UNPROTECTED)} | {self.count(FAILED)} | {np.median(done):.1f} | {max(done):.1f} "
            f"| {self.wall:.1f} | {self.rss_before:.0f} -> {self.rss_after:.0f} | {self.after_cancel:.1f} |"
        )


def run(url: str, server_pid: int, clients: int = 20, method: str = "blur", seed: int = 0) -> Report:
    """The load test against the app at `url` (served by process `server_pid`, whose memory is
    measured). Every client has its own gradio_client Client; they submit together."""
    from gradio_client import Client

    report = Report(clients)
    photos = client_photos(clients, Path(tempfile.mkdtemp(prefix="faceshield-load-")), seed)
    connections = [Client(url, verbose=False) for _ in range(clients)]
    submit(connections[0], photos[0][0], method).result()  # warm-up: model loading is not measured
    report.rss_before = rss_mb(server_pid)
    start_together = threading.Barrier(clients)

    def client(i: int) -> None:
        path, mine = photos[i]
        start_together.wait()
        start = time.time()
        try:
            out = submit(connections[i], path, method).result()
            got = np.asarray(Image.open(out[2]).convert("RGB"))
            report.outcomes[i] = (judge(got, mine, photos), time.time() - start, "")
        except Exception as exc:  # noqa: BLE001 - the message is the result
            text = str(exc)
            kind = REFUSED if "queue" in text.lower() and "full" in text.lower() else FAILED
            report.outcomes[i] = (kind, time.time() - start, text[:160])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.wall = time.time() - t0
    report.rss_after = rss_mb(server_pid)

    # cancellation: a long protection (a budget too small to finish early) is cancelled once it
    # runs; a short request submitted after it must not wait for it to finish
    long_job = submit(connections[0], photos[0][0], "detector-pgd", eps=1, steps=300)
    deadline = time.time() + 120
    while long_job.status().code.name not in ACTIVE and not long_job.done() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    long_job.cancel()
    start = time.time()
    submit(connections[1 % clients], photos[1 % clients][0], method).result()
    report.after_cancel = time.time() - start
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--method", default="blur")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--max-queue", type=int, help="FACESHIELD_MAX_QUEUE for the server (default: its own)")
    parser.add_argument("--max-growth-mb", type=float, default=250, help="fail if the server's RSS grows more")
    parser.add_argument(
        "--max-short-seconds", type=float, default=60, help="fail if the request after a cancel waits longer"
    )
    args = parser.parse_args(argv)

    env = dict(
        os.environ,
        GRADIO_SERVER_PORT=str(args.port),
        GRADIO_ANALYTICS_ENABLED="False",
        FACESHIELD_THREADS=os.getenv("FACESHIELD_THREADS", "1"),
    )
    if args.max_queue is not None:
        env["FACESHIELD_MAX_QUEUE"] = str(args.max_queue)
    server = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{args.port}/"
    try:
        wait_up(url)
        report = run(url, server.pid, args.clients, args.method)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(report.table())
    problems = report.problems(args.max_growth_mb, args.max_short_seconds)
    for outcome in sorted(report.outcomes.items()):
        if outcome[1][0] == REFUSED:
            print(f"client {outcome[0]}: {outcome[1][2]}")
    print(
        "\n".join(problems) if problems else "passed: every client served or cleanly refused, its own photo, protected"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
