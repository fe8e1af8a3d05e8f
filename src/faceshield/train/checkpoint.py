"""Checkpoints, resume and the loss log, shared by every trainer.

A run directory holds `last.pt` (models, optimisers, step, RNG states: resuming continues the
same random stream) and `log.jsonl` (one line of losses per logged step).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch


class Run:
    def __init__(self, directory: Path, modules: dict, resume: bool):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.modules = modules  # name -> nn.Module or optimiser
        self.step = 0
        self.started = time.time()
        if resume and (self.dir / "last.pt").is_file():
            state = torch.load(self.dir / "last.pt", weights_only=False)
            for name, module in modules.items():
                module.load_state_dict(state[name])
            self.step = state["step"]
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            random.setstate(state["python_rng"])
            print(f"resumed {self.dir} at step {self.step}")
        elif not resume:
            (self.dir / "log.jsonl").unlink(missing_ok=True)

    def save(self) -> None:
        state = {name: m.state_dict() for name, m in self.modules.items()}
        state.update(
            step=self.step,
            torch_rng=torch.get_rng_state(),
            numpy_rng=np.random.get_state(),
            python_rng=random.getstate(),
        )
        tmp = self.dir / "last.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.dir / "last.pt")  # an interrupted save never corrupts the checkpoint

    def log(self, **values) -> None:
        row = {"step": self.step, "seconds": round(time.time() - self.started, 1)}
        row.update({k: round(float(v.detach() if torch.is_tensor(v) else v), 5) for k, v in values.items()})
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def export_safetensors(module: torch.nn.Module, path: Path, metadata: dict) -> None:
    """Weights for shipping: safetensors, with the architecture and training facts as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in metadata.items()})
    path.chmod(0o644)  # a file to share, not a private checkpoint
