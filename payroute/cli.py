"""The ``payroute`` command. Each subcommand lives with its stage and is imported only when used.

A stage's CLI module defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("payroute.simulator.cli", "simulate payment history (transactions, attempts, chargebacks)"),
    "train": ("payroute.training.cli", "train, evaluate and register the approval and cost models"),
    "serve": ("payroute.serving.cli", "start the BentoML scoring service"),
    "dispatch": ("payroute.serving.dispatch.cli", "route payments through PSPs with fallback"),
    "demo": ("payroute.serving.dispatch.demo", "run the whole loop against sandbox PSPs"),
    "bench": ("payroute.evaluation.cli", "compare routing policies on simulated traffic"),
    "evaluate": ("payroute.evaluation.ope_cli", "off-policy evaluation of a policy on logged history"),
    "report": ("payroute.reporting.cli", "consolidated operations report (HTML + tables)"),
    "reconcile": ("payroute.reporting.reconcile_cli", "reconcile PSP settlement files with history"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Subcommands whose stage module is installed (stages land one issue at a time)."""
    return {name: spec for name, spec in SUBCOMMANDS.items() if _module_exists(spec[0])}


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payroute", description="ML-driven payment routing.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
