"""Pin the Hub-only models of weights/hub-pins.json to the current commit of their repos.

Run online, review the diff, commit it:  python scripts/pin_hub.py [--check]
Each repo's current commit is read with huggingface_hub's model_info; the pinned file must be
in that commit. --check only reports (exit status 1 when something is unpinned or missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PINS = Path(__file__).resolve().parents[1] / "weights" / "hub-pins.json"


def main(argv=None) -> int:
    from huggingface_hub import HfApi

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report only, change nothing")
    args = parser.parse_args(argv)
    pins = json.loads(PINS.read_text())
    api, problems = HfApi(), 0
    for key, pin in pins.items():
        if key.startswith("_"):
            continue
        info = api.model_info(pin["repo_id"], files_metadata=False)
        files = {s.rfilename for s in info.siblings or []}
        if pin["filename"] not in files:
            print(f"{key}: {pin['filename']} is not in {pin['repo_id']}@{info.sha}")
            problems += 1
            continue
        state = "pinned" if pin.get("revision") == info.sha else f"{pin.get('revision')} -> {info.sha}"
        print(f"{key}: {pin['repo_id']}/{pin['filename']} {state}")
        if not args.check:
            pin["revision"] = info.sha
        elif pin.get("revision") != info.sha:
            problems += 1
    if not args.check:
        PINS.write_text(json.dumps(pins, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
