"""`hyperinit push ARCH --repo OWNER/NAME`: predict an init and publish it on the Hub.

`hyperinit push --generator-dir DIR --repo OWNER/NAME` publishes a generator instead.
"""

from __future__ import annotations

import argparse
import sys

from ._arch import add_init_options, json_object, shard_size, spec_from_args, task_note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="publish an init (or a generator) to the Hugging Face Hub",
                       description=__doc__)
    p.add_argument("arch", nargs="?", metavar="ARCH",
                   help="architecture spec of the init: torchvision:NAME, hf:MODEL_TYPE, "
                        "timm:NAME or python:module:Class")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="Hub model repo")
    p.add_argument("--generator-dir", metavar="DIR",
                   help="publish this generator checkpoint (or shipped name) instead of an init")
    p.add_argument("--revision", metavar="BRANCH",
                   help="branch to commit to, created from main if missing (default main)")
    p.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or login)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    init = p.add_argument_group("init options")
    init.add_argument("--num-classes", type=int, help="classifier size (num_labels for hf)")
    init.add_argument("--config", type=json_object, default={}, metavar="JSON",
                      help="constructor keyword arguments or transformers config overrides")
    add_init_options(init)
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from hyperinit import publish

    if (args.arch is None) == (args.generator_dir is None):
        args.parser.error("give either ARCH (to publish an init) or --generator-dir DIR")
    private = args.private or None  # None: an existing repo keeps its visibility
    if args.generator_dir is not None:
        info = publish.push_generator(args.generator_dir, args.repo, revision=args.revision,
                                      token=args.token, private=private)
        what = f"generator {args.generator_dir}; load it with hub:{args.repo}@{info.oid}"
    else:
        info = publish.push_init(spec_from_args(args), args.repo, args.generator,
                                 seed=args.seed, noise=args.noise, dtype=args.dtype,
                                 task=args.task, revision=args.revision, token=args.token,
                                 private=private, max_shard_size=shard_size(args))
        what = f"init of {args.arch} (seed {args.seed}{task_note(args)})"
    print(f"pushed {what} to {args.repo}@{args.revision or 'main'}, commit {info.oid}",
          file=sys.stderr)
    print(info.commit_url)
    return 0
