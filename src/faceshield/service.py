"""Protect one photo and prepare everything the web page shows. The UI only lays this out."""

from __future__ import annotations

import atexit
import html
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceshield import models, settings
from faceshield.boxes import face_region
from faceshield.evaluation import DEFAULT_DETECTORS, Evaluation, evaluate
from faceshield.images import load_image, save_png, thumbnail
from faceshield.protections import REGISTRY, ProtectionResult, build, declared, method_key
from faceshield.protections.base import PHOTOS
from faceshield.settings import InputError
from faceshield.visualize import amplified_perturbation, crop, draw_detections, enlarge

log = logging.getLogger(__name__)

# Download PNGs: one private folder per process (mode 0700, unpredictable name, made on first
# use, removed at exit) under the system temp dir, where Gradio may serve files from; inside
# it one folder per request, pruned after an hour.
OUTPUT_MAX_AGE_S = 3600
_REQUEST_PREFIX = "request-"
_output_dir: Path | None = None
_output_lock = threading.Lock()


def output_dir() -> Path:
    """This process's private download folder (created on the first call)."""
    global _output_dir
    with _output_lock:
        if _output_dir is None or not _output_dir.is_dir():
            _output_dir = Path(tempfile.mkdtemp(prefix="faceshield-outputs-"))
            atexit.register(shutil.rmtree, _output_dir, ignore_errors=True)
        return _output_dir


class ProtectionUnavailable(InputError):
    """A protection that cannot run here: its trained weights are missing or do not load."""


def check_weights(protection) -> None:
    """Load `protection`'s trained weights now (Protection.load_weights: generator, APF, DDM;
    the others have none), so a missing or unusable file is a ProtectionUnavailable for the
    user, not a crash mid-run. The reason (it may name a server path) goes to the log only."""
    try:
        protection.load_weights()
    except Exception as exc:
        log.warning("%s: trained weights could not be loaded: %s", protection.key, exc)
        raise ProtectionUnavailable(
            f"The protection '{protection.title}' is not available here: its trained weights could not be "
            "loaded. Pick another protection."
        ) from None


@dataclass(frozen=True)
class Tally:
    """How many models of one group were fooled, of those that had something to be fooled on
    (a detector that found a face on the original; a recogniser that had a face to compare)."""

    fooled: int = 0
    total: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.fooled + other.fooled, self.total + other.total)

    @property
    def share(self) -> float:
        return self.fooled / self.total if self.total else float("nan")


VERDICT_COLOURS = {  # level -> (background, border): readable on light and dark themes
    "green": ("#dcfce7", "#15803d"),
    "amber": ("#fef3c7", "#b45309"),
    "red": ("#fee2e2", "#b91c1c"),
    "grey": ("#f3f4f6", "#4b5563"),
}


@dataclass(frozen=True)
class Verdict:
    """A protection's result at a glance, counted from the same Evaluation as the tables: a
    detector is fooled when it no longer finds any face it found on the original ("hidden" is
    all of them), a recogniser when none of the faces still matches. Attacked = white-box
    (the protection attacked it or its twin); judges were never attacked."""

    detectors_attacked: Tally
    detectors_judges: Tally
    recognisers_attacked: Tally
    recognisers_judges: Tally
    psnr: float
    ssim: float
    seconds: float

    @property
    def detectors(self) -> Tally:
        return self.detectors_attacked + self.detectors_judges

    @property
    def recognisers(self) -> Tally:
        return self.recognisers_attacked + self.recognisers_judges

    @property
    def attacked(self) -> Tally:
        return self.detectors_attacked + self.recognisers_attacked

    @property
    def judges(self) -> Tally:
        return self.detectors_judges + self.recognisers_judges

    @property
    def level(self) -> str:
        """green: every never-attacked detector, or every never-attacked recogniser, is fooled;
        amber: some model is fooled, but not so; red: none is; grey: nothing to judge."""
        if not self.detectors.total and not self.recognisers.total:
            return "grey"
        if any(t.total and t.fooled == t.total for t in (self.detectors_judges, self.recognisers_judges)):
            return "green"
        return "amber" if self.detectors.fooled or self.recognisers.fooled else "red"

    @property
    def headline(self) -> str:
        if self.level == "grey":
            return "Nothing to hide: no model found a face on the original photo"
        if self.level == "green":
            kinds = [
                name
                for name, t in (("detector", self.detectors_judges), ("recogniser", self.recognisers_judges))
                if t.total and t.fooled == t.total
            ]
            return f"Protected: every never-attacked {' and every never-attacked '.join(kinds)} is fooled"
        if self.level == "amber" and not self.judges.fooled:
            return "Fools only the models it attacked (white-box)"
        if self.level == "amber":
            return "Partly protected: some never-attacked models still see through it"
        return "Not protected: every model still finds and recognises the face(s)"

    @property
    def text(self) -> str:
        """'Hidden from 3 of 5 detectors (1 of 3 never attacked) · no longer matched by 2 of 4
        recognisers (0 of 1 never attacked) · PSNR 41 dB · 6 s'."""
        parts = []
        if self.detectors.total:
            parts.append(
                f"hidden from {self.detectors.fooled} of {self.detectors.total} detectors"
                + _judged(self.detectors_judges, self.detectors.total)
            )
        if self.recognisers.total:
            parts.append(
                f"no longer matched by {self.recognisers.fooled} of {self.recognisers.total} recognisers"
                + _judged(self.recognisers_judges, self.recognisers.total)
            )
        parts.append("PSNR inf (unchanged)" if np.isinf(self.psnr) else f"PSNR {self.psnr:.0f} dB")
        parts.append(f"{self.seconds:.1f} s" if self.seconds < 10 else f"{self.seconds:.0f} s")
        text = " · ".join(parts)
        return text[:1].upper() + text[1:]

    def html(self) -> str:
        """The coloured banner the page shows first."""
        background, border = VERDICT_COLOURS[self.level]
        return (
            f'<div class="fs-verdict" data-level="{self.level}" role="status" style="background:{background};'
            f"border-left:6px solid {border};color:#111827;padding:10px 14px;border-radius:6px;"
            f'overflow-wrap:anywhere">'
            f'<div style="font-weight:700;font-size:1.1em">{html.escape(self.headline)}</div>'
            f'<div class="fs-verdict-counts" style="font-size:1.05em">{html.escape(self.text)}</div></div>'
        )


