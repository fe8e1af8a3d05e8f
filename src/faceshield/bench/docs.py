"""docs/benchmarks.md, rendered from the bench's own results: never edited by hand.

A bench run with `--record docs/results/NAME.json` saves its results.json there together with
the exact command, the date, the commit and the torch threads (`record`). `python -m faceshield
bench-docs` renders every record of docs/results/ with the bench's table formatters into the
fixed explanatory text of docs/benchmarks.template.md (`render`); `--check` says whether the
page is up to date.
"""

from __future__ import annotations

import datetime
import re
import subprocess
from pathlib import Path

from faceshield.bench.records import KINDS, Record, load_all
from faceshield.bench.report import (
    format_identity_table,
    format_sweep_table,
    format_table,
    format_transfer_table,
    format_zoo_table,
)

RESULTS_DIR = Path("docs/results")
PAGE = Path("docs/benchmarks.md")
TEMPLATE = Path("docs/benchmarks.template.md")  # the fixed text, with a marker where each kind's tables go
MARKER = re.compile(r"^<!-- results: ([a-z]+) -->\n", re.M)

FORMATTERS = dict(
    zip(KINDS, (format_zoo_table, format_table, format_transfer_table, format_identity_table, format_sweep_table))
)


def record(
    kind: str, results: dict, path: Path, command: str, note: str | None = None, commit: str | None = None
) -> Record:
    """Save a bench run's results with what produced them, for the generated page. commit:
    checkout() as it was when the run started (default: now)."""
    import torch

    rec = Record(
        bench=kind,
        command=command,
        measured=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=checkout() if commit is None else commit,
        threads=torch.get_num_threads(),
        note=note or "",
        results=results,
    )
    rec.save(path)
    return rec


def checkout() -> str:
    """The checkout's commit, "+changes" when src/faceshield differs from it; "" outside git."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-uno", "--", ".."], cwd=here, capture_output=True, text=True
        )
    except OSError:
        return ""
    if head.returncode:
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


KIND_TITLES = {
    "zoo": "Every model on the clean photos",
    "detection": "Detection",
    "transfer": "Transfer",
    "identity": "Identity",
    "sweep": "Identity, one row per setting",
}


def _title(rec: Record) -> str:
    """The record's own title, or its kind and methods."""
    if rec.title:
        return rec.title
    kind = KIND_TITLES[rec.bench]
    return f"{kind}: {', '.join(rec.methods)}" if rec.methods else kind


def _section(name: str, rec: Record) -> str:
    how = f"Measured {rec.measured}"
    if rec.commit:
        how += f" at commit {rec.commit}"
    how += f", {rec.threads} torch thread{'s' if rec.threads != 1 else ''}"
    if rec.note:
        how += f"; {rec.note}"
    return "\n".join(
        [
            f"### {_title(rec)}",
            "",
            "```bash",
            rec.command,
            "```",
            "",
            f"{how}. Raw results: [results/{name}.json](results/{name}.json).",
            "",
            FORMATTERS[rec.bench](rec.results).rstrip("\n"),
            "",
        ]
    )


def render(results_dir: Path = RESULTS_DIR, template: Path = TEMPLATE) -> str:
    """The page: the template's fixed text, each `<!-- results: KIND -->` line replaced by that
    kind's records (by file name) rendered with the bench's own table formatter."""
    records = load_all(results_dir)

    def results(match: re.Match) -> str:
        kind = match.group(1)
        if kind not in FORMATTERS:
            raise ValueError(f"{template}: no bench kind '{kind}' (known: {', '.join(FORMATTERS)})")
        mine = [_section(n, r) for n, r in records.items() if r.bench == kind]
        return "\n".join(mine) if mine else "No recorded run yet.\n"

    return MARKER.sub(results, Path(template).read_text())


FRONTIER = Path("docs/identity-frontier.png")
# the runs the plot compares: one protocol (the same pairs, the same black-box judges)
FRONTIER_RECORDS = ("identity-recipe-*", "identity-budgets-*")


def frontier_points(records: dict[str, Record]) -> dict[str, list[tuple[float, float]]]:
    """{run name: [(PSNR median, black-box mean PSR), ...]} from the recorded identity runs and
    budget sweeps named by FRONTIER_RECORDS: the points of the privacy-against-visibility plot.
    A run is named by its record ("recipe two-per-step", "budgets person"), not by its method
    label: the records were made at different defaults, so equal labels can mean other settings;
    a record of several methods names each ("recipe x: noise")."""
    from fnmatch import fnmatch

    points: dict[str, list[tuple[float, float]]] = {}
    for name, rec in sorted(records.items()):
        if not any(fnmatch(name, pattern) for pattern in FRONTIER_RECORDS):
            continue
        runs = [r["results"] for r in rec.results["rows"]] if rec.bench == "sweep" else [rec.results]
        run_name = name.removeprefix("identity-").replace("-", " ", 1)
        for run in runs:
            methods = run.get("methods", {})
            for method, res in methods.items():
                black = [r["psr"] for r in res["recognisers"].values() if not r["white_box"]]
                key = run_name if len(methods) == 1 else f"{run_name}: {method}"
                if black and "psnr_median" in res:
                    points.setdefault(key, []).append((res["psnr_median"], float(sum(black) / len(black))))
    return points


def plot_frontier(records: dict[str, Record], out: Path = FRONTIER) -> Path | None:
    """docs/identity-frontier.png: black-box PSR against PSNR, a point per recorded run, a line
    per budget sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = frontier_points(records)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for method, pts in sorted(points.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=method)
    ax.set_xlabel("PSNR median (dB): higher = less visible")
    ax.set_ylabel("black-box PSR, mean over judges (%)")
    ax.set_title("Identity protection against never-attacked recognisers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


def main(results_dir: Path = RESULTS_DIR, out: Path = PAGE, check: bool = False, template: Path = TEMPLATE) -> int:
    text = render(results_dir, template)
    if check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date with {results_dir}: run `python -m faceshield bench-docs`")
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text)
    records = load_all(results_dir)
    print(f"wrote {out} from {len(records)} records in {results_dir}")
    if plotted := plot_frontier(records, out.parent / FRONTIER.name):
        print(f"wrote {plotted}")
    return 0
