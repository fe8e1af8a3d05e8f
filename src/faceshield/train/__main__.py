"""python -m faceshield.train {generator,ddm,apf} [options]: train and export one of our networks."""

from __future__ import annotations

import argparse
import importlib

TRAINERS = {"generator": "faceshield.train.generator", "ddm": "faceshield.train.ddm", "apf": "faceshield.train.apf"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m faceshield.train", description=__doc__)
    sub = parser.add_subparsers(dest="model", required=True)
    for name, module in TRAINERS.items():
        trainer = importlib.import_module(module)
        trainer.add_arguments(sub.add_parser(name, help=(trainer.__doc__ or "").splitlines()[0]))
    args = parser.parse_args(argv)
    importlib.import_module(TRAINERS[args.model]).main(args)


if __name__ == "__main__":
    main()
