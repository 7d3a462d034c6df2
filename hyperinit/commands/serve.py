"""`hyperinit serve`: run the HTTP service that answers architectures with safetensors inits.

POST /v1/inits {"arch": "torchvision:resnet18", "num_classes": 10} returns the init; see
/docs on the running server for the whole API. The bearer token can also come from the
HYPERINIT_SERVE_TOKEN environment variable (a token on the command line shows in `ps`).
"""

from __future__ import annotations

import argparse
import os
import re

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size(text: str) -> int:
    """Bytes from '123', '500M', '10G' (binary units; a trailing 'B' or 'iB' is allowed)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not found:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (write e.g. 500M, 10G or bytes)")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


def _human(size: int) -> str:
    """'10G' for 10 * 1024**3: the largest unit that divides ``size``."""
    unit = next(u for u in reversed(_UNITS) if size % _UNITS[u] == 0)
    return f"{size // _UNITS[unit]}{unit}"


def register(sub: argparse._SubParsersAction) -> None:
    from serve.config import ServeConfig

    defaults = ServeConfig.__dataclass_fields__
    p = sub.add_parser("serve", help="run the HTTP service that returns inits",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--generator", action="append", metavar="NAME_OR_DIR",
                   help="a generator requests may name (repeat for several; the first is the "
                        "default): shipped name, 'untrained', or checkpoint folder. Default: all "
                        "shipped generators and 'untrained'")
    p.add_argument("--cache-dir",
                   help="folder of the init cache (default ~/.cache/hyperinit/serve)")
    p.add_argument("--cache-max-bytes", type=_size, metavar="SIZE",
                   default=defaults["cache_max_bytes"].default,
                   help="evict least recently used inits above this size (default "
                        f"{_human(defaults['cache_max_bytes'].default)})")
    p.add_argument("--max-concurrent", type=int, default=defaults["max_concurrent"].default,
                   help="generations running at once (default %(default)s)")
    p.add_argument("--queue-limit", type=int, default=defaults["queue_limit"].default,
                   help="generations waiting for a slot before requests get 429 "
                        "(default %(default)s)")
    p.add_argument("--timeout", type=float, default=defaults["request_timeout_s"].default,
                   metavar="SECONDS",
                   help="answer 503 if a request (resolving it, reading the cache, "
                        "generating) takes longer (default %(default)s)")
    p.add_argument("--max-params", type=int, default=defaults["max_params"].default,
                   help="refuse architectures with more parameters (default %(default)s)")
    p.add_argument("--max-body-bytes", type=_size, metavar="SIZE",
                   default=defaults["max_body_bytes"].default,
                   help="refuse larger request bodies with 413 (default "
                        f"{_human(defaults['max_body_bytes'].default)})")
    p.add_argument("--retry-after", type=int, default=defaults["retry_after_s"].default,
                   metavar="SECONDS",
                   help="Retry-After sent with 429 and 503 answers (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("HYPERINIT_SERVE_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' on /v1 "
                        "(default: $HYPERINIT_SERVE_TOKEN, else no auth)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default info)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from serve import ServeConfig, create_app

    options = {"cache_max_bytes": args.cache_max_bytes, "max_concurrent": args.max_concurrent,
               "queue_limit": args.queue_limit, "request_timeout_s": args.timeout,
               "retry_after_s": args.retry_after,
               "max_params": args.max_params, "max_body_bytes": args.max_body_bytes,
               "token": args.token}
    if args.generator:
        options["generators"] = tuple(args.generator)
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    uvicorn.run(create_app(ServeConfig(**options)), host=args.host, port=args.port,
                log_level=args.log_level)
    return 0
