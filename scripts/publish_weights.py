"""Publish FaceShield's own trained weights (weights/*.safetensors) with their model card
(weights/README.md) to a Hugging Face Hub model repo, in one commit.

  python scripts/publish_weights.py --repo you/faceshield-weights --dry-run   # what would be uploaded
  HF_TOKEN=... python scripts/publish_weights.py --repo you/faceshield-weights

After publishing, put the printed commit into weights/hub-pins.json (or faceshield's
HubFile sources) so that the app can serve the same files from the Hub.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def plan(folder: Path = WEIGHTS) -> list[tuple[Path, str]]:
    """(local file, path in the repo): the model card as README.md, then every .safetensors."""
    card = folder / "README.md"
    if not card.is_file():
        raise FileNotFoundError(f"{card} (the model card) is missing")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {folder}")
    return [(card, "README.md")] + [(f, f.name) for f in files]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="Hub model repo id, e.g. you/faceshield-weights")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--folder", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    files = plan(args.folder)
    for local, remote in files:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
        print(
            f"{'would upload' if args.dry_run else 'upload'} {local.name} -> {args.repo}/{remote} "
            f"({local.stat().st_size / 1e6:.2f} MB, sha256 {digest}...)"
        )
    if args.dry_run:
        return 0
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(args.repo, repo_type="model", private=args.private, exist_ok=True)
    info = api.create_commit(
        args.repo,
        [CommitOperationAdd(remote, str(local)) for local, remote in files],
        commit_message="FaceShield weights and model card",
    )
    print(f"published: {info.commit_url}\npin this commit: {info.oid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
