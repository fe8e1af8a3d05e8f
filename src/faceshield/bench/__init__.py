"""Benchmark: protect the photos of a dataset with each method and judge them with every model.

Dataset layout (as shared/data/faces): detection/*.jpg with detection/boxes.json ground truth
for some of them, identities/<person>/<n>.jpg and pairs.csv. Each run prints a markdown table
and writes results.md and results.json to its output folder.

  data.py       dataset readers: detection photos, pairs, portraits
  method.py     a row's protection and label
  runner.py     the runners' skeleton: protect each photo, time it, measure the change, summarise
  views.py      what a platform or an attacker does to a published photo
  detection.py  run_bench: detector recall/AP before and after
  identity.py   run_identity_bench: protection success rate, attacker who knows the protection
  zoo.py        run_zoo_bench: the models on clean photos, timings
  transfer.py   run_transfer_bench: a method and its control, white-box vs black-box detectors
  report.py     the tables, from a results dict
  docs.py       --record and `bench-docs`: docs/benchmarks.md rendered from docs/results/
"""

from faceshield.bench.data import pairs_per_person
from faceshield.bench.detection import run_bench
from faceshield.bench.identity import run_identity_bench
from faceshield.bench.method import label
from faceshield.bench.report import format_identity_table, format_table, format_transfer_table, format_zoo_table
from faceshield.bench.transfer import run_transfer_bench
from faceshield.bench.views import ATTACKER_VIEWS
from faceshield.bench.zoo import run_zoo_bench

__all__ = [
    "ATTACKER_VIEWS",
    "format_identity_table",
    "format_table",
    "format_transfer_table",
    "format_zoo_table",
    "label",
    "pairs_per_person",
    "run_bench",
    "run_identity_bench",
    "run_transfer_bench",
    "run_zoo_bench",
]
