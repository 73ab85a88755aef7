"""The ``dcmsortd`` console script: ``notify`` by its quick path when it can (see
``quicknotify``), everything else through the full command line (``cli.main``)."""

from __future__ import annotations

import sys


def main_entry() -> None:
    words = sys.argv[1:]
    if words[:1] == ["notify"]:
        from dcmsortd.cli.quicknotify import deliver

        if deliver(words[1:]) == 0:
            sys.stdout.flush()
            raise SystemExit(0)
    from dcmsortd.cli.main import main_entry as full

    full()
