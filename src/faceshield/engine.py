"""Protecting folders of photos: the plan, the one per-photo routine, the manifest and the progress
that the plain (in-process) engine and the Ray engine (faceshield.ray_engine) share.

    plan = make_plan(["album/"], Path("out"))          # what to do; what is already done
    protector = Protector(type(p), p.options())        # in each worker: models load once
    rows = protector.protect_group(plan.tasks[0], read_file)
    run_plain(plan, protection) -> Summary             # the default engine

A photo's output keeps its place in the input tree (day1/IMG_1.jpg -> OUT/day1/IMG_1.png) and is
written atomically (a temporary name, then os.replace), so an output that exists is complete and a
run that stops resumes from the outputs already written. Every photo gets one row in the manifest
(OUT/faceshield-manifest.csv, MANIFEST_FIELDS): what was done, or why it failed; a bad photo is a
row, never a stopped job.
"""

from __future__ import annotations

import csv
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceshield.settings import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MANIFEST_NAME = "faceshield-manifest.csv"
MANIFEST_FIELDS = (
    "input",
    "output",
    "status",  # protected, failed, or kept (its output was already there)
    "method",
    "options",  # JSON: the options in force
    "faces",
    "psnr",
    "ssim",
    "success",  # the protection's goal reached against the models it attacked ("" for no goal)
    "seconds",  # decoding, protecting and writing this photo, in its worker
    "notices",
    "error",
)
TMP_MARK = ".faceshield-tmp"


@dataclass(frozen=True)
class Photo:
    """One input photo and where its protected PNG goes (both absolute)."""

    input: str
    output: str
    todo: bool = True  # False: its output exists (kept); in a same-person task it is only a reference


@dataclass(frozen=True)
class Roots:
    """Where each input's output goes: a photo under one of `folders` keeps its place in that tree
    (day1/IMG_1.jpg -> OUT/day1/IMG_1.png), so equal names in different sub-folders never meet; a
    file given by itself goes to the top of `out_dir`. Small enough to hand to every worker."""

    out_dir: str
    folders: tuple[str, ...]  # absolute input folders

    def output(self, path: str) -> str:
        for folder in self.folders:
            if path.startswith(folder + os.sep):
                return os.path.join(self.out_dir, os.path.splitext(path[len(folder) + 1 :])[0] + ".png")
        return os.path.join(self.out_dir, Path(path).stem + ".png")


@dataclass
class Plan:
    """What a run does. `tasks`: lists of photos protected together by one worker (one photo each,
    or with same_person every photo of one person); `rows`: the manifest rows already settled
    (outputs kept, files refused before any work)."""

    roots: Roots
    manifest: Path
    tasks: list[list[Photo]]
    rows: list[dict]
    same_person: bool = False

    @property
    def todo(self) -> int:
        return sum(p.todo for task in self.tasks for p in task)


def _inputs(paths: list[str]) -> list[tuple[str, str]]:
    """(absolute file, person) for each input photo: a folder's photos (every image suffix, at any
    depth), then files given by themselves. The person (for same_person) is the photo's folder;
    files given by themselves are one person."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [
                (os.path.abspath(f), os.path.dirname(os.path.abspath(f)))
                for f in sorted(p.rglob("*"))
                if (f.is_file() or f.is_symlink()) and f.suffix.lower() in IMAGE_SUFFIXES
            ]
        else:
            files.append((os.path.abspath(p), ""))
    return files


def make_plan(
    inputs: list[str], out_dir: Path, manifest: Path | None = None, force: bool = False, same_person: bool = False
) -> Plan:
    """The plan for protecting `inputs` (files or folders) into `out_dir`. InputError when there is
    nothing to do, when an output would overwrite an input, or when two inputs would share an
    output. Photos whose output exists are kept (their earlier manifest row, or a "kept" row)
    unless `force`; files that cannot be read, or are too large, get their error row here, before
    any byte of them is read."""
    from faceshield.images import ImageError, check_file

    roots = Roots(os.path.abspath(out_dir), tuple(os.path.abspath(p) for p in inputs if Path(p).is_dir()))
    manifest = Path(manifest).absolute() if manifest else Path(roots.out_dir) / MANIFEST_NAME
    jobs = _inputs(inputs)
    if not jobs:
        raise InputError("no input images found")
    sources = {Path(f).resolve() for f, _ in jobs}
    if manifest.resolve() in sources:
        raise InputError(f"refusing to write the manifest {manifest}: it is one of the inputs")
    targets: dict[Path, str] = {}
    for path, _ in jobs:
        target = Path(roots.output(path)).resolve()
        if target in sources:
            raise InputError(f"refusing to write {target}: it is one of the input photos (choose another -o folder)")
        if target in targets:
            raise InputError(
                f"{path} and {targets[target]} would both be written to {target}: give them separately or as one folder"
            )
        targets[target] = path
    earlier = {} if force else read_manifest(manifest)
    rows: list = []
    groups: dict = {}
    for path, person in jobs:
        photo = Photo(path, roots.output(path))
        if not force and Path(photo.output).exists():  # an interrupted run resumes where it stopped
            photo = Photo(photo.input, photo.output, todo=False)
            old = earlier.get(photo.input)
            rows.append(old if old and old.get("status") != "failed" else _row(photo, "kept"))
        else:
            try:
                check_file(path)
            except ImageError as exc:
                rows.append(_row(photo, "failed", error=str(exc)))
                continue
        groups.setdefault(person if same_person else path, []).append(photo)
    tasks = [task for task in groups.values() if any(p.todo for p in task)]
    return Plan(roots, manifest, tasks, rows, same_person)


def _row(photo: Photo, status: str, **values) -> dict:
    return {"input": photo.input, "output": photo.output if status != "failed" else "", "status": status, **values}


def read_manifest(path: Path) -> dict[str, dict]:
    """The rows of an earlier run's manifest by input (the last row of each); {} when there is none."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["input"]: row for row in csv.DictReader(f)}