def _judged(judges: Tally, total: int) -> str:
    if judges.total == total:
        return " (all never attacked)"
    return f" ({judges.fooled} of {judges.total} never attacked)"


def verdict(ev: Evaluation, attacked, seconds: float) -> Verdict:
    """The counts behind the banner, from `ev` (the rows of the tables come from it too)."""
    tallies = {}
    for white in (True, False):
        dets = [v for v in ev.detectors if len(v.before) and models.white_box(v.key, attacked) == white]
        recs = [r for r in ev.recognisers if r.matches and models.white_box(r.key, attacked) == white]
        tallies[white] = (
            Tally(sum(_hidden_all(v) for v in dets), len(dets)),
            Tally(sum(_unmatched(r) for r in recs), len(recs)),
        )
    q = ev.quality
    return Verdict(
        tallies[True][0], tallies[False][0], tallies[True][1], tallies[False][1], q["psnr"], q["ssim"], seconds
    )


def _hidden_all(view) -> bool:
    return bool(len(view.before)) and view.hidden == len(view.before)


def _unmatched(view) -> bool:
    return bool(view.matches) and not any(m.match for m in view.matches)


@dataclass
class Judged:
    """One protection run on one photo and judged on the 8-bit result."""

    method: str
    protection: object
    result: ProtectionResult
    evaluation: Evaluation
    attacked: tuple[str, ...]

    @property
    def verdict(self) -> Verdict:
        return verdict(self.evaluation, self.attacked, self.result.seconds)


def protect_and_judge(
    pixels: np.ndarray,
    method: str,
    detector_keys: list[str] | None = None,
    reference: np.ndarray | list[np.ndarray] | None = None,
    faces=None,
    before: dict | None = None,
    **options,
) -> Judged:
    """Protect `pixels` ((H, W, 3) uint8) with `method` built from `options` (protections.build's
    knobs), then judge the result with evaluation.evaluate. `faces`: the faces to protect
    (default: the protection finds them); `before`: cached detections on the original, by key.
    Raises InputError when the photo has more faces than an iterative attack may take
    (settings.MAX_FACES), ProtectionUnavailable when the method's weights do not load."""
    if REGISTRY[method_key(method)].per_face_cost:  # the attacks' cost grows with the faces
        found = len(faces if faces is not None else models.find_faces(pixels))
        if found > settings.MAX_FACES:
            raise InputError(
                f"This photo has {found} faces; FaceShield protects at most {settings.MAX_FACES} faces "
                "per photo here. Crop the photo into parts and protect each."
            )
    protection = build(method, **options)
    check_weights(protection)
    result = protection(pixels) if faces is None else protection(pixels, faces=faces)
    # Identities are compared on the faces the protection worked on (when it found any): the
    # union of every detector's finds would add their false positives as "faces".
    ev = evaluate(
        pixels,
        result.pixels,
        detector_keys if detector_keys is not None else DEFAULT_DETECTORS,
        reference=reference,
        faces=result.faces if len(result.faces) else None,
        before=before,
        max_faces=settings.MAX_FACES,
    )
    return Judged(method, protection, result, ev, protection.attack)


