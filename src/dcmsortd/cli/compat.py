"""``processSingleFile3.py start|stop|restart|status|test [project]`` and ``send LINE``.

Maps FIONA's command line onto ``dcmsortd`` so cron jobs and storescp setups keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dcmsortd.cli.main import leave
from dcmsortd.cli.main import main as dcmsortd_main

USAGE = "usage: processSingleFile3.py start|stop|restart|status|test [project] | send LINE..."
VERBS = ("start", "stop", "restart", "status", "test")


def translate(argv: Sequence[str]) -> list[str] | None:
    """The dcmsortd arguments for FIONA-style ``argv`` (without the program name)."""
    if not argv:
        return None
    verb, rest = argv[0], list(argv[1:])
    if verb == "send":  # "--": a line is never taken for an option
        return ["send", "--", *rest] if rest else None
    if verb in VERBS and len(rest) <= 1:
        return [verb, "--project", rest[0]] if rest else [verb]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = translate(list(sys.argv[1:] if argv is None else argv))
    if args is None:
        print(USAGE, file=sys.stderr)
        return 2
    return dcmsortd_main(args)


def main_entry() -> None:
    leave(main())
