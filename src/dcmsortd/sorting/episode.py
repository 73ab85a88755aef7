"""Log a write that keeps failing once when it starts failing, and once when it works again."""

from __future__ import annotations

import logging
from typing import Any


class Episode:
    """A failure episode: ``failed`` logs at ERROR only on the first failure in a row,
    ``worked`` logs at INFO only when it ends one. Nothing is logged while things work."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.failing = False

    def failed(self, message: str, *args: Any) -> None:
        if not self.failing:
            self._log.error(message, *args)
        self.failing = True

    def worked(self, message: str, *args: Any) -> None:
        if self.failing:
            self._log.info(message, *args)
        self.failing = False
