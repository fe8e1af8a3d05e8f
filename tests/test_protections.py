"""The declared Protection interface: a new protection is one module, and the CLI, the page, the
bench and the checks of every input follow from its declaration."""

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

TOY = '''
import time

import numpy as np

from faceshield.models import Detections
from faceshield.protections.base import Budget, Param, Protection, ProtectionResult, register


@register
class Invert(Protection):
    """A toy: move every pixel towards its negative."""

    key = "toy-invert"
    title = "Toy: invert the photo"
    summary = "inverts the photo a little (a toy protection for the registry test)"
    params = (
        Param("amount", 0.5, "share of the inversion", low=0, high=1),
        Param("quirk", 3, "an option no adapter lists", low=0),
    )

    def __call__(self, pixels, faces=None):
        start = time.perf_counter()
        x = pixels.astype(np.float32)
        out = np.clip(np.round(x + self.amount * (255 - 2 * x)), 0, 255).astype(np.uint8)
        budget = Budget.measure("linf", 255, pixels, out)
        return ProtectionResult(out, Detections.empty(), time.perf_counter() - start, budget=budget)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy protection's module, written to a temporary folder and imported (registering it),
    with how each adapter shows its option `amount`: a CLI flag, a page control, a bench tag."""
    from faceshield import cli, page
    from faceshield.bench import method
    from faceshield.protections import REGISTRY

    monkeypatch.setitem(cli.FLAGS, "amount", cli.Flag("--amount"))
    monkeypatch.setitem(page.CONTROLS, ("toy-invert", "amount"), page.Control("Toy amount"))
    monkeypatch.setitem(method.TAGS, "amount", "amount {value}")
    (tmp_path / "toy_protection.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_protection")
    app_before = sys.modules.get("app")  # the app a test imports now is built with the toy in it
    yield module.Invert
    REGISTRY.pop("toy-invert", None)
    sys.modules.pop("toy_protection", None)
    if app_before is None:  # later tests import the app again, without the toy
        sys.modules.pop("app", None)


def test_a_new_protection_reaches_the_cli_the_page_and_the_bench(toy, tmp_path, capsys):
    import app
    from faceshield import page
    from faceshield.bench import label, run_bench
    from faceshield.cli import build_parser, main
    from faceshield.protections import build
    from faceshield.settings import InputError

    # the CLI: listed in --help with its own flag; protects with it and with --set
    protect_help = build_parser()._subparsers._group_actions[0].choices["protect"].format_help()
    assert "toy-invert" in protect_help and "--amount" in protect_help
    assert "toy-invert: share of the inversion (0 to 1; default 0.5)" in " ".join(protect_help.split())
    assert "--quirk" not in protect_help  # not listed in cli.FLAGS: reached with --set
    src = tmp_path / "in" / "grey.png"
    src.parent.mkdir()
    Image.new("RGB", (40, 30), (100, 100, 100)).save(src)
    out = tmp_path / "out"
    args = ["--threads", "1", "protect", str(src), "-o", str(out), "--method", "toy-invert"]
    assert main([*args, "--amount", "1", "--set", "quirk=4"]) == 0
    assert Image.open(out / "grey.png").getpixel((0, 0)) == (155, 155, 155)
    assert main([*args, "--force", "--set", "quirks=4"]) == 2  # not one of its options
    assert "unknown option(s) quirks for toy-invert" in capsys.readouterr().err
    assert main([*args, "--force", "--steps", "5"]) == 2  # another protection's option, given explicitly

    # the page: in the dropdown, with its control; its input is checked against the declaration
    config = app.create_demo().get_config_file()
    dropdown = next(c for c in config["components"] if c["props"].get("label") == "Protection")
    assert ["Toy: invert the photo", "toy-invert"] in [list(choice) for choice in dropdown["props"]["choices"]]
    slider = next(c for c in config["components"] if c["props"].get("label") == "Toy amount")
    assert slider["type"] == "slider" and (slider["props"]["minimum"], slider["props"]["maximum"]) == (0, 1)
    arguments = page.option_arguments()
    assert "amount" in arguments and "quirk" not in arguments  # an option the page does not list: off the page
    upload = {"path": str(src)}
    with pytest.raises(InputError, match="Toy amount must be between 0 and 1"):
        page.ProtectRequest.parse({"image_path": upload, "method": "toy-invert", "amount": 2})
    request = page.ProtectRequest.parse({"image_path": upload, "method": "toy-invert", "amount": 0.25})
    assert request.options == {"amount": 0.25}
    assert dict(zip(arguments, app.method_controls("toy-invert")))["amount"]["visible"]
    assert not dict(zip(arguments, app.method_controls("blur")))["amount"]["visible"]

    # the bench: a row labelled from the declaration, the shared knobs of other methods dropped
    assert label("toy-invert", {"eps": 8, "amount": 0.25, "steps": 10}) == "toy-invert [amount 0.25]"
    assert label("toy-invert", {"quirk": 4}) == "toy-invert [quirk 4]"  # not in TAGS: "name value"
    assert build("toy-invert", eps=8, amount=0.25).amount == 0.25
    data = tmp_path / "faces" / "detection"
    data.mkdir(parents=True)
    Image.new("RGB", (64, 48), (120, 110, 100)).save(data / "plain.jpg")
    (data / "boxes.json").write_text(json.dumps({"plain.jpg": []}))
    results = run_bench(tmp_path / "faces", ["toy-invert"], {"amount": 0.25}, out_dir=tmp_path / "bench", limit=1)
    assert "toy-invert [amount 0.25]" in results["methods"]


def test_options_are_declared_and_checked():
    from faceshield.protections import REGISTRY, TIPIM, build, check_options

    with pytest.raises(TypeError, match="tip-im takes no option"):
        TIPIM(shrink=True)  # detector-pgd's option: the class takes only its own
    with pytest.raises(TypeError, match="unknown option"):
        build("tip-im", smoothnes=0.1)  # no protection's option
    assert build("blur", eps=8, steps=5).strength == 8  # the shared knobs of other methods: dropped
    with pytest.raises(ValueError, match="between 0 and 0.99"):
        TIPIM(model_dropout=2)
    with pytest.raises(ValueError, match="among: gradient, transfer, uap"):
        build("apf", parts=("gradient", "magic"))
    check_options(["detector-pgd", "tip-im"], {"smoothing": 0.1, "shrink": False})
    with pytest.raises(TypeError):
        check_options(["detector-pgd"], {"smoothing": 0.1})
    for key, cls in REGISTRY.items():
        assert cls.key == key and cls.title and cls.summary, key
        assert "Args:" in cls.__doc__ or not cls.params, key  # the docstring lists the declared options
        cls()  # every declared default is valid


def test_summaries_say_what_was_done():
    """describe(): the budget really used (L2 as L2, not L-inf), the faces protected, the steps."""
    from faceshield.models import Detections
    from faceshield.protections import TIPIM, GeneratorProtection, build
    from faceshield.protections.base import Budget, ProtectionResult

    face = Detections(np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32))
    pixels = np.zeros((64, 64, 3), np.uint8)
    after = pixels.copy()
    after[20:30, 20:30] = 2
    mask = np.zeros((64, 64), np.float32)
    mask[10:50, 10:50] = 1
    budget = Budget.measure("l2", 3, pixels, after, mask)
    assert budget.norm == "l2" and budget.used == pytest.approx(2 * np.sqrt(100 / 1600))
    result = ProtectionResult(after, face, 1.0, {"attacked": ["FaceNet"]}, steps=12, success=True, budget=budget)
    text = TIPIM(norm="l2", eps=3).describe(result)
    assert "L2 (RMS over the faces) 3/255" in text and "L-inf" not in text
    assert "**1 face(s) protected** with `tip-im`" in text and "12 steps against FaceNet: goal reached" in text
    assert "steps" not in result.info  # typed fields live on the result only
    generated = ProtectionResult(after, face, 0.2, budget=Budget.measure("linf", 8, pixels, after))
    assert "**1 face(s) protected** with `generator` at L-inf 8/255 (used 2)" in GeneratorProtection().describe(
        generated
    )
    whole = ProtectionResult(after, Detections.empty(), 0.2, budget=Budget.measure("linf", 8, pixels, after))
    assert "**The whole photo protected**" in GeneratorProtection().describe(whole)
    blur = build("blur", strength=4)
    assert "at strength 4" in blur.describe(ProtectionResult(after, face, 0.1))


def test_one_face_box_policy_tensor_convention_and_weights_loader():
    """boxes.grow covers the grown box (outwards, clipped), boxes.largest picks by area; photos go
    to (1, 3, H, W) tensors and back unchanged; every trained network loads through one reader."""
    from faceshield import weights
    from faceshield.boxes import face_region, grow, largest
    from faceshield.protections.apf import load_apf
    from faceshield.protections.ddm import load_codecs
    from faceshield.tensors import to_tensor, to_uint8

    assert grow((10.5, 20.5, 30.5, 40.5), 0.1, (100, 100)) == (18, 43, 8, 33)
    assert grow((0, 0, 50, 50), 1.0, (60, 80, 3)) == (0, 60, 0, 80)
    assert face_region((10.5, 20.5, 30.5, 40.5), (100, 100), 0.1) == grow((10.5, 20.5, 30.5, 40.5), 0.1, (100, 100))
    assert face_region([[10, 10, 20, 20], [50, 40, 60, 60]], (100, 100), 0.5) == (5, 70, 5, 65)  # every box, grown
    assert face_region(np.zeros((0, 4)), (30, 40, 3), 0.4) == (0, 30, 0, 40)  # no face: the whole image
    assert largest([[0, 0, 10, 10], [0, 0, 30, 5], [5, 5, 25, 25]]) == 2
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    x = to_tensor(pixels)
    assert x.shape == (1, 3, 7, 5) and float(x.max()) <= 255
    assert np.array_equal(to_uint8(x), pixels) and np.array_equal(
        to_uint8(to_tensor(pixels, unit=True), unit=True), pixels
    )
    trained = weights.load_trained(None, "ddm.safetensors")
    assert trained.part("encrypt") and all(not k.startswith("encrypt.") for k in trained.part("encrypt"))
    encrypt, _ = load_codecs()
    apf = load_apf()
    for net in (encrypt, apf.transfer):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert apf.uap.shape[0] == 3 and apf.probes


def test_the_stopping_rule_of_the_iterative_attacks():
    """EarlyStop: judged every check_every steps (and at a zero loss for detector-pgd's rule);
    once the judge holds, extra_steps more, then success; a zero loss alone also stops
    detector-pgd's rule (no gradient left), while TIP-IM's judges only at a zero loss."""
    from faceshield.protections.base import EarlyStop

    def run(stop, losses, judge):
        for step, loss in enumerate(losses):
            if stop(step, loss, judge):
                return step
        return None

    pgd = EarlyStop(4, 2, zero_stops=True)
    assert run(pgd, [5, 4, 3, 2, 1, 1, 1, 1], lambda: True) == 5 and pgd.success  # judged at step 3, +2
    pgd = EarlyStop(4, 2, zero_stops=True)
    assert run(pgd, [5, 0, 1], lambda: False) == 1 and not pgd.success and not pgd.reached
    tip = EarlyStop(5, 3, zero_required=True)
    assert run(tip, [1] * 10, lambda: True) is None and not tip.reached  # never zero: never judged
    tip = EarlyStop(5, 3, zero_required=True)
    assert run(tip, [0] * 12, lambda: True) == 7 and tip.success
    # patience: a plateau (the last 4 steps' best under 5% below the best before) ends a rung
    flat = EarlyStop(100, 2, zero_stops=True, patience=4)
    assert run(flat, [10, 9, 8, 8, 7.9, 7.8, 8, 7.7, 7.7], lambda: False) == 7 and flat.stalled and not flat.success
    falling = EarlyStop(100, 2, zero_stops=True, patience=4)
    assert run(falling, [10 * 0.9**k for k in range(20)], lambda: False) is None and not falling.stalled


@pytest.mark.parametrize("method", ["apf", "tip-im"])
def test_an_identity_protection_leaves_a_faceless_photo_unchanged_and_says_so(method):
    from faceshield.protections import build

    blank = np.full((64, 80, 3), 120, np.uint8)
    result = build(method)(blank)
    assert np.array_equal(result.pixels, blank) and result.pixels is not blank
    assert result.faces_protected == 0 and result.budget.used == 0
    assert result.notices == ["No face found: there is no identity to hide; the photo was left unchanged."]


@pytest.mark.parametrize(
    "key, options",
    [
        ("tip-im", {"steps": 3, "attack": ("sface", "dlib-resnet-torch"), "check_every": 100}),
        ("detector-pgd", {"steps": 3, "rungs": 0}),
    ],
)
def test_same_seed_same_output(photos, key, options):
    """The iterative attacks are reproducible: the same photo, options and seed give the same
    protected photo (a refactoring that changes an output shows here)."""
    from faceshield.protections import build

    pixels = photos["astronaut"]
    first, second = build(key, **options)(pixels), build(key, **options)(pixels)
    assert np.array_equal(first.pixels, second.pixels) and not np.array_equal(first.pixels, pixels)
    if key == "tip-im":  # its randomness (alignments, recognisers drawn per step) follows the seed
        assert not np.array_equal(build(key, **options, seed=1)(pixels).pixels, first.pixels)
