"""The Ray engine: the plain engine's plan, per-photo routine, manifest and progress (faceshield.engine),
run by Ray Data on a local Ray started here (the default) or on a running cluster (`address`).

The photos' raw bytes are read as a dataset (`read_binary_files(include_paths=True)`) and decoded
inside the workers, never in the object store; `map_batches` runs a callable class (Worker) on a
fixed pool of actors, each of which builds the protection once, so its models load once per
worker. A worker that dies is restarted and its photo retried (Ray Data's actor pool default:
max_restarts and max_task_retries unlimited). With
same_person a person's photos are one task: the rows are people, and the worker reads its
person's files (Ray Data's groupby would shuffle every photo's bytes through the cluster, and on
a small cluster its shuffle tasks wait for the CPUs the protection workers hold).

Ray is optional: pip install -r requirements-ray.txt.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from faceshield.engine import Photo, Plan, Progress, Protector, Roots, Summary, make_plan, read_file
from faceshield.settings import InputError

RAY_MISSING = "the Ray engine needs Ray, an optional install: pip install -r requirements-ray.txt"


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputError(RAY_MISSING) from exc
    return ray


class Worker:
    """map_batches' callable class: one per actor. Its Protector (the protection and its models)
    is built once; each call protects a batch of photos (rows "bytes", "path") or of people
    (rows "task": a JSON list of [input, output, todo]) and returns their manifest rows as JSON."""

    def __init__(self, cls, options: dict, threads: int, roots: Roots):
        self.protector = Protector(cls, options, threads)
        self.roots = roots

    def __call__(self, batch: dict) -> dict:
        rows = []
        if "task" in batch:
            for text in batch["task"]:
                rows += self.protector.protect_group([Photo(*item) for item in json.loads(text)], read_file)
        else:
            for data, path in zip(batch["bytes"], batch["path"]):
                photo = Photo(str(path), self.roots.output(str(path)))
                rows += self.protector.protect_group([photo], lambda _, data=data: bytes(data))
        return {"row": [json.dumps(row) for row in rows]}


def default_workers(cpus_per_worker: float, gpus_per_worker: float) -> int:
    """As many workers as the cluster's CPUs (and GPUs, when each worker takes some) hold."""
    resources = _ray().cluster_resources()
    workers = int(resources.get("CPU", 1) // cpus_per_worker) if cpus_per_worker else 1
    if gpus_per_worker:
        workers = min(workers, int(resources.get("GPU", 0) // gpus_per_worker))
        if workers == 0:
            raise InputError(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has no GPU")
    return max(1, workers)


def dataset(plan: Plan, protection, workers: int, cpus_per_worker: float, gpus_per_worker: float):
    """The Ray dataset of `plan`'s manifest rows (one column "row", JSON), not yet run."""
    ray = _ray()
    if plan.same_person:
        people = [{"task": json.dumps([[p.input, p.output, p.todo] for p in task])} for task in plan.tasks]
        source = ray.data.from_items(people)
    else:
        # Reading is I/O: with 0 CPUs its tasks never wait for the CPUs the protection workers hold.
        source = ray.data.read_binary_files([task[0].input for task in plan.tasks], include_paths=True, num_cpus=0)
    return source.map_batches(
        Worker,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs={
            "cls": type(protection),
            "options": protection.options(),
            "threads": max(1, int(cpus_per_worker)),
            "roots": plan.roots,
        },
    )


def run_ray(
    plan: Plan,
    method: str,
    protection,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    quiet: bool = False,
) -> Summary:
    """Run `plan` on Ray: a local Ray started for this run unless one is running in this process or
    `address` names a cluster ("auto", "ray://host:10001", ...). workers: the actor pool's size
    (default: what the cluster's CPUs and GPUs hold)."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours says done, failed, rate, time left
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        workers = workers or default_workers(cpus_per_worker, gpus_per_worker)
        progress = Progress(plan, method, protection, quiet)
        try:
            if plan.tasks:
                for row in dataset(plan, protection, workers, cpus_per_worker, gpus_per_worker).iter_rows():
                    progress.add(json.loads(row["row"]))
        except KeyboardInterrupt:
            return progress.close(interrupted=True)
        except Exception:
            progress.close(interrupted=True)
            raise
        return progress.close()
    finally:
        if started:
            ray.shutdown()


def bench_scale(
    source: Path,
    method: str,
    protection,
    worker_counts: list[int],
    address: str | None = None,
    cpus_per_worker: float = 1.0,
    limit: int | None = None,
) -> list[dict]:
    """Protect the photos of `source` (the first `limit`) with 1, 2, ... workers (`worker_counts`),
    each run into a fresh temporary folder on one Ray started once; per run: photos, seconds
    (wall, from submitting to the last photo, workers' start and model loading included),
    photos/s, steady photos/s (from the first finished photo to the last; on a short run it
    swings with how the results come back in bursts), the mean seconds a photo took inside its
    worker, and the workers' capacity (workers / that: photos a second while every worker is
    busy, what a long run approaches; the speed-up is measured on it)."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    results = []
    try:
        for workers in worker_counts:
            with tempfile.TemporaryDirectory(prefix="faceshield-bench-scale-") as out:
                plan = make_plan([str(source)], Path(out), Path(out) / "manifest.csv")
                plan.tasks = plan.tasks[:limit] if limit else plan.tasks
                summary = run_ray(
                    plan, method, protection, workers=workers, cpus_per_worker=cpus_per_worker, quiet=True
                )
            done = summary.protected + summary.failed
            steady_time = summary.seconds - (summary.first_done or 0.0)
            results.append(
                {
                    "workers": workers,
                    "photos": done,
                    "failed": summary.failed,
                    "seconds": summary.seconds,
                    "photos_per_s": summary.rate,
                    "steady_photos_per_s": (done - 1) / steady_time if done > 1 and steady_time > 0 else 0.0,
                    "worker_s_per_photo": sum(summary.worker_seconds) / max(1, len(summary.worker_seconds)),
                }
            )
            per_photo = results[-1]["worker_s_per_photo"]
            results[-1]["capacity_photos_per_s"] = workers / per_photo if per_photo > 0 else 0.0
    finally:
        if started:
            ray.shutdown()
    return results


def scale_table(results: list[dict]) -> str:
    """bench_scale's results as a markdown table, with each run's speed-up over the first."""
    lines = [
        "| workers | photos | failed | wall s | photos/s | steady photos/s | s/photo in a worker "
        "| capacity photos/s | speed-up (capacity) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = results[0]["capacity_photos_per_s"] if results else 0.0
    for r in results:
        ratio = r["capacity_photos_per_s"] / base if base else 0.0
        lines.append(
            f"| {r['workers']} | {r['photos']} | {r['failed']} | {r['seconds']:.1f} | {r['photos_per_s']:.2f} | "
            f"{r['steady_photos_per_s']:.2f} | {r['worker_s_per_photo']:.2f} | {r['capacity_photos_per_s']:.2f} "
            f"| {ratio:.2f}x |"
        )
    return "\n".join(lines)
