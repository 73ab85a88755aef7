"""Settings, resolved once: config file first, then command-line flags, into one object."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dcmsortd.completion.hooks import Hook, parse_hooks
from dcmsortd.model.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/data/config/config.json"
DEFAULT_DATADIR = "/data"
OTHER_MODALITY_POLICIES = ("ignore", "delete")

# Keys accepted in the "dcmsortd" object of the config file (also SITES.<project>.dcmsortd).
SETTING_KEYS = (
    "rules", "modalities", "other_modalities", "umask", "pipe", "pipe_mode", "pid_dir",
    "log_dir", "input_roots", "workers", "flush_interval", "catch_up", "catch_up_window",
    "metrics",
    "series_quiet", "study_quiet", "hooks", "hook_workers",
)
# Settings only the config file gives (no flag): a list of commands is no flag's business.
CONFIG_ONLY = frozenset({"hooks"})
# Settings that are paths: relative ones in the config file are relative to its folder.
PATH_KEYS = frozenset({"rules", "pipe", "pid_dir", "log_dir", "input_roots"})


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know, resolved once and passed down."""

    project: str
    datadir: str
    pipe: str
    pid_file: str
    log_file: str
    rules_path: str | None  # None: the packaged default rules
    config_path: str | None = None
    modalities: tuple[str, ...] | None = None  # None: every modality is sorted
    other_modalities: str = "ignore"
    umask: int = 0o002
    pipe_mode: int = 0o620
    input_roots: tuple[str, ...] = ()
    workers: int = 1
    flush_interval: float = 0.5
    catch_up: bool = True
    catch_up_window: float = 7 * 24 * 3600.0
    metrics: tuple[str, int] | None = None  # (host, port) of the Prometheus endpoint
    series_quiet: float = 15.0
    study_quiet: float = 60.0
    hooks: tuple[Hook, ...] = ()
    hook_workers: int = 2
    verbose: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def site(self) -> str:
        return os.path.join(self.datadir, "site")

    @property
    def state_dir(self) -> str:
        """dcmsortd's own bookkeeping (series state, spool, index), inside the data folder."""
        return os.path.join(self.site, ".dcmsortd")

    @property
    def spool_dir(self) -> str:
        return os.path.join(self.state_dir, "spool")

    @property
    def journal_dir(self) -> str:
        """Where storescp's per-file line appends (see ``intake.follower``)."""
        return os.path.join(self.state_dir, "journal")

    @property
    def journal(self) -> str:
        """The arrivals journal file of this project."""
        return os.path.join(self.journal_dir, f"arrivals{self.project}")

    @property
    def receiver_log(self) -> str:
        """storescp's receiver log (its ``--log-config``, see ``intake.dcmtklog``)."""
        return os.path.join(self.journal_dir, f"storescp{self.project}.log")

    @property
    def receiver_log_config(self) -> str:
        """The oflog configuration ``storescp-command`` writes for that log."""
        return os.path.join(self.journal_dir, f"storescp{self.project}.cfg")

    def roots(self) -> tuple[str, ...]:
        return self.input_roots or (self.datadir,)


def _read_config(path: str, explicit: bool) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: config file not found") from None
        log.warning("%s: no config file, using defaults", path)
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:  # a number too long, nesting too deep
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object")
    return data


def _octal(value: Any) -> int:
    """``"002"``, ``"0o2"``, or a JSON number whose digits are read as octal (22 is 022)."""
    if not isinstance(value, bool) and isinstance(value, int | str):
        text = str(value)
        try:
            number = int(text, 0) if text.lower().startswith("0o") else int(text, 8)
        except ValueError:
            number = -1
        if 0 <= number <= 0o777:
            return number
    raise ValueError(f"expected an octal number from 000 to 777 like \"002\", got {value!r}")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty text, got {value!r}")
    return value


def _texts(value: Any) -> list[str]:
    """A list of non-empty texts; a single text stands for a list of one."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ValueError(f"expected a list of non-empty texts, got {value!r}")
    return items


def _modalities(value: Any) -> list[str]:
    """A list of modalities, or one text listing them separated by commas."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list) and all(isinstance(m, str) for m in value):
        value = [m.strip().upper() for m in value if m.strip()]
    return _texts(value)


def _policy(value: Any) -> str:
    if value not in OTHER_MODALITY_POLICIES:
        raise ValueError(f"expected one of {', '.join(OTHER_MODALITY_POLICIES)}, got {value!r}")
    return str(value)


def _workers(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected a number of seconds (0 or more), got {value!r}")
    return float(value)


def _flush_interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"expected a number of seconds above 0 and at most 1, got {value!r}")
    return float(value)


