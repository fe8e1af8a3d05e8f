"""The one evaluation routine: what each model sees before and after a protection.

Used by the app, the CLI, the benchmark and the tests, so every number means the same thing
everywhere. Judges always look at the 8-bit photo the user downloads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from faceshield import models
from faceshield.boxes import largest
from faceshield.metrics import box_iou, image_quality
from faceshield.models import Detections
from faceshield.protections.base import merge_faces
from faceshield.protections.cancel import check_cancelled

DEFAULT_DETECTORS = models.names(kind="detector", slow=False)
DEFAULT_RECOGNISERS = models.names(kind="recogniser")


@dataclass
class DetectorView:
    key: str
    name: str
    before: Detections
    after: Detections
    seconds: float
    note: str = ""

    @property
    def hidden(self) -> int:
        """Faces found on the original that no detection on the protected photo overlaps (IoU>=0.3)."""
        if len(self.before) == 0:
            return 0
        if len(self.after) == 0:
            return len(self.before)
        return int((box_iou(self.before.boxes, self.after.boxes).max(1) < 0.3).sum())


@dataclass
class FaceMatch:
    face: int  # index into Evaluation.faces
    score: float  # distance or similarity, in the model's own metric
    match: bool  # still the same person at the model's threshold?
    # with photos of the same person given: the closest of them vs the original and vs the protected
    reference_score: float | None = None
    reference_protected_score: float | None = None
    reference_match: bool | None = None  # does any of them still match the protected face?


@dataclass
class RecogniserView:
    key: str
    name: str
    metric: str
    threshold: float
    matches: list[FaceMatch]
    seconds: float
    note: str = ""

    @property
    def match_rate(self) -> float:
        return float(np.mean([m.match for m in self.matches])) if self.matches else float("nan")


@dataclass
class Evaluation:
    faces: Detections  # faces on the original, the ones recognisers compare
    detectors: list[DetectorView]
    recognisers: list[RecogniserView]
    quality: dict
    unavailable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)  # what the user should know about the judging


def closest(rec, scores: list[float]) -> float:
    """The score of the most similar pair among `scores` in the recogniser's own metric."""
    return min(scores) if rec.metric == "euclidean" else max(scores)


def reference_faces(pixels: np.ndarray, detectors: list) -> Detections:
    """Faces of the original photo, as the union of what the given detectors found."""
    return merge_faces([d.detect(pixels) for d in detectors])


