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
from orchestrator.paths import orch_home

prime_auth_env(orch_home())  # before anything imports Ray: Ray reads its auth settings at import

from orchestrator import __version__  # noqa: E402
from orchestrator.cli import (  # noqa: E402
    checkpoint_commands,
    cluster_commands,
    controller_command,
    cost_commands,
    dashboard_command,
    data_commands,
    forecast_command,
    job_commands,
    k8s_commands,
    log_commands,
    meta_commands,
    node_commands,
    simulate_command,
    spec_commands,
    state_commands,
)
from orchestrator.cli.config import apply_config  # noqa: E402
from orchestrator.errors import OrchError  # noqa: E402

COMMAND_MODULES = [
    spec_commands,
    job_commands,
    log_commands,
    cost_commands,
    forecast_command,
    node_commands,
    cluster_commands,
    checkpoint_commands,
    data_commands,
    simulate_command,
    dashboard_command,
    k8s_commands,
    controller_command,
    state_commands,
    meta_commands,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch",
        description="Plan, run and account for large pipeline- and expert-parallel pretraining jobs.",
        epilog="Start with: orch plan jobs/v3_pretrain.yaml (the full-scale layout and cost), then "
        "orch validate jobs/v3_pretrain.yaml -p local and orch submit jobs/v3_pretrain.yaml -p local. "
        "Defaults for --profile, --address and the state URL can live in ORCH_HOME/config.yaml "
        "(ORCH_HOME defaults to ~/.orch). Shell completion: source <(orch completion bash).",
    )
    parser.add_argument("--version", action="version", version=f"orch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    for command in sub.choices.values():
        _show_defaults(command)
    return parser


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that states each option's default (ports, intervals, limits) unless its text already does."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, [], argparse.SUPPRESS)
            and "default" not in text
            and not isinstance(action, argparse._StoreConstAction)
        ):
            text += " (default: %(default)s)"
        return text


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser  # `orch completion` reads the commands from it
    try:
        apply_config(args, orch_home())
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
