"""Command line: `python -m faceshield protect|bench|bench-docs|models ...`."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from faceshield import settings
from faceshield.protections import REGISTRY


def _method_help() -> str:
    return "methods:\n" + "\n".join(f"  {k:<14} {cls.summary}" for k, cls in REGISTRY.items())


def _method(spec: str) -> str:
    from faceshield.protections import method_key

    try:
        method_key(spec)
    except KeyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return spec


@dataclass(frozen=True)
class Flag:
    """How the CLI shows a declared option: a flag of its own (shared by every protection that
    declares the option) and, for one that takes values, their name in --help."""

    flag: str
    metavar: str = ""


# The options with a flag of their own, by option name; any other declared option is reached
# with --set OPTION=VALUE.
FLAGS: dict[str, Flag] = {
    "eps": Flag("--eps"),
    "steps": Flag("--steps"),
    "strength": Flag("--strength"),
    "whole_image": Flag("--whole-image"),
    "attack": Flag("--attack", "MODEL"),
    "weights_path": Flag("--weights", "FILE"),
    "mode": Flag("--mode"),
    "targets": Flag("--target", "PHOTO"),
    "margin": Flag("--margin"),
    "robust": Flag("--robust"),
    "norm": Flag("--norm"),
    "model_dropout": Flag("--model-dropout"),
    "parts": Flag("--parts"),
    "same_person": Flag("--person-photo", "PHOTO"),
}


def add_protection_options(p) -> None:
    """The protections' options listed in FLAGS as flags (--eps, --steps, --attack, ...; one flag
    per option name, shared by the protections that declare it) and --set for any other
    declared option (protections.spec.Param)."""
    from faceshield.protections import declared

    for name, decls in declared().items():
        if name in FLAGS:
            flag = FLAGS[name]
            p.add_argument(flag.flag, dest=name, default=None, help=_flag_help(decls), **_kind(decls[0][1], flag))
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        type=_setting,
        help="any other option a protection declares, e.g. --set smoothing=0.02 (repeatable; "
        "see the Args of each class under src/faceshield/protections/, or help(faceshield.protections.TIPIM))",
    )


def _kind(param, flag: Flag) -> dict:
    """argparse keywords for a Param's kind."""
    from faceshield.protections.spec import NAMES, PATH, PHOTOS, SUBSET

    if param.kind is bool:
        return {"action": "store_true"}
    if param.kind in (int, float):
        return {"type": param.kind}
    if param.kind in (NAMES, PHOTOS):
        return {"nargs": "+", "metavar": flag.metavar or param.name.upper()}
    if param.kind is SUBSET:
        return {"nargs": "+", "choices": list(param.choices)}
    if param.kind is PATH:
        return {"metavar": flag.metavar or "FILE"}
    return {"choices": list(param.choices)} if param.choices else {}


def _flag_help(decls) -> str:
    """'detector-pgd, tip-im: <help> (1 to 16; default 8); blur: ...': the declarations' own
    words, with the range each accepts."""
    groups: dict[tuple[str, str], list[str]] = {}
    for key, param in decls:
        given = param.default is not None and param.default is not False
        default = f"default {param.describe_value(param.default)}" if given else ""
        extra = "; ".join(part for part in (param.range_text(), default) if part)
        groups.setdefault((param.help, extra), []).append(key)
    parts = [f"{', '.join(keys)}: {help}" + (f" ({extra})" if extra else "") for (help, extra), keys in groups.items()]
    return "; ".join(parts).replace("%", "%%")


def protect_options(args) -> dict:
    """CLI arguments -> protection keyword options (only those given): the flags, then --set
    OPTION=VALUE; target photos are loaded."""
    from faceshield.images import load_image
    from faceshield.protections import declared
    from faceshield.protections.spec import PHOTOS

    options = {}
    for name, decls in declared().items():
        value = getattr(args, name, None)
        if value is None or value is False:
            continue
        if decls[0][1].kind is PHOTOS:
            value = [load_image(path).pixels for path in value]
        options[name] = tuple(value) if isinstance(value, list) and decls[0][1].kind is not PHOTOS else value
    options.update(dict(getattr(args, "settings", None) or []))
    return options