def metrics_address(value: Any) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``""`` or
    ``false``: off."""
    if value is False or value == "":
        return None
    text = str(value).strip() if isinstance(value, str | int) and value is not True else ""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, :PORT or PORT (port 1-65535), got {value!r}")
    return host, int(port)


def _yes_no(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _object(value: Any, what: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def _site(data: Mapping[str, Any], project: str, path: str) -> dict[str, Any]:
    sites = _object(data.get("SITES"), '"SITES"', path)
    return _object(sites.get(project), f'"SITES.{project}"', path)


def _ours(data: Mapping[str, Any], project: str, path: str) -> dict[str, Any]:
    """The "dcmsortd" settings: the top-level object, then SITES.<project>'s (wins)."""
    merged = dict(_object(data.get("dcmsortd"), '"dcmsortd"', path))
    where = f'"SITES.{project}.dcmsortd"'
    merged.update(_object(_site(data, project, path).get("dcmsortd"), where, path))
    unknown = sorted(set(merged) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown dcmsortd setting(s): {', '.join(unknown)} "
                          f"(known: {', '.join(SETTING_KEYS)})")
    return merged


def _datadir(data: Mapping[str, Any], project: str, path: str) -> str:
    value = _site(data, project, path).get("DATADIR")
    if value is None or value == "":
        return DEFAULT_DATADIR
    if not isinstance(value, str):
        raise ConfigError(f"{path}: SITES.{project}.DATADIR must be a text, got {value!r}")
    return value


def _check_project(project: Any) -> str:
    name = project or ""
    if not isinstance(name, str) or "/" in name or any(ord(c) < 32 for c in name):
        raise ConfigError(f"project {project!r}: a project name cannot hold '/' or control "
                          "characters (it is part of the pipe, pid and log file names)")
    return name


class _Picker:
    """A setting's value: the flag when given, else the config file's, else the default.

    Each value is checked with a converter; a wrong one is a ConfigError naming where it
    came from. Relative paths in the config file are taken relative to its folder.
    """

    def __init__(self, flags: Mapping[str, Any], ours: Mapping[str, Any], path: str) -> None:
        self.flags, self.ours, self.path = flags, ours, path

    def __call__(self, name: str, default: Any, convert: Callable[[Any], Any]) -> Any:
        if self.flags.get(name) is not None:
            value, origin = self.flags[name], "command line"
        elif name in self.ours:
            value, origin = self.ours[name], self.path
        else:
            return default
        try:
            converted = convert(value)
        except ValueError as exc:
            raise ConfigError(f"{origin}: setting {name}: {exc}") from None
        if origin == self.path and name in PATH_KEYS:
            here = os.path.dirname(self.path)
            if isinstance(converted, list):
                return [os.path.join(here, p) for p in converted]
            return os.path.join(here, converted)
        return converted


def resolve(
    flags: Mapping[str, Any],
    home: str,
    default_config: str | None = None,
) -> Settings:
    """Build Settings from the command-line ``flags`` (None = not given) and the config file.

    ``flags`` keys: project, config, datadir, verbose and every name in ``SETTING_KEYS``;
    a flag wins over the config file. ``home`` is where ``.pids`` and ``logs`` go by
    default; ``default_config`` (None: ``DEFAULT_CONFIG``) is read when no ``config`` flag is
    given, and a missing one is only a warning.
    """
    project = _check_project(flags.get("project"))
    explicit = flags.get("config") is not None
    config_path = os.path.abspath(flags.get("config") or default_config or DEFAULT_CONFIG)
    data = _read_config(config_path, explicit)
    pick = _Picker(flags, _ours(data, project, config_path), config_path)

    datadir = os.path.abspath(flags.get("datadir") or _datadir(data, project, config_path))
    pid_dir = pick("pid_dir", os.path.join(home, ".pids"), _text)
    log_dir = pick("log_dir", os.path.join(home, "logs"), _text)
    rules = pick("rules", None, _text)
    if rules is None:
        beside = os.path.join(os.path.dirname(config_path), "classifyRules.json")
        rules = beside if os.path.isfile(beside) else None
    modalities = pick("modalities", None, _modalities)
    roots = pick("input_roots", None, _texts)
    return Settings(
        project=project,
        datadir=datadir,
        pipe=os.path.abspath(pick("pipe", f"/tmp/.processSingleFilePipe{project}", _text)),
        pid_file=os.path.join(os.path.abspath(pid_dir), f"processSingleFile{project}.pid"),
        log_file=os.path.join(os.path.abspath(log_dir), f"processSingleFile{project}.log"),
        rules_path=os.path.abspath(rules) if rules else None,
        config_path=config_path,
        modalities=tuple(modalities) if modalities else None,
        other_modalities=pick("other_modalities", "ignore", _policy),
        umask=pick("umask", 0o002, _octal),
        pipe_mode=pick("pipe_mode", 0o620, _octal),
        input_roots=tuple(os.path.abspath(r) for r in roots) if roots else (datadir,),
        workers=pick("workers", 1, _workers),
        flush_interval=pick("flush_interval", 0.5, _flush_interval),
        catch_up=pick("catch_up", True, _yes_no),
        catch_up_window=pick("catch_up_window", 7 * 24 * 3600.0, _seconds),
        metrics=pick("metrics", None, metrics_address),
        series_quiet=pick("series_quiet", 15.0, _seconds),
        study_quiet=pick("study_quiet", 60.0, _seconds),
        hooks=pick("hooks", (), parse_hooks),
        hook_workers=pick("hook_workers", 2, _workers),
        verbose=bool(flags.get("verbose")),
    )
