"""The identity bench and its attacker who knows the protection, on a tiny dataset made here."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceshield.bench import run_identity_bench
from faceshield.bench.docs import render
from faceshield.evaluation import identity_leakage
from faceshield.models.base import Recogniser


class _Points(Recogniser):
    """A recogniser whose embeddings are given: enough to check the leakage arithmetic."""

    name, threshold, metric = "points", 0.5, "euclidean"


def _leakage(embeddings: dict[str, list[float]]) -> dict:
    people = {p: p.split("/")[0] for p in embeddings}
    photos = sorted(embeddings)
    pairs = [(a, b, people[a] == people[b]) for i, a in enumerate(photos) for b in photos[i + 1 :]]
    return identity_leakage(_Points(), {p: np.array(e, float) for p, e in embeddings.items()}, pairs, people)


def test_leakage_of_separated_and_of_identical_embeddings():
    separated = _leakage(
        {"ann/1": [0, 0], "ann/2": [0.1, 0], "ann/3": [0, 0.1], "bob/1": [5, 5], "bob/2": [5.1, 5], "bob/3": [5, 5.1]}
    )
    assert separated["auc"] == 1.0 and separated["rank1"] == 1.0 and separated["accuracy"] == 1.0
    assert separated["trained"] == 1.0
    assert separated["rank1_chance"] == pytest.approx(2 / 5)
    # every face turned into the same thing: nothing to tell people apart by
    erased = _leakage({f"{who}/{n}": [1, 1] for who in ("ann", "bob") for n in (1, 2, 3)})
    assert erased["auc"] == 0.5 and erased["tnr"] == 0.0  # all pairs "match" at the threshold
    assert erased["trained"] <= 0.5  # a classifier has nothing to learn from either
    assert (separated["auc_low"], separated["auc_high"]) == (1.0, 1.0)
    assert (erased["auc_low"], erased["auc_high"]) == (0.5, 0.5)


def test_auc_interval_spans_the_spread_between_people():
    # ann and bob are easy to tell apart; cat and dan share one cloud of points: whether the
    # AUC looks good depends on which people the data happens to hold
    rng = np.random.default_rng(0)
    centres = {"ann": [0, 0], "bob": [9, 9], "cat": [0, 9], "dan": [0.3, 9]}
    mixed = _leakage(
        {f"{who}/{n}": list(np.add(c, rng.normal(0, 0.5, 2))) for who, c in centres.items() for n in range(4)}
    )
    assert mixed["auc_low"] < mixed["auc"] < mixed["auc_high"] <= 1.0
    assert mixed["auc_high"] - mixed["auc_low"] > 0.05


def test_weighted_auc_equals_sklearn_per_draw_ties_and_empty_draws_included():
    """The bootstrap's AUC of every draw at once equals sklearn's roc_auc_score with that draw's
    weights (ties count a half); a draw that weighs no different pair is NaN, not a number."""
    from sklearn.metrics import roc_auc_score

    from faceshield.evaluation import weighted_auc

    rng = np.random.default_rng(1)
    same = rng.random(40) < 0.3
    similarity = np.round(rng.normal(size=40) + same, 1)  # rounded: ties
    weights = rng.integers(0, 4, size=(6, 40)).astype(float)
    weights[5, ~same] = 0
    got = weighted_auc(same, similarity, weights)
    for draw in range(5):
        assert got[draw] == pytest.approx(roc_auc_score(same, similarity, sample_weight=weights[draw]), abs=1e-12)
    assert np.isnan(got[5])


def _views(photo: np.ndarray, box: tuple[int, int, int, int], n: int) -> list[np.ndarray]:
    """n different photos of one face: crops around it at several offsets and scales, some flipped."""
    x1, y1, x2, y2 = box
    h, w = photo.shape[:2]
    out = []
    for i in range(n):
        grow = 0.35 + 0.15 * i
        dx, dy = int((x2 - x1) * grow), int((y2 - y1) * grow)
        crop = photo[max(0, y1 - dy) : min(h, y2 + dy), max(0, x1 - dx + 4 * i) : min(w, x2 + dx + 4 * i)]
        out.append(crop[:, ::-1] if i % 2 else crop)
    return out


@pytest.fixture(scope="module")
def tiny_identities(tmp_path_factory, photos):
    """identities/<person>/<n>.jpg and pairs.csv for two people of the zidane photo and the astronaut."""
    from faceshield import models

    root = tmp_path_factory.mktemp("faces")
    zidane = photos["zidane"]
    people = {"astronaut": (photos["astronaut"], models.largest_face(photos["astronaut"]))}
    found = models.load("mtcnn").detect(zidane).boxes
    for name, box in zip(("left", "right"), sorted(found[:2], key=lambda b: b[0])):
        people[name] = (zidane, box)
    rows, files = [], {}
    for person, (photo, box) in people.items():
        (root / "identities" / person).mkdir(parents=True)
        for n, view in enumerate(_views(photo, tuple(int(v) for v in box), 3), 1):
            path = f"identities/{person}/{n}.jpg"
            Image.fromarray(np.ascontiguousarray(view)).save(root / path, quality=95)
            files[path] = person
    names = sorted(files)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rows.append(f"{a},{b},{int(files[a] == files[b])}")
    (root / "pairs.csv").write_text("img_a,img_b,same\n" + "\n".join(rows) + "\n")
    return root


def test_identity_bench_with_the_attacker_who_knows_the_protection(tiny_identities, tmp_path):
    results = run_identity_bench(tiny_identities, ["mask", "noise"], out_dir=tmp_path, adaptive=True)
    # OpenFace, the zoo's weakest recogniser (ROC AUC 0.92 on the dev pairs), is a judge, not
    # an identifier these crops and flips can rely on: the arithmetic is checked on the others
    results["leakage_clean"].pop("openface")
    results["methods"]["noise"]["recognisers"].pop("openface")
    for key, clean in results["leakage_clean"].items():
        for view in ("published", "face_only"):  # three views of one face find each other
            assert clean[view]["rank1"] == 1.0 and clean[view]["auc"] > 0.9, (key, view)
        assert clean["published"]["pairs"] == 36 and clean["published"]["photos"] == 9
    for key, row in results["methods"]["noise"]["recognisers"].items():
        assert row["psr"] == 0.0 and row["leakage"]["published"]["rank1"] == 1.0, key  # the noise control hides nothing
    for key, row in results["methods"]["mask"]["recognisers"].items():  # nothing of the face is left to go by
        assert row["leakage"]["face_only"]["auc"] < 0.7, key
    # A masked face rarely matches a clean view. (Protected-vs-protected, masked views of one photo
    # still find each other through the hair and background they share, so that is not asserted.)
    masked = results["methods"]["mask"]["recognisers"]
    assert all(row["psr"] >= 0.75 for row in masked.values()), {k: r["psr"] for k, r in masked.items()}
    table = (tmp_path / "results.md").read_text()
    assert "Attacker who knows the protection" in table and "| clean | dlib-resnet |" in table


def test_per_person_keeps_k_pairs_each_with_its_own_protected_photo():
    from faceshield.bench import pairs_per_person

    pairs = [
        ("ann/1", "ann/2"),
        ("ann/1", "ann/3"),
        ("ann/2", "ann/3"),
        ("ann/3", "ann/4"),
        ("bob/1", "bob/2"),
        ("bob/2", "bob/3"),
    ]
    pairs = [(f"identities/{a}.jpg", f"identities/{b}.jpg") for a, b in pairs]
    kept = pairs_per_person(pairs, 2)
    assert [p[0] for p in kept] == [
        "identities/ann/1.jpg",
        "identities/ann/2.jpg",
        "identities/bob/1.jpg",
        "identities/bob/2.jpg",
    ]


REPO = Path(__file__).resolve().parents[1]

_ZOO = {
    "dataset": "faces",
    "recognisers": {
        "dlib-resnet": {
            "name": "dlib ResNet",
            "threshold": 0.6,
            "metric": "euclidean",
            "pairs": 4,
            "accuracy": 0.75,
            "tpr": 1.0,
            "tnr": 0.5,
            "auc": 0.875,
        }
    },
    "detectors": {"mtcnn": {"name": "MTCNN", "faces": 3, "recall": 2 / 3, "ap": 0.6}},
    "timing": {"mtcnn": {"forward": 0.5, "forward_backward": 1.25}, "dlib-resnet": {"forward": 0.2}},
    "unavailable": {},
}
_DETECTION = {
    "dataset": "faces",
    "eps": 8,
    "photos": ["a.jpg"],
    "methods": {
        "noise": {
            "summary": {
                "seconds_per_photo": 0.1,
                "psnr": 43.21,
                "ssim": 0.98,
                "linf": 8,
                "recogniser_match_rate": 1.0,
                "detectors": {
                    "mtcnn": {
                        "faces": 2,
                        "white_box": False,
                        "recall_before": 1.0,
                        "recall_after": 0.5,
                        "ap_before": 1.0,
                        "ap_after": 0.5,
                    }
                },
            },
            "photos": [{"photo": "a.jpg", "seconds": 0.1, "faces": 2, "success": None}],
        }
    },
}


def _record(folder: Path, name: str, kind: str, results: dict, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"bench": kind, "command": f"python -m faceshield bench faces --{name}", "measured": "2026-12-02 01:00 UTC"}
    rec |= {"commit": "abc1234", "threads": 1, "note": "busy", "results": results, **extra}
    (folder / f"{name}.json").write_text(json.dumps(rec))


def test_benchmarks_page_is_rendered_from_the_recorded_results(tmp_path):
    results = tmp_path / "results"
    _record(results, "zoo", "zoo", _ZOO)
    _record(results, "noise", "detection", _DETECTION, title="The noise control")
    page = render(results, REPO / "docs" / "benchmarks.template.md")
    zoo, detection = page.index("## Model zoo"), page.index("## Detector evasion")
    # each table under its own heading, printed by the bench's formatter, with the command that made it
    assert zoo < page.index("| dlib-resnet | euclidean 0.6 | 4 | 75.0% | 100.0% | 50.0% | 0.875 |") < detection
    assert zoo < page.index("| mtcnn | 0.50 | 1.25 |") < detection
    assert detection < page.index("### The noise control") < page.index("| noise | mtcnn | 2 | 100.0% | 50.0% |")
    assert "python -m faceshield bench faces --zoo\n" in page and "at commit abc1234, 1 torch thread; busy." in page
    assert "<!-- results:" not in page
    assert page.count("No recorded run yet.") == 3  # transfer, identity and sweeps: nothing recorded here
    _record(results, "odd", "no-such-bench", {})
    with pytest.raises(ValueError, match="no-such-bench"):
        render(results, REPO / "docs" / "benchmarks.template.md")


def test_committed_benchmarks_page_matches_the_committed_results():
    page = REPO / "docs" / "benchmarks.md"
    expected = render(REPO / "docs" / "results", REPO / "docs" / "benchmarks.template.md")
    assert page.read_text() == expected, "run `python -m faceshield bench-docs` and commit docs/benchmarks.md"


def test_bench_record_saves_the_results_with_the_command(tmp_path, monkeypatch, capsys):
    from faceshield import bench, cli

    monkeypatch.setattr(bench, "run_zoo_bench", lambda dataset, out_dir: _ZOO)
    argv = ["bench", "faces", "--zoo", "--out", str(tmp_path), "--record", str(tmp_path / "r.json"), "--note", "a b"]
    assert cli.main(argv) == 0
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["bench"] == "zoo" and rec["results"] == _ZOO and rec["note"] == "a b"
    assert (
        rec["command"]
        == f"python -m faceshield bench faces --zoo --out {tmp_path} --record {tmp_path}/r.json --note 'a b'"
    )
    assert rec["threads"] >= 1 and rec["measured"].endswith("UTC")
    assert "| dlib-resnet | euclidean 0.6 |" in render(tmp_path, REPO / "docs" / "benchmarks.template.md")


def test_sizes_sweep_resizes_the_protected_photos(tiny_identities, tmp_path):
    """`bench --pairs --sizes`: one run per size, the protected photos at that size (longer
    side), judged against the clean photos; one table with a row per size."""
    from faceshield.bench.identity import run_identity_sweep

    sweep = run_identity_sweep(tiny_identities, ["noise"], out_dir=tmp_path, sizes=[64, 300], per_person=1)
    assert [row["setting"] for row in sweep["rows"]] == ["64 px", "300 px"]
    for row, side in zip(sweep["rows"], (64, 300)):
        photos = row["results"]["methods"]["noise"]["photos"]
        assert photos and all(p["side"] == side for p in photos)
        assert row["results"]["size"] == side
    table = (tmp_path / "results.md").read_text()
    assert "| 64 px | noise |" in table and "| 300 px | noise |" in table and "black-box mean" in table


def test_same_person_sets_leave_out_the_judged_photos(tiny_identities):
    from faceshield.bench.identity import _person_sets
    from faceshield.images import load_image

    pairs = [("identities/left/1.jpg", "identities/left/2.jpg")]
    photos = {p: load_image(tiny_identities / p).pixels for p in ("identities/left/1.jpg", "identities/left/2.jpg")}
    sets = _person_sets(pairs, tiny_identities, photos)
    expected = load_image(tiny_identities / "identities/left/3.jpg").pixels
    assert list(sets) == ["identities/left/1.jpg"] and len(sets["identities/left/1.jpg"]) == 1
    assert np.array_equal(sets["identities/left/1.jpg"][0], expected)  # only the photo it is not judged against


def test_targeted_match_compares_with_the_users_targets(photos):
    """With --target the targeted-match figure compares each protected face with the user's
    target photos (what targets_used indexes), not the built-in ones."""
    from faceshield.bench.identity import _target_embeddings
    from faceshield.protections.tip_im import builtin_target_photos

    class Mean(_Points):
        def embed(self, pixels, box):
            return np.array([float(pixels.mean())])

    mine = [np.ascontiguousarray(photos["astronaut"][:256, 96:352])]
    assert len(builtin_target_photos()) != len(mine)
    given = _target_embeddings({"mean": Mean()}, mine)["mean"]
    assert len(given) == 1 and given[0][0] == pytest.approx(float(mine[0].mean()))
    assert len(_target_embeddings({"mean": Mean()})["mean"]) == len(builtin_target_photos())


def test_records_are_typed_and_versioned(tmp_path):
    """Every committed record reads as a typed Record of this version (an older one upgraded: a
    version-1 transfer record's psnr_min is read as psnr_lowest); saving and loading gives it
    back with its version; a newer schema is refused."""
    from faceshield.bench.records import KINDS, SCHEMA, Record, load, load_all

    committed = load_all(REPO / "docs" / "results")
    assert committed and all(r.schema == SCHEMA and r.bench in KINDS and r.results for r in committed.values())
    old = {"bench": "transfer", "command": "bench --transfer", "measured": "then", "threads": 1}
    old["results"] = {"methods": {"detector-pgd": {"psnr_min": 30.0, "seconds_max": 9.0, "psnr_median": 33.0}}}
    upgraded = Record.from_json(old).results["methods"]["detector-pgd"]
    assert upgraded == {"psnr_lowest": 30.0, "seconds_worst": 9.0, "psnr_median": 33.0}
    zoo = committed["zoo"]
    zoo.save(tmp_path / "zoo.json")
    assert load(tmp_path / "zoo.json") == zoo and json.loads((tmp_path / "zoo.json").read_text())["schema"] == SCHEMA
    with pytest.raises(ValueError, match="newer"):
        Record.from_json({**zoo.to_json(), "schema": SCHEMA + 1})
    with pytest.raises(ValueError, match="missing threads"):
        Record.from_json({k: v for k, v in zoo.to_json().items() if k != "threads"})