def _built(methods: list[str], options: dict):
    """(the protections `methods` built with `options`, None), or (None, the error for the
    user): an option none of them declares, or a value one of them refuses."""
    from faceshield.protections import build, check_options
    from faceshield.settings import InputError

    try:
        check_options(methods, options)
        return [build(method, **options) for method in methods], None
    except (TypeError, InputError) as exc:
        return None, str(exc)


def _setting(text: str) -> tuple[str, object]:
    """--set's OPTION=VALUE (protections.spec.parse_setting)."""
    from faceshield.protections.spec import parse_setting

    try:
        return parse_setting(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_protect(args) -> int:
    from faceshield.engine import check_same_person, make_plan, run_plain
    from faceshield.settings import InputError

    if args.engine != "ray" and (ray_only := [f for f, v in _ray_flags(args).items() if v is not None]):
        print(f"{', '.join(ray_only)}: only with --engine ray", file=sys.stderr)
        return 2
    built, error = _built([args.method], protect_options(args))
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    (protection,) = built
    try:
        if args.group_same_person:
            check_same_person(type(protection))
        plan = make_plan(args.inputs, Path(args.output), args.manifest, args.force, args.group_same_person)
        if args.engine == "ray":
            from faceshield.ray_engine import run_ray

            summary = run_ray(
                plan,
                args.method,
                protection,
                address=args.address,
                workers=args.workers,
                cpus_per_worker=args.cpus_per_worker or 1.0,
                gpus_per_worker=args.gpus_per_worker or 0.0,
            )
        else:
            summary = run_plain(plan, args.method, protection)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    if summary.interrupted:
        return 130
    return 1 if summary.failed and not (summary.protected or summary.kept) else 0


def _ray_flags(args) -> dict:
    return {
        "--address": args.address,
        "--workers": args.workers,
        "--cpus-per-worker": args.cpus_per_worker,
        "--gpus-per-worker": args.gpus_per_worker,
    }


def cmd_bench_scale(args) -> int:
    from faceshield.ray_engine import bench_scale, scale_table
    from faceshield.settings import InputError

    built, error = _built([args.method], protect_options(args))
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    try:
        results = bench_scale(
            Path(args.source),
            args.method,
            built[0],
            args.workers,
            address=args.address,
            cpus_per_worker=args.cpus_per_worker,
            limit=args.limit,
        )
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"python -m faceshield {shlex.join(args.argv)}")
    print(scale_table(results))
    return 0


def cmd_speed(args) -> int:
    """Time one protection on one photo: a warm-up call (loads the weights), then --runs timed
    calls; prints the median and fastest wall time of the call (face finding included)."""
    import statistics
    import time

    import numpy as np
    from PIL import Image

    from faceshield.images import ImageError, load_image

    built, error = _built([args.method], protect_options(args))
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    try:
        pixels = load_image(args.photo).pixels
    except (ImageError, OSError) as exc:
        print(f"{args.photo}: {exc}", file=sys.stderr)
        return 2
    if args.size:
        h, w = pixels.shape[:2]
        k = args.size / max(h, w)
        pixels = np.asarray(Image.fromarray(pixels).resize((round(w * k), round(h * k)), Image.Resampling.LANCZOS))
    protection = built[0]
    result = protection(pixels)  # warm-up: weights, the detectors' first call
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = protection(pixels)
        times.append(time.perf_counter() - start)
    h, w = pixels.shape[:2]
    print(f"python -m faceshield {shlex.join(args.argv)}")
    print(
        f"{args.method} on {w}x{h} px, {len(result.faces)} face(s), {settings.TORCH_THREADS} torch thread(s): "
        f"median {statistics.median(times):.3f} s, fastest {min(times):.3f} s over {args.runs} runs "
        "(after a warm-up call; face finding included)"
    )
    return 0


def cmd_bench(args) -> int:
    options = protect_options(args)
    if (error := _built(args.methods, options)[1]) is not None:
        print(error, file=sys.stderr)
        return 2
    from faceshield.bench.docs import checkout, record

    started = checkout() if args.record else ""
    kind, results = _run_bench(args, options)
    if args.record:
        command = "python -m faceshield " + shlex.join(args.argv)
        record(kind, results, Path(args.record), command, args.note, commit=started)
        print(f"recorded in {args.record}; `python -m faceshield bench-docs` renders docs/benchmarks.md")
    return 0


