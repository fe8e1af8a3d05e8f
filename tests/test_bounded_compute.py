"""Bounded work per request, through the running app (gradio_client): a cancelled protection
really stops its attack loop, a submit-and-cancel storm never runs more attacks at once than
the concurrency limit, a request past its deadline returns its best result with a notice, and
the per-request size caps (faces, target photos, thumbnails on the page) hold."""

import datetime
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import protect_args
from PIL import Image

from faceshield import page, settings
from faceshield.protections import cancel

LONG = {"eps": 1, "steps": 300}  # a budget too small to hide the face soon: the loop runs on
STORM = 20  # requests submitted and cancelled one after another


@pytest.fixture(scope="module")
def face(photos, tmp_path_factory) -> Path:
    """The astronaut's face, 256 px: one attack step takes a noticeable fraction of a second."""
    path = tmp_path_factory.mktemp("photos") / "face.png"
    Image.fromarray(np.ascontiguousarray(photos["astronaut"][:256, 104:360])).save(path)
    return path


@pytest.fixture(autouse=True)
def attack_from_zero(monkeypatch):
    """The default starts from the trained generator's one pass, which hides this face at once
    (at the budget it was trained at); these tests need the attack loop to run, as it does on
    faces the generator does not hide: its pass is made to change nothing."""
    import torch

    from faceshield.protections import detector_pgd

    monkeypatch.setattr(detector_pgd, "_generator_start", lambda x0, boxes, eps: torch.zeros_like(x0))


def _wait(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _attacks_running() -> int:
    """Threads of this process inside an iterative attack right now (read from their stacks,
    not from the app's own gauge)."""
    count = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            code = frame.f_code
            if code.co_name == "__call__" and code.co_filename.endswith(("detector_pgd.py", "tip_im.py")):
                count += 1
                break
            frame = frame.f_back
    return count


def _idle() -> bool:
    from faceshield import serving

    return serving.running == 0 and _attacks_running() == 0


def test_cancel_stops_the_attack_loop_within_a_few_steps(client, face):
    _wait(_idle, 60, "the app to be idle")
    start = cancel.steps_checked
    job = client.submit(**protect_args(face, **LONG), api_name="/protect")
    _wait(lambda: cancel.steps_checked - start >= 3, 60, "the attack to start")
    job.cancel()
    at_cancel = cancel.steps_checked
    _wait(_idle, 20, "the cancelled attack to end")
    after = cancel.steps_checked - at_cancel
    assert after <= 3, f"the loop ran {after} more steps after the cancel"
    assert cancel.steps_checked - start < LONG["steps"]


def test_submit_and_cancel_storm_runs_at_most_the_limit(client, face):
    _wait(_idle, 60, "the app to be idle")
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _attacks_running())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for i in range(STORM):  # some cancelled while queued, some while their attack runs
            job = client.submit(**protect_args(face, **LONG), api_name="/protect")
            # a cancel reaches the server once the job has joined its queue (as a page's Stop
            # button can only then): before, gradio_client only stops listening
            _wait(lambda: job.communicator.event_id or job.done(), 30, "the request to join the queue")
            time.sleep((0.1, 0.3, 1.0)[i % 3])
            job.cancel()
        _wait(_idle, 30, "every cancelled attack to end")
    finally:
        done.set()
        sampler.join()
    assert 1 <= peak[0] <= settings.CONCURRENCY_LIMIT, peak[0]


def test_deadline_returns_the_best_result_so_far_with_a_notice(client, face, monkeypatch):
    monkeypatch.setattr(settings, "MAX_SECONDS", 2)
    start = time.monotonic()
    out = client.predict(**protect_args(face, **LONG), api_name="/protect")
    summary, download = out[6], out[2]
    assert "time limit of 2 s per request was reached" in summary, summary
    assert time.monotonic() - start < 60
    got = np.asarray(Image.open(download).convert("RGB"))
    assert not np.array_equal(got, np.asarray(Image.open(face).convert("RGB")))  # a perturbed photo