def evaluate(
    original: np.ndarray,
    protected: np.ndarray,
    detector_keys: list[str] | None = None,
    recogniser_keys: list[str] | None = None,
    faces: Detections | None = None,
    reference: np.ndarray | list[np.ndarray] | None = None,
    before: dict[str, Detections] | None = None,
    max_faces: int | None = None,
) -> Evaluation:
    """Judge `protected` against `original`, both (H, W, 3) uint8.

    detector_keys / recogniser_keys: registry keys (default: every fast detector, every recogniser).
    faces: faces to compare identities on (default: union of the detectors' finds on the original).
    reference: optional other photo(s) of the same person (the attacker's gallery); the largest face
    of each is compared with each face, and the closest one is reported.
    before: cached detections on the original, by key (saves time when judging several protections).
    max_faces: recognisers judge at most this many faces, the largest (None: every face); the
    web path sets it so that one crowded photo cannot hold the server for minutes. Inside a
    request (protections.base.stop_when) a cancelled request stops the judging face by face.
    """
    start = time.perf_counter()
    detector_keys = DEFAULT_DETECTORS if detector_keys is None else detector_keys
    recogniser_keys = DEFAULT_RECOGNISERS if recogniser_keys is None else recogniser_keys
    detectors, unavailable = models.available(detector_keys)
    recognisers, missing = models.available(recogniser_keys)
    unavailable |= missing
    det_views = []
    for key, det in detectors.items():
        t = time.perf_counter()
        clean = before[key] if before and key in before else det.detect(original)
        after = det.detect(protected)
        det_views.append(DetectorView(key, det.name, clean, after, time.perf_counter() - t, det.note))

    if faces is None:
        faces = merge_faces([v.before for v in det_views])
    notices, judged = [], list(range(len(faces)))
    if max_faces is not None and len(faces) > max_faces:
        b = np.asarray(faces.boxes, float)
        judged = sorted(np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")[:max_faces].tolist())
        notices.append(
            f"Identity was judged on the {max_faces} largest of the {len(faces)} faces (the per-request face limit)."
        )
    gallery = []  # (photo, its largest face) of each same-person photo with a face
    references = [] if reference is None else [reference] if isinstance(reference, np.ndarray) else list(reference)
    for photo in references if detectors else []:
        found = reference_faces(photo, list(detectors.values())[:1])
        if len(found):
            gallery.append((photo, found.boxes[largest(found.boxes)]))
    rec_views = []
    for key, rec in recognisers.items():
        t = time.perf_counter()
        ref_embeddings = [rec.embed(photo, box) for photo, box in gallery]
        matches = []
        for i in judged:
            box = faces.boxes[i]
            check_cancelled()
            # Both photos are read at the clean face box: the recogniser is given the face even
            # when the protection hid it from detectors (the stronger adversary).
            e_orig, e_prot = rec.embed(original, box), rec.embed(protected, box)
            score = rec.score(e_orig, e_prot)
            fm = FaceMatch(i, score, rec.is_match(score))
            if ref_embeddings:
                fm.reference_score = closest(rec, [rec.score(r, e_orig) for r in ref_embeddings])
                fm.reference_protected_score = closest(rec, [rec.score(r, e_prot) for r in ref_embeddings])
                fm.reference_match = rec.is_match(fm.reference_protected_score)
            matches.append(fm)
        rec_views.append(
            RecogniserView(key, rec.name, rec.metric, rec.threshold, matches, time.perf_counter() - t, rec.note)
        )
    return Evaluation(
        faces,
        det_views,
        rec_views,
        image_quality(original, protected),
        unavailable,
        time.perf_counter() - start,
        notices,
    )


def identity_leakage(
    recogniser, embeddings: dict[str, np.ndarray], pairs: list[tuple[str, str, bool]], people: dict[str, str]
) -> dict:
    """How much identity a set of face embeddings carries, for one recogniser.

    embeddings: {photo: embedding}; pairs: (photo a, photo b, same person?); people: {photo: person}.
    Returns verification on the pairs (accuracy at the recogniser's own threshold, TPR, TNR and
    the threshold-free ROC AUC), leave-one-out rank-1 identification (the share of photos
    whose most similar other photo shows the same person) with its chance level, and
    "trained": leave-one-out accuracy of a logistic-regression classifier fitted on the other
    photos' embeddings. Given embeddings of obfuscated photos, this is the attacker of McPherson
    et al. (2016) who obfuscates his own labelled photos the same way, picks his own threshold
    and trains on them (here a linear classifier on a frozen recogniser, not a new network).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pairs = [(a, b, same) for a, b, same in pairs if a in embeddings and b in embeddings]
    scores = np.array([recogniser.score(embeddings[a], embeddings[b]) for a, b, _ in pairs])
    same = np.array([s for *_, s in pairs], bool)
    predicted = np.array([recogniser.is_match(s) for s in scores], bool)
    sign = -1.0 if recogniser.metric == "euclidean" else 1.0  # similarity: higher = more alike
    auc = float(weighted_auc(same, sign * scores, np.ones(len(same)))[0]) if len(same) else float("nan")
    auc_low, auc_high = _auc_interval(same, sign * scores, [(people[a], people[b]) for a, b, _ in pairs])
    photos = sorted(embeddings)
    hits, chance = [], []
    for p in photos:
        others = [q for q in photos if q != p]
        if not any(people[q] == people[p] for q in others):
            continue  # nobody to find
        best = max(others, key=lambda q: sign * recogniser.score(embeddings[p], embeddings[q]))
        hits.append(people[best] == people[p])
        chance.append(np.mean([people[q] == people[p] for q in others]))
    known = [p for p in photos if sum(people[q] == people[p] for q in photos) >= 2]
    trained = float("nan")
    if len({people[p] for p in known}) >= 2:
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        trained = float(
            cross_val_score(
                classifier, np.stack([embeddings[p] for p in known]), [people[p] for p in known], cv=LeaveOneOut()
            ).mean()
        )
    return {
        "pairs": len(pairs),
        "accuracy": float(np.mean(predicted == same)),
        "trained": trained,
        "tpr": float(np.mean(predicted[same])),
        "tnr": float(np.mean(~predicted[~same])),
        "auc": auc,
        "auc_low": auc_low,
        "auc_high": auc_high,
        "rank1": float(np.mean(hits)) if hits else float("nan"),
        "rank1_chance": float(np.mean(chance)) if chance else float("nan"),
        "photos": len(hits),
    }


def weighted_auc(same: np.ndarray, similarity: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of `similarity` separating same (True) from different pairs, for each row of
    `weights` ((draws, pairs) or (pairs,)) at once: the weighted Mann-Whitney statistic, a tie
    counting one half (what sklearn's roc_auc_score gives with sample_weight, without a call
    per draw). NaN where a row weighs no same or no different pair."""
    w = np.atleast_2d(np.asarray(weights, float))
    pos, neg = similarity[same], similarity[~same]
    order = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (same, different)
    wp, wn = w[:, same], w[:, ~same]
    total = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.einsum("dp,pn,dn->d", wp, order, wn) / total
    auc[total == 0] = np.nan
    return auc if np.ndim(weights) == 2 else auc[:1]


def _auc_interval(
    same: np.ndarray, similarity: np.ndarray, pair_people: list[tuple[str, str]], draws: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the pairs' ROC AUC, bootstrapping people rather than pairs: pairs that
    share a person are not independent, and with a dozen people the person-to-person spread is
    what makes two methods' AUCs differ by chance. A drawn person counted k times weighs every
    pair he is in by k (a pair of two drawn people by the product)."""
    names = sorted({n for pair in pair_people for n in pair})
    if not 0 < same.sum() < len(same) or len(names) < 2:
        return float("nan"), float("nan")
    index = {n: i for i, n in enumerate(names)}
    a = np.array([index[x] for x, _ in pair_people])
    b = np.array([index[y] for _, y in pair_people])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=draws)  # (draws, people)
    weight = np.where(a == b, counts[:, a], counts[:, a] * counts[:, b]).astype(float)
    aucs = weighted_auc(same, similarity, weight)
    low, high = np.nanpercentile(aucs, [2.5, 97.5])
    return float(low), float(high)