def _run_bench(args, options: dict) -> tuple[str, dict]:
    """(bench kind, results) of the experiment the flags ask for."""
    from faceshield.bench import run_bench, run_identity_bench, run_transfer_bench, run_zoo_bench

    if args.zoo:
        return "zoo", run_zoo_bench(Path(args.dataset), out_dir=Path(args.out) / "zoo")
    if args.transfer:
        return "transfer", run_transfer_bench(
            Path(args.dataset),
            args.methods,
            options,
            out_dir=Path(args.out) / "transfer",
            limit=args.limit,
        )
    if args.pairs:
        from faceshield.bench.identity import run_identity_sweep

        pairs = {"limit": args.limit, "per_person": args.per_person, "same_person": args.person_sets}
        if args.sizes or args.loo or args.budgets:
            sweep = {"sizes": args.sizes, "loo": args.loo, "budgets": args.budgets}
            out = Path(args.out) / "identity-sweep"
            return "sweep", run_identity_sweep(Path(args.dataset), args.methods, options, out, **sweep, **pairs)
        out = Path(args.out) / "identity"
        return "identity", run_identity_bench(
            Path(args.dataset), args.methods, options, out, adaptive=args.adaptive, **pairs
        )
    return "detection", run_bench(
        Path(args.dataset),
        args.methods,
        options,
        out_dir=Path(args.out),
        slow=args.slow,
        limit=args.limit,
        annotated_only=not args.all_photos,
    )


def cmd_bench_docs(args) -> int:
    from faceshield.bench.docs import main

    return main(Path(args.results), Path(args.output), check=args.check)


def cmd_models(args) -> int:
    from faceshield import models

    for row in models.status():
        state = "available" if row["available"] else "UNAVAILABLE"
        print(f"{row['key']:<12} {row['kind']:<10} {state:<11} {row['name']:<18} {row['detail']}  [{row['licence']}]")
    return 0


