"""`orch version` and `orch completion bash|zsh`: about the tool itself.

Completion scripts are generated from the parser itself (commands, their flags and the choices of
flags such as ``-o``), so they cannot drift from the CLI and need nothing installed or downloaded:

    source <(orch completion bash)        # or, for zsh:  source <(orch completion zsh)
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from orchestrator import __version__
from orchestrator.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="orch's version, Python's and the key libraries'")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_version)
    p = sub.add_parser("completion", help="print a shell completion script: source <(orch completion bash)")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd_completion)


def versions() -> dict:
    found = {"orch": __version__, "python": platform.python_version()}
    for package in ("ray", "torch", "deepspeed", "pydantic"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def cmd_version(args: argparse.Namespace) -> int:
    found = versions()
    if args.json:
        print_json(found)
    else:
        print(
            f"orch {found['orch']} (python {found['python']}; "
            + ", ".join(f"{k} {v or 'not installed'}" for k, v in found.items() if k not in ("orch", "python"))
            + ")"
        )
    return 0


def command_words(parser: argparse.ArgumentParser) -> dict[str, dict[str, list[str]]]:
    """{command: {flag or '': [values]}}: each command's flags, and the choices a flag takes."""
    words: dict[str, dict[str, list[str]]] = {}
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            flags: dict[str, list[str]] = {"": []}
            for a in sub._actions:
                if a.help == argparse.SUPPRESS:
                    continue
                if not a.option_strings and a.choices:
                    flags[""] += list(a.choices)
                for option in a.option_strings:
                    flags[option] = [str(c) for c in a.choices] if a.choices else []
            words[name] = flags
    return words


BASH = """# orch completion for bash: source <(orch completion bash)
_orch() {
    local cur prev cmd
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd="${COMP_WORDS[1]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%(commands)s" -- "$cur"))
        return
    fi
    case "$cmd $prev" in
%(values)s
    esac
    case "$cmd" in
%(flags)s
    esac
    COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o default -F _orch orch
"""


def bash_script(parser: argparse.ArgumentParser) -> str:
    words = command_words(parser)
    values, flags = [], []
    for command, options in sorted(words.items()):
        for flag, choices in sorted(options.items()):
            if flag and choices:
                values.append(
                    f'        "{command} {flag}") COMPREPLY=($(compgen -W "{" ".join(choices)}" -- "$cur")); return;;'
                )
        all_words = " ".join(sorted(f for f in options if f) + options[""])
        when = "" if options[""] else '[[ "$cur" == -* ]] && '  # a file argument otherwise
        flags.append(
            f'        {command}) {when}COMPREPLY=($(compgen -W "{all_words}" -- "$cur")); '
            "[[ ${#COMPREPLY[@]} -gt 0 ]] && return;;"
        )
    return BASH % {"commands": " ".join(sorted(words)), "values": "\n".join(values), "flags": "\n".join(flags)}


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return (
        "# orch completion for zsh: source <(orch completion zsh)\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser)
    )


def cmd_completion(args: argparse.Namespace) -> int:
    parser = args.parser
    sys.stdout.write(bash_script(parser) if args.shell == "bash" else zsh_script(parser))
    return 0