class Manifest:
    """The manifest as a run writes it: each row appended (and flushed) as its photo finishes, so
    a run stopped at any point leaves every finished photo recorded; close() rewrites it with one
    row per input, sorted."""

    def __init__(self, path: Path, settled: list[dict], method: str, options: str):
        self.path, self.method, self.options = path, method, options
        self.rows = {row["input"]: {"method": method, "options": options, **row} for row in settled}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write(self.rows.values())
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, MANIFEST_FIELDS, extrasaction="ignore")

    def add(self, row: dict) -> None:
        row = {"method": self.method, "options": self.options, **row}
        self.rows[row["input"]] = row
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self._write(sorted(self.rows.values(), key=lambda r: r["input"]))

    def _write(self, rows) -> None:
        tmp = self.path.with_name(self.path.name + TMP_MARK)
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, MANIFEST_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)


def options_text(protection) -> str:
    """The options in force as JSON; a list of photos reads as its length."""

    def plain(value):
        if isinstance(value, list | tuple) and value and isinstance(value[0], np.ndarray):
            return f"{len(value)} photos"
        return list(value) if isinstance(value, tuple) else value

    return json.dumps({k: plain(v) for k, v in protection.options().items()}, default=str)


def write_png_atomically(pixels: np.ndarray, output: str | Path) -> None:
    """save_png to a temporary name beside `output`, then os.replace: `output` is either absent
    or complete, whatever happens to the process."""
    from faceshield.images import save_png

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}{TMP_MARK}")
    try:
        save_png(pixels, tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


class Protector:
    """A worker's protection, built once (its models load on the first photo and stay), and the
    per-photo routine both engines run: decode, protect, write the PNG, return the manifest row.

    cls, options: the protection's class and options in force (Protection.options()); threads:
    torch/OpenCV threads of this worker (default: settings); protection: one already built in
    this process (the plain engine's), else built here."""

    def __init__(self, cls, options: dict, threads: int | None = None, protection=None):
        from faceshield import settings

        if threads:
            settings.TORCH_THREADS = threads
        settings.apply_threads()
        self.cls, self.options = cls, dict(options)
        self.protection = protection or cls(**self.options)

    def protect_group(self, task: list[Photo], read) -> list[dict]:
        """Manifest rows of the photos of `task` still to do. read(photo) -> its bytes. With more
        than one photo (a person's), each is protected with same_person=[the others, decoded]."""
        from faceshield.images import load_image

        loaded, rows = {}, []
        for photo in task:
            start = time.perf_counter()
            try:
                loaded[photo] = (load_image(read(photo), name=Path(photo.input).name), time.perf_counter() - start)
            except Exception as exc:  # a bad photo is a row, never a stopped job
                if photo.todo:
                    rows.append(_failed(photo, exc, start))
        for photo, (image, decoding) in loaded.items():
            if not photo.todo:
                continue
            protection = self.protection
            if len(task) > 1:
                others = [other.pixels for key, (other, _) in loaded.items() if key != photo]
                protection = self.cls(**{**self.options, "same_person": others or None})
            rows.append(self._protect(photo, image, protection, time.perf_counter() - decoding))
        return rows

    def _protect(self, photo: Photo, image, protection, start: float) -> dict:
        from faceshield.metrics import image_quality

        try:
            result = protection(image.pixels)
            write_png_atomically(result.pixels, photo.output)
        except Exception as exc:
            return _failed(photo, exc, start)
        quality = image_quality(image.pixels, result.pixels)
        return _row(
            photo,
            "protected",
            faces=result.faces_protected,
            psnr=round(quality["psnr"], 2),
            ssim=round(quality["ssim"], 4),
            success="" if result.success is None else bool(result.success),
            seconds=round(time.perf_counter() - start, 3),
            notices="; ".join(image.notices + result.notices),
        )


def _failed(photo: Photo, exc: Exception, start: float) -> dict:
    error = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return _row(photo, "failed", error=error, seconds=round(time.perf_counter() - start, 3))


def read_file(photo: Photo) -> bytes:
    return Path(photo.input).read_bytes()


@dataclass
class Summary:
    """What a run did: counts and time."""

    protected: int = 0
    failed: int = 0
    kept: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    worker_seconds: list[float] = field(default_factory=list)  # per protected photo, in its worker
    first_done: float | None = None  # seconds from the start to the first finished photo

    @property
    def rate(self) -> float:
        done = self.protected + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def text(self, manifest: Path) -> str:
        head = "interrupted: " if self.interrupted else ""
        tail = "; run the same command again to resume" if self.interrupted else ""
        return (
            f"{head}{self.protected} protected, {self.kept} already there (kept; --force redoes them), "
            f"{self.failed} failed in {self.seconds:.1f} s ({self.rate:.2f} photos/s); manifest: {manifest}{tail}"
        )


class Progress:
    """Photos done, failed, rate and time left (a tqdm bar), one line per photo, the manifest
    rows written as they come, and the Summary."""

    def __init__(self, plan: Plan, method: str, protection, quiet: bool = False):
        from tqdm import tqdm

        self.plan, self.quiet = plan, quiet
        self.manifest = Manifest(plan.manifest, plan.rows, method, options_text(protection))
        self.summary = Summary(
            kept=sum(r["status"] != "failed" for r in plan.rows), failed=sum(r["status"] == "failed" for r in plan.rows)
        )
        self.start = time.perf_counter()
        self.bar = tqdm(total=plan.todo, desc="protecting", unit="photo", disable=quiet)
        for row in plan.rows:
            if row["status"] == "failed":
                self._say(f"skipped {row['input']}: {row['error']}")

    def add(self, row: dict) -> None:
        self.manifest.add(row)
        if self.summary.first_done is None:
            self.summary.first_done = time.perf_counter() - self.start
        if row["status"] == "failed":
            self.summary.failed += 1
            self._say(f"skipped {row['input']}: {row['error']}")
        else:
            self.summary.protected += 1
            self.summary.worker_seconds.append(float(row["seconds"]))
            notes = f" [{row['notices']}]" if row.get("notices") else ""
            self._say(
                f"{row['input']} -> {row['output']} ({row['faces']} face(s), {row['seconds']:.1f} s, "
                f"PSNR {row['psnr']:.1f} dB){notes}"
            )
        self.bar.update(1)
        self.bar.set_postfix(failed=self.summary.failed, refresh=False)

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.bar.write(text)

    def close(self, interrupted: bool = False) -> Summary:
        self.bar.close()
        self.manifest.close()
        self.summary.seconds = time.perf_counter() - self.start
        self.summary.interrupted = interrupted
        if not self.quiet:
            print(self.summary.text(self.plan.manifest))
        return self.summary


def run_plain(plan: Plan, method: str, protection, quiet: bool = False) -> Summary:
    """The default engine: every task in this process, in turn, with `protection`'s models."""
    protector = Protector(type(protection), protection.options(), protection=protection)
    progress = Progress(plan, method, protection, quiet)
    try:
        for task in plan.tasks:
            for row in protector.protect_group(task, read_file):
                progress.add(row)
    except KeyboardInterrupt:
        return progress.close(interrupted=True)
    return progress.close()


def check_same_person(cls) -> None:
    """InputError unless protections of class `cls` take photos of the same person."""
    from faceshield.protections import REGISTRY

    if cls.param("same_person") is None:
        takers = [key for key, c in REGISTRY.items() if c.param("same_person") is not None]
        raise InputError(
            f"--same-person needs a protection that takes other photos of the same person (option same_person); "
            f"{cls.key} does not"
            + (f": use {', '.join(takers)}" if takers else " and no protection in this version does")
        )