def test_too_many_target_photos_or_faces_are_refused(client, face, photos, tmp_path, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    monkeypatch.setattr(settings, "MAX_TARGETS", 1)
    targets = [handle_file(str(face)), handle_file(str(face))]
    with pytest.raises(AppError, match="at most 1 target identity photos"):
        client.predict(**protect_args(face, method="tip-im", mode="targeted", targets=targets), api_name="/protect")
    monkeypatch.setattr(settings, "MAX_FACES", 1)
    two = tmp_path / "zidane.png"
    Image.fromarray(photos["zidane"]).save(two)
    with pytest.raises(AppError, match=r"has \d+ faces; FaceShield protects at most 1 face"):
        client.predict(**protect_args(two), api_name="/protect")


def test_the_gallery_sends_thumbnails_and_the_download_stays_full_size(client, photos, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(photos["astronaut"]).resize((640, 640)).save(big)  # larger than a thumbnail
    out = client.predict(**protect_args(big, method="blur", strength=8), api_name="/protect")
    assert Image.open(out[2]).size == (640, 640) and Image.open(out[2]).format == "PNG"
    sizes = [Image.open(item["image"]).size for item in out[3]]
    assert sizes and all(max(s) == settings.THUMB_SIDE for s in sizes), sizes


def _arrays(value, seen=None):
    """Every numpy array reachable from `value` (dataclass fields, lists, dicts, tuples)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v, seen)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _arrays(v, seen)
    elif hasattr(value, "__dict__"):
        yield from _arrays(vars(value), seen)


def test_the_lab_keeps_only_thumbnails_and_drops_them_after_their_time_to_live(client, photos, tmp_path):
    """The lab's view is a thumbnail, and what its session keeps between clicks (its gr.State) is
    the slider's thumbnails, no full-size photo; kept settings.STATE_TTL seconds, then the
    running server drops it."""
    from gradio_client import handle_file

    import app
    from faceshield.lab import Trace

    big = tmp_path / "big.png"
    Image.fromarray(photos["astronaut"]).resize((640, 640)).save(big)
    lab = client.predict(handle_file(str(big)), "detector-pgd", 8, 5, api_name="/lab")
    view = lab[1]  # the State output is not part of the API: slider, view, gallery, plot, caption
    assert max(Image.open(view).size) == settings.THUMB_SIDE
    session = app.demo.state_holder[client.session_hash]
    kept = {key: value for key, value in session.state_data.items() if isinstance(value, Trace)}
    assert len(kept) == 1, session.state_data
    ((key, trace),) = kept.items()
    ttl, created = session._state_ttl[key]
    assert ttl == settings.STATE_TTL and math.isfinite(ttl)
    assert len(trace.iterates) >= 2 and len(trace.loss) == len(trace.iterates) - 1
    sides = [max(a.shape[:2]) for a in _arrays(trace)]
    assert sides and max(sides) <= settings.THUMB_SIDE < 640, sides
    session._state_ttl[key] = (ttl, created - datetime.timedelta(seconds=ttl + 1))  # as if idle that long
    _wait(lambda: key not in session.state_data, 10, "the expired lab state to be dropped")


def test_a_client_that_disconnects_stops_its_attack(client, face):
    """The page's way: join the queue, read the event stream, then go away mid-attack."""
    import httpx

    import app

    _wait(_idle, 60, "the app to be idle")
    url, session = app.demo.local_url, "disconnecting-client"
    with open(face, "rb") as f:
        uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("face.png", f, "image/png")}).json()[0]
    args = protect_args(None, **LONG)
    args["image_path"] = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    fn_index = next(i for i, fn in app.demo.fns.items() if fn.api_name == "protect")
    httpx.post(
        f"{url}gradio_api/queue/join",
        json={
            "data": [args[a.name] for a in page.protect_api()],
            "fn_index": fn_index,
            "session_hash": session,
            "event_data": None,
        },
    ).raise_for_status()
    start = cancel.steps_checked
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for _ in stream.iter_lines():
            if cancel.steps_checked - start >= 3:
                break  # leaving the block closes the connection
    at_close = cancel.steps_checked
    assert at_close - start >= 3, "the attack never started"
    _wait(_idle, 20, "the abandoned attack to end")
    assert cancel.steps_checked - at_close <= 10, cancel.steps_checked - at_close


def test_load_test_small_variant(client, monkeypatch):
    """scripts/load_test.py's run() against this app, 6 clients at once with room for 2
    waiting: a real protection (blur) on photos with a face, each client its own photo back,
    protected; the others refused with the queue-full message, none failing; the server's
    memory growth bounded; a request behind a cancelled long one served promptly."""
    import importlib.util
    import os

    import app

    spec = importlib.util.spec_from_file_location("load_test", Path(__file__).parents[1] / "scripts" / "load_test.py")
    load_test = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "load_test", load_test)  # its dataclasses look their module up
    spec.loader.exec_module(load_test)
    _wait(_idle, 60, "the app to be idle")
    monkeypatch.setattr(app.demo._queue, "max_size", 2)  # FACESHIELD_MAX_QUEUE=2, as a small server would
    report = load_test.run(app.demo.local_url, os.getpid(), clients=6, method="blur")
    print(report.table())
    assert report.problems(max_growth_mb=250, max_short_seconds=60) == []
    assert report.count(load_test.COMPLETED) >= 1 and report.count(load_test.REFUSED) >= 1, report.outcomes
    assert report.count(load_test.COMPLETED) + report.count(load_test.REFUSED) == 6
