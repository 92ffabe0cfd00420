"""``seqviz serve --file F | --logdir D``: the live dashboard (see :mod:`seqviz_trackers.serve.server`)."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

from .main import CommandError, say
from ..serve.server import SeqVizServer, _is_loopback, make_runs


def add_arguments(parser: Any) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="the JSONL file to serve (it may not exist yet)")
    src.add_argument("--logdir", help="serve every *.jsonl below this folder, with a run selector")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port for HTTP and the websocket (default 8765)")
    parser.add_argument("--interval", type=float, default=0.25,
                        help="seconds between scans for new runs; appends are checked 10x as often (default 0.25)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="also accept websocket connections from pages at ORIGIN (e.g. http://myhost:8765; "
                             "'null' for pages opened from a file, such as the original seq-viz dashboard); repeatable")


#: Shortest --interval: appends are checked every interval / 10 seconds.
MIN_INTERVAL = 0.01


def run(args: Any) -> int:
    if not math.isfinite(args.interval) or args.interval <= 0:
        raise CommandError(f"--interval must be positive and finite (seconds), got {args.interval}")
    if args.interval < MIN_INTERVAL:
        raise CommandError(f"--interval must be at least {MIN_INTERVAL} s (appends are checked 10x as often), "
                           f"got {args.interval}")
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535 (0: any free port), got {args.port}")
    if args.logdir is not None and not Path(args.logdir).is_dir():
        raise CommandError(f"{args.logdir}: no such folder")
    if args.file is not None:
        if Path(args.file).is_dir():
            raise CommandError(f"{args.file} is a folder; use --logdir {args.file}")
        folder = Path(args.file).parent
        if not folder.is_dir():
            raise CommandError(f"{args.file}: the folder {folder} does not exist (the file may appear later, its folder must exist)")
    if not _is_loopback(args.host):
        say(args, f"warning: binding {args.host} makes your training data readable by anyone who can reach port "
                  f"{args.port}; the default 127.0.0.1 keeps it on this machine")
        say(args, f"note: the Host header check is off on {args.host}: requests naming any host are answered; "
                  f"websockets still need a page of this server or an --allow-origin")
    logging.basicConfig(level=logging.WARNING, format="seqviz serve: %(message)s")
    server = SeqVizServer(make_runs(args.file, args.logdir), host=args.host, port=args.port,
                          interval=args.interval, allow_origins=args.allow_origin)

    async def main() -> None:
        await server.start()
        what = args.file if args.file is not None else f"{args.logdir} (every *.jsonl)"
        if args.file is not None and not Path(args.file).exists():
            what += " (waiting for it to appear)"
        print(f"seqviz: serving {what}\n  open {server.url}  (Ctrl-C to stop)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        say(args, "stopped")
        return 0
    except OSError as exc:
        if exc.errno in (98, 48, 10048) or "address already in use" in str(exc).lower():
            raise CommandError(f"port {args.port} on {args.host} is already in use; stop the other server or pick "
                               f"another with --port") from None
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0
