"""Where model files come from, resolved in one place.

Each model names an ordered list of sources. The first that yields a file wins and the choice
is logged: a pinned Hugging Face Hub file (via huggingface_hub's cache), a file in the repo's
weights/ folder, or a file shipped inside an installed package. Offline, Hub sources are tried
cache-only, so nothing waits on a network timeout.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


class WeightsUnavailable(RuntimeError):
    """No source could provide a model file; the message says why for each source."""


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed package, found without importing the package
    (face_recognition_models imports pkg_resources, which recent setuptools lacks)."""

    package: str
    relpath: str

    def fetch(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package '{self.package}' is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from package '{self.package}'")
        return path

    def __str__(self) -> str:
        return f"package {self.package}:{self.relpath}"


@dataclass(frozen=True)
class RepoFile:
    """A file committed in this repository's weights/ folder."""

    name: str

    def fetch(self) -> Path:
        path = REPO_WEIGHTS / self.name
        if not path.is_file():
            raise FileNotFoundError(f"weights/{self.name} is not in this checkout")
        return path

    def __str__(self) -> str:
        return f"weights/{self.name}"


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub repo, pinned to a revision (a commit hash)."""

    repo_id: str
    filename: str
    revision: str

    def fetch(self) -> Path:
        from huggingface_hub import hf_hub_download

        offline = os.getenv("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        return Path(hf_hub_download(self.repo_id, self.filename, revision=self.revision, local_files_only=offline))

    def __str__(self) -> str:
        return f"hub {self.repo_id}/{self.filename}@{self.revision[:8]}"


Source = PackageFile | RepoFile | HubFile


def resolve(*sources: Source) -> Path:
    """The first source that yields a file; WeightsUnavailable listing every failure."""
    failures = []
    for source in sources:
        try:
            path = source.fetch()
        except Exception as exc:  # each source fails in its own way; all are reported
            failures.append(f"{source}: {exc.__class__.__name__}: {exc}".strip())
            continue
        log.info("weights from %s -> %s", source, path)
        return path
    raise WeightsUnavailable("; ".join(failures) or "no source given")


def cached_conversion(cache_path: Path, model, convert, source):
    """`model` (an nn.Module of the right shape) with the weights stored at `cache_path`
    (safetensors), made on first use by `convert()` -> a converted module, with a message:
    the ports read package files once, then start from the cache."""
    from safetensors.torch import load_file, save_file

    cache_path = Path(cache_path)
    if not cache_path.is_file():
        log.warning("converting %s -> %s (once)", source, cache_path)
        converted = convert()
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in converted.state_dict().items()}, str(tmp))
        tmp.replace(cache_path)  # atomic: concurrent processes never read half a file
    model.load_state_dict(load_file(str(cache_path)))
    return model.eval()


@dataclass(frozen=True)
class TrainedFile:
    """A trained network's safetensors file as read: its path, tensors and metadata (str -> str)."""

    path: Path
    tensors: dict
    meta: dict[str, str]

    def part(self, prefix: str) -> dict:
        """The state dict of one network stored under `prefix.` (APF's transfer.*, DDM's encrypt.*)."""
        return {k[len(prefix) + 1 :]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def load_trained(path=None, default: str = "") -> TrainedFile:
    """One of FaceShield's trained networks (generator, APF, DDM): the safetensors file at `path`,
    else weights/<default> (WeightsUnavailable when it is missing)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path or resolve(RepoFile(default)))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return TrainedFile(path, load_file(str(path)), meta)


def frozen(module):
    """`module` in eval mode with its weights' gradients off: a shipped network is only run."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
