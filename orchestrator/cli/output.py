"""Output conventions every listing command shares: ``-o table|wide|json|yaml`` (``--json`` kept as
``-o json``), aligned tables, and ``--watch``.

Machine formats print the same dictionaries the dashboard's API serves; ``wide`` adds columns a
terminal of 80 characters has no room for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import yaml

FORMATS = ("table", "wide", "json", "yaml")


def add_output_arguments(parser: argparse.ArgumentParser, watch: str | None = None) -> None:
    """``-o``/``--output`` and ``--json``; with ``watch`` (its help text) also ``--watch``/``-w``."""
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default="table", help="table (default), wide (more columns), json or yaml"
    )
    parser.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")
    if watch:
        parser.add_argument("-w", "--watch", action="store_true", help=watch)
        parser.add_argument(
            "--interval",
            type=float,
            default=2.0,
            metavar="S",
            help="seconds between refreshes with --watch (default: 2)",
        )


def machine(args: argparse.Namespace) -> bool:
    return args.output in ("json", "yaml")


def emit(args: argparse.Namespace, data: object) -> None:
    """Print ``data`` as JSON or YAML (``-o json|yaml``)."""
    if args.output == "yaml":
        text = yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False)
        sys.stdout.write(text)
    else:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    sys.stdout.flush()


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def watch(args: argparse.Namespace, render: Callable[[], tuple[str, bool]]) -> int:
    """Print ``render()``'s text now and, with ``--watch``, again whenever it changes, until it says it
    is done (its second value) or Ctrl-C. Each change is printed whole, below the last (like
    ``kubectl get -w``), so the history stays in the scrollback and in logs."""
    last = None
    try:
        while True:
            text, done = render()
            if text != last:
                if last is not None:
                    print()
                print(text, flush=True)
                last = text
            if done or not getattr(args, "watch", False):
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
