"""Settings, resolved once: config file first, then command-line flags, into one object."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/data/config/config.json"
DEFAULT_DATADIR = "/data"
OTHER_MODALITY_POLICIES = ("ignore", "delete")

# Keys accepted in the "dcmsortd" object of the config file (also SITES.<project>.dcmsortd).
SETTING_KEYS = (
    "rules", "modalities", "other_modalities", "umask", "pipe", "pipe_mode", "pid_dir",
    "log_dir", "input_roots", "workers", "flush_interval", "catch_up", "catch_up_window",
)


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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object")
    return data


def _octal(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"setting {name}: expected an octal number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 8) if not value.lower().startswith("0o") else int(value, 0)
        except ValueError:
            pass
    raise ConfigError(f"setting {name}: expected an octal number like \"002\", got {value!r}")


def _ours(data: Mapping[str, Any], project: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    top = data.get("dcmsortd", {})
    site = (data.get("SITES") or {}).get(project) or {}
    for part in (top, site.get("dcmsortd", {}) if isinstance(site, dict) else {}):
        if not isinstance(part, dict):
            raise ConfigError('the "dcmsortd" settings must be a JSON object')
        merged.update(part)
    unknown = sorted(set(merged) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"unknown dcmsortd setting(s): {', '.join(unknown)}")
    return merged


def _datadir(data: Mapping[str, Any], project: str) -> str:
    site = (data.get("SITES") or {}).get(project)
    if isinstance(site, dict) and isinstance(site.get("DATADIR"), str) and site["DATADIR"]:
        return str(site["DATADIR"])
    return DEFAULT_DATADIR


def _validate(s: Settings) -> Settings:
    if s.other_modalities not in OTHER_MODALITY_POLICIES:
        raise ConfigError(
            f"other_modalities must be one of {', '.join(OTHER_MODALITY_POLICIES)}, "
            f"got {s.other_modalities!r}"
        )
    if s.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {s.workers}")
    if not 0 <= s.umask <= 0o777 or not 0 <= s.pipe_mode <= 0o777:
        raise ConfigError("umask and pipe_mode must be between 000 and 777")
    if s.flush_interval <= 0 or s.flush_interval > 1.0:
        raise ConfigError("flush_interval must be in (0, 1] seconds")
    return s


def resolve(
    flags: Mapping[str, Any],
    home: str,
) -> Settings:
    """Build Settings from the command-line ``flags`` (None = not given) and the config file.

    ``flags`` keys: project, config, datadir, pipe, rules, log_dir, pid_dir, modalities,
    other_modalities, umask, pipe_mode, input_roots, workers, catch_up, verbose.
    """
    project = flags.get("project") or ""
    explicit = flags.get("config") is not None
    config_path = os.path.abspath(flags.get("config") or DEFAULT_CONFIG)
    data = _read_config(config_path, explicit)
    ours = _ours(data, project)

    def pick(name: str, default: Any) -> Any:
        if flags.get(name) is not None:
            return flags[name]
        return ours.get(name, default)

    datadir = os.path.abspath(flags.get("datadir") or _datadir(data, project))
    pid_dir = pick("pid_dir", os.path.join(home, ".pids"))
    log_dir = pick("log_dir", os.path.join(home, "logs"))
    rules = pick("rules", None)
    if rules is None:
        beside = os.path.join(os.path.dirname(config_path), "classifyRules.json")
        rules = beside if os.path.isfile(beside) else None
    modalities = pick("modalities", None)
    roots = pick("input_roots", None)
    settings = Settings(
        project=project,
        datadir=datadir,
        pipe=os.path.abspath(pick("pipe", f"/tmp/.processSingleFilePipe{project}")),
        pid_file=os.path.join(os.path.abspath(pid_dir), f"processSingleFile{project}.pid"),
        log_file=os.path.join(os.path.abspath(log_dir), f"processSingleFile{project}.log"),
        rules_path=os.path.abspath(rules) if rules else None,
        config_path=config_path,
        modalities=tuple(str(m).upper() for m in modalities) if modalities else None,
        other_modalities=str(pick("other_modalities", "ignore")),
        umask=_octal(pick("umask", 0o002), "umask"),
        pipe_mode=_octal(pick("pipe_mode", 0o620), "pipe_mode"),
        input_roots=tuple(os.path.abspath(r) for r in roots) if roots else (datadir,),
        workers=int(pick("workers", 1)),
        flush_interval=float(pick("flush_interval", 0.5)),
        catch_up=bool(pick("catch_up", True)),
        catch_up_window=float(pick("catch_up_window", 7 * 24 * 3600.0)),
        verbose=bool(flags.get("verbose")),
    )
    return _validate(settings)