def add_ray_options(p, defaults: bool = False) -> None:
    """--address, --workers, --cpus-per-worker, --gpus-per-worker (protect: only with --engine ray)."""
    p.add_argument("--address", help="a running Ray cluster to join (default: start Ray on this machine)")
    if defaults:
        p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (default 1 2)")
    else:
        p.add_argument("--workers", type=int, help="Ray workers (default: as many as the cluster's CPUs hold)")
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0 if defaults else None,
        help="CPUs each worker reserves, also its torch threads (default 1)",
    )
    if not defaults:
        p.add_argument("--gpus-per-worker", type=float, help="GPUs each worker reserves (default 0; e.g. 1 or 0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceshield",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_method_help(),
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: FACESHIELD_THREADS or 2)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "protect",
        help="protect photos and write PNGs",
        epilog=_method_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (PNG, same names)")
    p.add_argument("--method", default="detector-pgd", type=_method)
    add_protection_options(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="protect again photos whose output already exists (default: keep them, so an interrupted batch resumes)",
    )
    p.add_argument(
        "--same-person",
        dest="group_same_person",
        action="store_true",
        help="each input folder's photos are one person (files given by themselves: together): each photo "
        "is protected with the others as same_person (identity protections that declare it)",
    )
    p.add_argument(
        "--manifest",
        metavar="CSV",
        help="the run's record, one row per photo (default: OUTPUT/faceshield-manifest.csv); resumes from it",
    )
    p.add_argument(
        "--engine",
        choices=["plain", "ray"],
        default="plain",
        help="plain: this process, one photo after another (default); ray: Ray Data workers on this machine, "
        "or on a cluster with --address (pip install -r requirements-ray.txt; see docs/scale.md)",
    )
    add_ray_options(p)
    p.set_defaults(func=cmd_protect)

    s = sub.add_parser(
        "bench-scale",
        help="throughput of the Ray engine on a folder with 1, 2, ... workers, and the speed-up",
    )
    s.add_argument("source", help="a folder of photos")
    s.add_argument("--method", default="blur", type=_method)
    add_protection_options(s)
    s.add_argument("--limit", type=int, help="only the first N photos")
    add_ray_options(s, defaults=True)
    s.set_defaults(func=cmd_bench_scale)

    t = sub.add_parser("speed", help="time one protection on one photo (median of a few warm runs)")
    t.add_argument("photo")
    t.add_argument("--method", default="generator", type=_method)
    add_protection_options(t)
    t.add_argument("--size", type=int, help="resize the photo first so its longer side is this many px (e.g. 1024)")
    t.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up (default 5)")
    t.set_defaults(func=cmd_speed)

    b = sub.add_parser("bench", help="benchmark methods on a folder laid out like shared/data/faces")
    b.add_argument("dataset")
    b.add_argument(
        "--methods",
        nargs="+",
        default=["detector-pgd"],
        type=_method,
        help="method names, optionally @strength for obfuscations (blur@4 blur@16)",
    )
    add_protection_options(b)
    b.add_argument("--out", default="bench_results", help="folder for the markdown and JSON results")
    b.add_argument("--slow", action="store_true", help="also judge with slow detectors (dlib CNN)")
    b.add_argument("--limit", type=int, help="only the first N photos or pairs (quick look)")
    b.add_argument(
        "--all-photos",
        action="store_true",
        help="also photos without boxes.json ground truth (judged against clean detections)",
    )
    b.add_argument(
        "--pairs",
        action="store_true",
        help="identity benchmark: protection success rate on pairs.csv's same-person pairs",
    )
    b.add_argument(
        "--adaptive",
        action="store_true",
        help="with --pairs: protect every photo and judge the attacker who knows the protection "
        "(protected-vs-protected verification AUC and rank-1 identification)",
    )
    b.add_argument(
        "--per-person",
        type=int,
        metavar="K",
        help="with --pairs: at most K same-person pairs per person, each with its own protected photo "
        "(a quick run that still sees every person)",
    )
    b.add_argument(
        "--same-person",
        action="store_true",
        dest="person_sets",
        help="with --pairs: protect each photo knowing the person's other photos in the dataset (never the "
        "ones it is judged against), as a user protecting their own album would",
    )
    b.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        metavar="PX",
        help="with --pairs: one run per size, the protected photos resized first so their longer side is PX "
        "(e.g. 160 320 640 1280); one table, black-box first",
    )
    b.add_argument(
        "--budgets",
        nargs="+",
        type=float,
        metavar="EPS",
        help="with --pairs: one run per budget (e.g. 4 6 8 10): black-box PSR against PSNR, a curve as a table",
    )
    b.add_argument(
        "--loo",
        action="store_true",
        help="with --pairs: leave one family out: one run per recogniser the method attacks by default, "
        "attacking all the others; one table with each held-out family's black-box PSR",
    )
    b.add_argument(
        "--transfer",
        action="store_true",
        help="detector transfer: the methods side by side (e.g. detector-pgd generator "
        "detector-pgd:start=generator) and the noise control on the annotated photos and the portraits, judged "
        "by every detector (white-box = attacked, black-box = never attacked)",
    )
    b.add_argument(
        "--zoo",
        action="store_true",
        help="model-zoo benchmark: verification accuracy/AUC, detector recall/AP, timings (no protection)",
    )
    b.add_argument(
        "--record",
        metavar="FILE",
        help="also save the results with this command, date and commit (docs/results/NAME.json: "
        "`bench-docs` renders docs/benchmarks.md from them)",
    )
    b.add_argument("--note", help="with --record: a remark printed under the table (e.g. 'busy: ...')")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("bench-docs", help="render docs/benchmarks.md from the recorded bench results")
    d.add_argument("results", nargs="?", default="docs/results", help="folder of recorded results (*.json)")
    d.add_argument("-o", "--output", default="docs/benchmarks.md")
    d.add_argument("--check", action="store_true", help="only say whether the page is up to date (exit 1 if not)")
    d.set_defaults(func=cmd_bench_docs)

    m = sub.add_parser("models", help="list the model registry and what is available here")
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for --record
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.threads:
        settings.TORCH_THREADS = args.threads
    settings.apply_threads()
    return args.func(args)
