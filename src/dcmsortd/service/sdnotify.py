"""systemd's notification protocol (sd_notify): READY, STOPPING, WATCHDOG and STATUS lines.

When systemd starts a ``Type=notify`` service it sets ``NOTIFY_SOCKET`` (a path, or an
abstract socket name starting with ``@``); each notification is one datagram of
``KEY=value`` lines. With ``WatchdogSec=`` it also sets ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``): the service must send ``WATCHDOG=1`` more often than that, or systemd
restarts it. Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(name: str) -> str | bytes:
    if name.startswith("@"):  # an abstract socket: a leading NUL byte instead
        return b"\0" + name[1:].encode()
    return name


class SdNotify:
    """Sends notifications to ``address`` (None: nowhere). ``watchdog`` is the interval in
    seconds at which ``WATCHDOG=1`` is due (half systemd's timeout), or None."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog
        self._pinged: float | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SdNotify:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        watchdog = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if address and usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            watchdog = int(usec) / 2e6
        return cls(address, watchdog)

    @property
    def active(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; False when it cannot be sent (said once: a
        watchdog ping that failed is tried again at the next tick)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode("utf-8", "replace"), _address(self.address))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("%s: cannot notify systemd: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def tick(self, now: float) -> None:
        """Send ``WATCHDOG=1`` when due (call it from the main loop: a hung loop stops it)."""
        if self.watchdog is None:
            return
        if self._pinged is None or now - self._pinged >= self.watchdog:
            self._pinged = now
            self.send("WATCHDOG=1")