@dataclass
class PageResult:
    original: np.ndarray
    protected: np.ndarray
    crop_before: np.ndarray  # the faces' region of the original (a thumbnail)
    crop_after: np.ndarray  # the same region of the protected photo
    perturbation: np.ndarray  # the same region's perturbation, amplified
    detections: list[tuple[np.ndarray, str]]  # (picture, caption) pairs, before/after per detector
    detector_rows: list[list]
    recogniser_table: dict  # {"headers": [...], "data": [[...], ...]}
    summary: str  # markdown: what ran, quality, notices
    png_path: Path
    evaluation: Evaluation
    verdict: Verdict
    notices: list[str] = field(default_factory=list)


DETECTOR_COLUMNS = ["detector", "role", "faces before", "faces after", "hidden"]
RECOGNISER_COLUMNS = ["recogniser", "role", "face", "original vs protected", "threshold", "still matched?"]
REFERENCE_COLUMNS = ["closest other photo of the person vs protected", "still linked to them?"]
ATTACKED, JUDGE = "attacked (white-box)", "judge (never attacked)"


def protect_photo(
    source,
    method: str = "detector-pgd",
    slow_judges: bool = False,
    reference=None,
    **options,
) -> PageResult:
    """Load `source` (path/bytes/array), protect it with `method` built from `options` (the
    shared knobs of protections.build; None: the method's default; photo options such as
    `targets` may be paths), judge it, and save the download PNG.
    Raises faceshield.images.ImageError for unusable input."""
    loaded = load_image(source)
    ref_pixels = load_image(reference).pixels if reference is not None else None
    for name, decls in declared().items():
        if decls[0][1].kind is PHOTOS and options.get(name):
            options[name] = [load_image(photo).pixels for photo in options[name]]
    if ref_pixels is None and options.get("same_person"):  # the person's photos: the attacker's gallery too
        ref_pixels = options["same_person"]
    detector_keys = DEFAULT_DETECTORS + (models.names(kind="detector", slow=True) if slow_judges else [])
    judged = protect_and_judge(loaded.pixels, method, detector_keys, reference=ref_pixels, **options)
    protection, result, ev, attacked = judged.protection, judged.result, judged.evaluation, judged.attacked

    gallery = []  # thumbnails: the page shows them small; the download stays full resolution
    for v in ev.detectors:
        before = draw_detections(loaded.pixels, v.before, (0, 220, 0), f"{v.name} before")
        after = draw_detections(result.pixels, v.after, (255, 60, 60), f"{v.name} after")
        gallery += [(thumbnail(before), f"{v.name}: original"), (thumbnail(after), f"{v.name}: protected")]
    det_rows = detector_rows(ev, attacked, detector_keys, slow_judges)

    png_path = _save_download(result.pixels)
    q = ev.quality
    notices = loaded.notices + result.notices + ev.notices
    summary = "\n".join(
        [
            protection.describe(result),
            f"Image quality: PSNR **{q['psnr']:.1f} dB**, SSIM **{q['ssim']:.4f}**, max change **{q['linf']}** "
            f"grey levels. Judged on the downloadable 8-bit PNG in {ev.seconds:.1f} s.",
        ]
        + [f"- {n}" for n in notices]
    )
    if result.parts and len(result.faces):
        summary += "\n\n" + apf_parts_table(loaded.pixels, result)
    boxes = result.faces.boxes if len(result.faces) else ev.faces.boxes
    region = face_region(boxes, loaded.pixels.shape, VIEW_MARGIN)
    return PageResult(
        loaded.pixels,
        result.pixels,
        face_view(loaded.pixels, region),
        face_view(result.pixels, region),
        face_view(amplified_perturbation(crop(loaded.pixels, region), crop(result.pixels, region))),
        gallery,
        det_rows,
        recogniser_table(ev, attacked, reference_given=ref_pixels is not None),
        summary,
        png_path,
        ev,
        judged.verdict,
        notices,
    )


VIEW_MARGIN = 0.4  # the faces' region the page shows big: each box grown by this x its size per side


