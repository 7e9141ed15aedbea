"""The `orch` command: parse arguments, call one function of the core, print, exit.

User errors (``OrchError``) print a clean message and exit with their code (2); tracebacks are
shown only with ORCH_DEBUG=1. Anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from orchestrator.cluster.auth import prime_auth_env
from orchestrator.state.store import orch_home

prime_auth_env(orch_home())  # before anything imports Ray: Ray reads its auth settings at import

from orchestrator import __version__  # noqa: E402
from orchestrator.cli import (checkpoint_commands, cluster_commands, controller_command, cost_commands,
                              dashboard_command, data_commands,
                              job_commands, k8s_commands, node_commands, simulate_command, spec_commands)
from orchestrator.errors import OrchError

COMMAND_MODULES = [spec_commands, job_commands, cost_commands, node_commands, cluster_commands, checkpoint_commands,
                   data_commands, simulate_command, dashboard_command, k8s_commands, controller_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch",
        description="Plan, run and account for large pipeline- and expert-parallel pretraining jobs.",
        epilog="Start with: orch validate jobs/v3_pretrain.yaml; orch plan jobs/v3_pretrain.yaml",
    )
    parser.add_argument("--version", action="version", version=f"orch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OrchError as err:
        if os.environ.get("ORCH_DEBUG") == "1":
            traceback.print_exc()
        print(f"orch: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `orch k8s render ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
