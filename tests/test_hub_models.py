"""Hub-only models, offline: a local Hugging Face cache is built here from randomly
initialised models of the same architecture and format (an ultralytics .pt pickle, a
facenet-pytorch state_dict, an insightface-style ONNX), with a pins file pointing at it.
Without the cache they are "unavailable", with the reason, and nothing else breaks."""

import json

import numpy as np
import pytest
import torch

from faceshield import models
from faceshield.models import hub_models
from faceshield.weights import REPO_WEIGHTS

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _tiny_arcface_onnx(path):
    """An ONNX face-embedding model in insightface's format: (1, 3, 112, 112) -> (1, 512)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.1, (16, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (512, 16)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(512, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["683"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants
    from facenet_pytorch import InceptionResnetV1
    from ultralytics.nn.tasks import DetectionModel

    cache, repo_weights = tmp_path / "hub", tmp_path / "weights"
    repo_weights.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_models, "REPO_WEIGHTS", repo_weights)
    pins = json.loads((REPO_WEIGHTS / "hub-pins.json").read_text())  # the real pins, re-pointed below
    for key, pin in pins.items():
        if key.startswith("_"):
            continue
        pin["revision"] = COMMIT
        snapshot = cache / f"models--{pin['repo_id'].replace('/', '--')}" / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        target = snapshot / pin["filename"]
        if key == "yolo-face":
            torch.save({"model": DetectionModel("yolov8n.yaml", nc=1, verbose=False), "train_args": {}}, target)
        elif key == "facenet-vggface2":
            torch.save(InceptionResnetV1(pretrained=None).state_dict(), target)
        else:
            _tiny_arcface_onnx(target)
    (repo_weights / "hub-pins.json").write_text(json.dumps(pins))
    for key in ("yolo-face", "facenet-vggface2", "arcface-auraface"):  # forget earlier "unavailable" verdicts
        models.forget(key)
    yield pins
    for key in ("yolo-face", "facenet-vggface2", "arcface-auraface"):
        models.forget(key)


def test_unpinned_or_uncached_models_are_unavailable_with_a_reason():
    loaded, missing = models.available(["yolo-face", "facenet-vggface2", "arcface-auraface", "mtcnn"])
    assert "mtcnn" in loaded
    for key in ("yolo-face", "facenet-vggface2", "arcface-auraface"):
        if key not in loaded:  # on a machine with the real pinned cache they may well load
            assert "pinned" in missing[key] or "hub" in missing[key].lower()


def test_hub_models_load_from_a_pinned_local_cache(hub_cache, photos):
    pixels = photos["astronaut"]
    box = models.load("mtcnn").detect(pixels).boxes[0]
    detector = models.load("yolo-face")
    assert detector.detect(pixels).boxes.shape[1] == 4  # random weights: any number of boxes
    for key, dim in (("facenet-vggface2", 512), ("arcface-auraface", 512)):
        rec = models.load(key)
        emb = rec.embed(pixels, box)
        assert emb.shape == (dim,) and abs(np.linalg.norm(emb) - 1) < 1e-4
        x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None].div(255).requires_grad_(True)
        rec.embed_tensor(x, rec.landmarks(pixels, box)).sum().backward()
        assert x.grad.abs().sum() > 0  # white-box: identity masks can attack it


def test_evaluation_uses_hub_models_when_available(hub_cache, photos):
    from faceshield.evaluation import evaluate

    pixels = photos["astronaut"]
    ev = evaluate(pixels, pixels, ["mtcnn", "yolo-face"], ["facenet-vggface2", "arcface-auraface"])
    assert not ev.unavailable
    assert {v.key for v in ev.detectors} == {"mtcnn", "yolo-face"}
    assert all(m.match for r in ev.recognisers for m in r.matches)  # same photo: same person


def test_a_wrong_revision_is_not_served(hub_cache, monkeypatch):
    pins = dict(hub_cache)
    pins["facenet-vggface2"] = dict(pins["facenet-vggface2"], revision="1" * 40)
    (hub_models.REPO_WEIGHTS / "hub-pins.json").write_text(json.dumps(pins))
    with pytest.raises(models.ModelUnavailable):
        models.load("facenet-vggface2")


def test_publish_dry_run_lists_the_model_card_and_weights(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "publish", Path(__file__).parents[1] / "scripts" / "publish_weights.py"
    )
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    (tmp_path / "README.md").write_text("model card")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "generator.safetensors"))
    assert publish.main(["--repo", "someone/faceshield", "--dry-run", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "would upload README.md -> someone/faceshield/README.md" in out
    assert "generator.safetensors -> someone/faceshield/generator.safetensors" in out
    (tmp_path / "README.md").unlink()
    with pytest.raises(FileNotFoundError):
        publish.main(["--repo", "someone/faceshield", "--dry-run", "--folder", str(tmp_path)])
