"""`hyperinit pull OWNER/NAME [--revision REV] [--out DIR]`: download and check an init."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="download an init from the Hugging Face Hub",
                       description=__doc__)
    p.add_argument("repo", metavar="OWNER/NAME", help="Hub model repo of the init")
    p.add_argument("--revision", metavar="REV", help="branch, tag or commit sha (default main)")
    p.add_argument("--out", metavar="DIR",
                   help="copy the files into this new folder (default: leave them in the Hub "
                        "cache and print its path)")
    p.add_argument("--token", help="Hub token, for private repos")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hyperinit import hub

    folder = hub.pull_init(args.repo, revision=args.revision, out=args.out, token=args.token)
    config = folder / hub.CONFIG_FILE
    info = json.loads(config.read_text()).get("hyperinit") if config.is_file() else None
    what = (f": init of {info['arch']['source']}:{info['arch']['name']} by {info['generator']} "
            f"(seed {info['seed']})" if info else "")
    print(f"pulled {args.repo}@{args.revision or 'main'}{what}", file=sys.stderr)
    print(folder)
    return 0
