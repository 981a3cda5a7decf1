"""The `snnkernels` command: `snnkernels study ...` (the study) and `snnkernels info` (build)."""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="snnkernels")
    commands = parser.add_subparsers(dest="command", required=True)
    from .study import cli as study_cli

    study = commands.add_parser("study", help="sparse vs dense surrogate training: robustness "
                                              "and throughput on tabular data")
    study_cli.add_arguments(study)
    commands.add_parser("info", help="how the extension was built")
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    return study_cli.main(args)
