"""``seqviz summary FILE``: step count, loss and perplexity figures (every line read once,
so that a broken line is never counted); exit status 1 when lines were skipped."""

from __future__ import annotations

import argparse
import json

from .main import existing_file, report_problems
from ..storage.jsonl import TrainingDataReader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    path = existing_file(args.file)
    reader = TrainingDataReader(path)
    summary = reader.get_summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(map(len, summary))
        for key, value in summary.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return report_problems(args, path, reader.problems)
