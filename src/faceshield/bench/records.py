"""A recorded bench run (docs/results/*.json): typed, with a versioned schema.

A record is what one `bench --record FILE` run saves: which bench (KINDS), the exact command,
when, at which commit, on how many torch threads, a note, and the runner's results (the dict
its table formatter reads). Records written before the schema had a version are version 1;
a record of a newer schema, or of no known bench, is refused with a message.

Schema 2 (bench/runner.py): every runner names its timing and quality figures alike
(seconds_per_photo, seconds_median, seconds_worst, psnr, psnr_median, psnr_lowest, ssim); a
version-1 transfer record's seconds_max and psnr_min are read as seconds_worst and psnr_lowest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 2  # the version written now; bump it with any change to the fields below
# the runners (bench/zoo.py, detection.py, ...; "sweep": identity.run_identity_sweep)
KINDS = ("zoo", "detection", "transfer", "identity", "sweep")


@dataclass(frozen=True)
class Record:
    """One bench run as recorded."""

    bench: str  # one of KINDS
    command: str  # as typed, for the reader to re-run
    measured: str  # "2026-12-02 01:00 UTC"
    commit: str  # checkout() when the run started ("+changes": src/ differed); "" outside git
    threads: int  # torch threads of the run
    note: str = ""  # a remark printed under the table (e.g. "busy: ...")
    results: dict[str, Any] = field(default_factory=dict)  # the runner's results
    title: str = ""  # a heading of its own (default: the kind and methods)
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "a record") -> Record:
        """The record in `data` (a parsed JSON object), ValueError when it is not one this
        version reads."""
        schema = int(data.get("schema", 1))
        if schema > SCHEMA:
            raise ValueError(f"{where}: schema {schema} is newer than this FaceShield reads ({SCHEMA})")
        if data.get("bench") not in KINDS:
            raise ValueError(f"{where}: records of no known bench kind ({', '.join(KINDS)}): {data.get('bench')}")
        missing = [name for name in ("command", "measured", "threads", "results") if name not in data]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        return cls(
            bench=str(data["bench"]),
            command=str(data["command"]),
            measured=str(data["measured"]),
            commit=str(data.get("commit", "")),
            threads=int(data["threads"]),
            note=str(data.get("note") or ""),
            results=_upgraded(dict(data["results"]), schema),
            title=str(data.get("title", "")),
            schema=SCHEMA,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object saved (the title only when it has one)."""
        out = asdict(self)
        if not self.title:
            del out["title"]
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @property
    def methods(self) -> list[str]:
        """The row labels of the methods it measured (none for the zoo)."""
        return list(self.results.get("methods", {}))


RENAMED_IN_2 = {"seconds_max": "seconds_worst", "psnr_min": "psnr_lowest"}


def _upgraded(results: dict[str, Any], schema: int) -> dict[str, Any]:
    """`results` of a record of `schema`, as this version names them."""
    if schema >= 2:
        return results
    methods = {
        name: {RENAMED_IN_2.get(key, key): value for key, value in res.items()} if isinstance(res, dict) else res
        for name, res in results.get("methods", {}).items()
    }
    return {**results, "methods": methods} if "methods" in results else results


def load(path: Path) -> Record:
    """The record saved at `path` (ValueError when it is not one)."""
    return Record.from_json(json.loads(Path(path).read_text()), str(Path(path).name))


def load_all(results_dir: Path) -> dict[str, Record]:
    """{file stem: record} of every *.json in results_dir, by name."""
    return {p.stem: load(p) for p in sorted(Path(results_dir).glob("*.json"))}
