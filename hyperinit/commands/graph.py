"""`hyperinit graph SPEC`: build an architecture's graph, then summarize, dump or draw it."""

from __future__ import annotations

import argparse
import json
import sys

from ._arch import add_arch_arguments, spec_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="build, summarize, dump or draw an architecture's graph",
                       description=__doc__)
    add_arch_arguments(p)
    p.add_argument("--format", choices=("summary", "json"), default="summary",
                   help="what to print (default: summary)")
    p.add_argument("--out", help="also draw the graph to this image file (.png, .svg, .pdf)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import graphs

    graph = graphs.build(spec_from_args(args))
    if args.format == "json":
        json.dump(graph.to_json(), sys.stdout, indent=1)
        print()
    else:
        print(graph.summary())
    if args.out:
        from graphs.draw import draw

        draw(graph, args.out)
        print(f"drew {graph.num_nodes} nodes to {args.out}", file=sys.stderr)
    return 0