def face_view(pixels: np.ndarray, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The page's picture of a face region: cropped, then a thumbnail, or enlarged when tiny."""
    return enlarge(thumbnail(crop(pixels, region) if region else pixels))


def detector_rows(ev: Evaluation, attacked, detector_keys: list[str], slow_judges: bool) -> list[list]:
    """DETECTOR_COLUMNS rows: each detector's faces before and after, then the ones that could
    not run (unavailable here, or slow judges not asked for)."""
    rows = [
        [v.name, _role(v.key, attacked), len(v.before), len(v.after), f"{v.hidden}/{len(v.before)}"]
        for v in ev.detectors
    ]
    rows += [[key, "-", "-", "-", "unavailable here"] for key in detector_keys if key in ev.unavailable]
    if not slow_judges:
        rows += [
            [key, "-", "-", "-", "slow: tick 'Also run slow detectors'"]
            for key in models.names(kind="detector", slow=True)
        ]
    return rows


def recogniser_table(ev: Evaluation, attacked, reference_given: bool = False) -> dict:
    """RECOGNISER_COLUMNS (+ REFERENCE_COLUMNS with a reference photo): one row per recogniser
    and face, then the recognisers unavailable here."""
    headers = RECOGNISER_COLUMNS + (REFERENCE_COLUMNS if reference_given else [])
    extra = len(headers) - len(RECOGNISER_COLUMNS)
    rows = []
    for rv in ev.recognisers:
        threshold = f"{'<' if rv.metric == 'euclidean' else '>'} {rv.threshold}"
        for m in rv.matches:
            reference = [_opt(m.reference_protected_score), _yes(m.reference_match)]
            rows.append(
                [rv.name, _role(rv.key, attacked), m.face + 1, round(m.score, 3), threshold, _yes(m.match)]
                + reference[:extra]
            )
        if not rv.matches:
            rows.append([rv.name, _role(rv.key, attacked), "-", "-", threshold, "no face to compare"] + ["-"] * extra)
    for key in models.names(kind="recogniser"):
        if key in ev.unavailable:
            rows.append([key, "-", "-", "-", "-", "unavailable here"] + ["-"] * extra)
    return {"headers": headers, "data": rows}


MODEL_COLUMNS = ["model", "kind", "available", "how it runs", "weights come from", "licence"]


def model_rows() -> list[list]:
    """MODEL_COLUMNS rows for every registered model (the Models page)."""
    rows = []
    for r in models.status():
        note = getattr(models.load(r["key"]), "note", "") if r["available"] else r["detail"]
        source = models.REGISTRY[r["key"]].source
        rows.append([r["name"], r["kind"], "yes" if r["available"] else "no", note or "-", source, r["licence"]])
    return rows


def apf_parts_table(pixels: np.ndarray, full) -> str:
    """APF's parts, each alone and together (from the one protection pass): where each runs
    and how far it moves the first face's identity for each recogniser (markdown)."""
    box = full.faces.boxes[0]
    recs, _ = models.available(["dlib-resnet", "facenet", "sface-onnx"])
    clean = {k: r.embed(pixels, box) for k, r in recs.items()}
    probes = " + ".join(full.info.get("probes", []))
    where = {
        "gradient": f"device ({probes}), {full.info['seconds_end']:.1f} s",
        "transfer": f"server network, {full.info['seconds_server']:.2f} s (reads the device's gradient)",
        "uap": "device or server (a fixed pattern)",
    }
    header = (
        "| APF part | runs on | "
        + " | ".join(
            f"{r.name} ({r.metric}, match {'<' if r.metric == 'euclidean' else '>'} {r.threshold})"
            for r in recs.values()
        )
        + " |"
    )
    lines = [
        "**What each APF part adds** (first face; the server receives only a gradient, never the photo)",
        "",
        header,
        "|" + "---|" * (len(recs) + 2),
    ]
    for name, photo in [*full.parts.items(), ("all together", full.pixels)]:
        scores = [f"{r.score(clean[k], r.embed(photo, box)):.3f}" for k, r in recs.items()]
        lines.append(f"| {name} | {where.get(name, f'{full.seconds:.1f} s in all')} | " + " | ".join(scores) + " |")
    return "\n".join(lines)


def _role(key: str, attacked) -> str:
    return ATTACKED if models.white_box(key, attacked) else JUDGE


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _opt(value) -> str | float:
    return "-" if value is None else round(value, 3)


def _save_download(pixels: np.ndarray) -> Path:
    """Save the protected PNG in a fresh per-request folder; drop our folders older than an hour."""
    root = output_dir()
    prune_downloads(root)
    return save_png(pixels, Path(tempfile.mkdtemp(prefix=_REQUEST_PREFIX, dir=root)) / "protected.png")


def prune_downloads(root: Path, max_age_s: float = OUTPUT_MAX_AGE_S) -> None:
    """Remove per-request folders older than `max_age_s` from `root`. Never fails a request:
    entries that are not ours (other names, files, links, folders holding anything but our
    PNG) are left alone, and entries that vanish meanwhile (another request pruning, a
    cancelled one finishing) are skipped."""
    now = time.time()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(_REQUEST_PREFIX):
            continue
        try:
            if entry.is_symlink() or not entry.is_dir() or now - entry.stat().st_mtime <= max_age_s:
                continue
            (entry / "protected.png").unlink(missing_ok=True)
            entry.rmdir()  # fails, and leaves the folder, if anything else is in it
        except OSError:
            continue
