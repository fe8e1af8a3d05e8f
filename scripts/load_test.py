"""Load test: N clients submit photos to a running FaceShield app at once (gradio_client).

  python scripts/load_test.py [--clients 20] [--method blur] [--port 7861]

Starts `python app.py` on the port, sends every client its own random photo (no face, so
the protected photo must come back identical: a client that received anyone else's photo
is caught), and reports: completed / refused with the queue-full message / failed, latency,
the server's resident memory before and after, and the files left in the download folder.
Then it checks cancellation: a long request is cancelled and a short one must still be served.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


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


def call(url: str, path: Path, method: str, steps: int = 10):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return client.submit(image_path=handle_file(str(path)), method=method, steps=steps, api_name="/protect")


def served_pngs() -> int:
    """Download PNGs in every FaceShield server's private output folder on this machine (the
    server names its folder at random, per process; see faceshield.service.output_dir)."""
    root = Path(tempfile.gettempdir())
    return sum(1 for d in root.glob("faceshield-outputs-*") if d.is_dir() for _ in d.rglob("*.png"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--method", default="blur")
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args(argv)

    env = dict(
        os.environ,
        GRADIO_SERVER_PORT=str(args.port),
        GRADIO_ANALYTICS_ENABLED="False",
        FACESHIELD_THREADS=os.getenv("FACESHIELD_THREADS", "1"),
    )
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
        files_before = served_pngs()
        tmp = Path(tempfile.mkdtemp())
        photos = []
        for i in range(args.clients):
            pixels = np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp / f"client{i}.png")
            photos.append((tmp / f"client{i}.png", pixels))
        # warm-up: model loading is not what this measures
        call(url, photos[0][0], args.method).result()
        rss_before = rss_mb(server.pid)
        outcome: dict[int, tuple[str, float, str]] = {}

        def client(i: int) -> None:
            start = time.time()
            try:
                out = call(url, photos[i][0], args.method).result()
                got = np.asarray(Image.open(out[2]).convert("RGB"))
                ok = got.shape == photos[i][1].shape and np.array_equal(got, photos[i][1])
                outcome[i] = ("completed" if ok else "WRONG PHOTO", time.time() - start, "")
            except Exception as exc:  # noqa: BLE001 - the message is the result
                kind = (
                    "refused (queue full)" if "queue" in str(exc).lower() and "full" in str(exc).lower() else "FAILED"
                )
                outcome[i] = (kind, time.time() - start, str(exc)[:120])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        rss_after = rss_mb(server.pid)
        kinds = [o[0] for o in outcome.values()]
        done = [o[1] for o in outcome.values() if o[0] == "completed"]
        print(
            "| clients | completed | refused (queue full) | wrong photo | failed | median s | max s | wall s "
            "| server RSS MB before -> after | download PNGs added (net, old ones pruned) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        files_after = served_pngs()
        print(
            f"| {args.clients} | {kinds.count('completed')} | {kinds.count('refused (queue full)')} "
            f"| {kinds.count('WRONG PHOTO')} | {kinds.count('FAILED')} | {np.median(done):.1f} | {max(done):.1f} "
            f"| {wall:.1f} | {rss_before:.0f} -> {rss_after:.0f} | {files_after - files_before} |"
        )
        for i, (kind, _, msg) in sorted(outcome.items()):
            if kind not in ("completed",):
                print(f"client {i}: {kind} {msg}")

        # cancellation: a long job is cancelled; a short one submitted after it must not wait for it
        from faceshield.examples import example_photos

        long_job = call(url, example_photos()["zidane"], "detector-pgd", steps=300)  # ~30 s on 2 cores
        time.sleep(3)
        long_job.cancel()
        start = time.time()
        call(url, photos[2][0], "blur").result()
        print(f"after cancelling a long request, a short one was served in {time.time() - start:.1f} s")
        return 0 if kinds.count("WRONG PHOTO") == kinds.count("FAILED") == 0 else 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
