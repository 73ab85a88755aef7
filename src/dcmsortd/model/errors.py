"""The exception hierarchy. Every message names the input and the reason."""


class DcmsortdError(Exception):
    """Base of every error dcmsortd raises on purpose."""


class ConfigError(DcmsortdError):
    """A configuration file or flag is wrong (missing file, bad JSON, bad value)."""


class RulesError(DcmsortdError):
    """A rules file is invalid. ``problems`` lists every problem found, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the rules:\n{lines}")


class NotificationError(DcmsortdError):
    """A pipe line has a shape we do not accept."""


class HeaderError(DcmsortdError):
    """A received file is not usable DICOM (not DICOM, truncated, missing UIDs, unreadable...)."""


class RejectedInput(DcmsortdError):
    """A received file is refused by policy (outside the input roots, modality not allowed...)."""


class DaemonError(DcmsortdError):
    """The daemon cannot start or be controlled (already running, unsafe pipe path, ...)."""
