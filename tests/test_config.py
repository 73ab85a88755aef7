"""Settings resolution: the config file, then the flags, into one Settings (pure, given files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dcmsortd.cli.main import build_parser, main, settings_from
from dcmsortd.completion.hooks import Hook
from dcmsortd.model.errors import ConfigError
from dcmsortd.service.config import CONFIG_ONLY, DEFAULT_CONFIG, SETTING_KEYS, Settings, resolve


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def settle(home: Path, config: Path | None = None, **flags: Any) -> Settings:
    if config is not None:
        flags["config"] = str(config)
    return resolve(flags, home=str(home), default_config=str(home / "absent" / "config.json"))


# ---------------------------------------------------------------- the data folder


def test_the_projects_datadir_comes_from_sites(tmp_path: Path, home: Path) -> None:
    cfg = write(tmp_path / "config.json",
                {"SITES": {"ABCD": {"DATADIR": "/srv/abcd"}, "": {"DATADIR": "/srv/none"}}})
    assert settle(home, cfg, project="ABCD").datadir == "/srv/abcd"
    assert settle(home, cfg).datadir == "/srv/none"  # the project "" is a site too
    assert settle(home, cfg, project="OTHER").datadir == "/data"


def test_the_datadir_flag_overrides_the_config(tmp_path: Path, home: Path) -> None:
    cfg = write(tmp_path / "config.json", {"SITES": {"ABCD": {"DATADIR": "/srv/abcd"}}})
    s = settle(home, cfg, project="ABCD", datadir=str(tmp_path / "mine"))
    assert s.datadir == str(tmp_path / "mine")
    assert s.input_roots == (str(tmp_path / "mine"),)  # the input roots follow the data folder
    assert s.site == str(tmp_path / "mine" / "site")
    assert s.spool_dir == str(tmp_path / "mine" / "site" / ".dcmsortd" / "spool")


def test_without_any_config_everything_is_fionas_default(home: Path) -> None:
    s = settle(home)
    assert s.datadir == "/data"
    assert s.pipe == "/tmp/.processSingleFilePipe"
    assert s.pid_file == str(home / ".pids" / "processSingleFile.pid")
    assert s.log_file == str(home / "logs" / "processSingleFile.log")
    assert s.rules_path is None  # the packaged rules
    assert (s.umask, s.pipe_mode, s.workers, s.modalities) == (0o002, 0o620, 1, None)
    assert (s.other_modalities, s.flush_interval, s.catch_up) == ("ignore", 0.5, True)
    assert s.catch_up_window == 7 * 24 * 3600


def test_names_carry_the_project(home: Path) -> None:
    s = settle(home, project="ABCD")
    assert s.pipe == "/tmp/.processSingleFilePipeABCD"
    assert s.pid_file == str(home / ".pids" / "processSingleFileABCD.pid")
    assert s.log_file == str(home / "logs" / "processSingleFileABCD.log")


def test_the_default_config_is_fionas_location() -> None:
    assert DEFAULT_CONFIG == "/data/config/config.json"


# ---------------------------------------------------------------- the config file itself


def test_a_missing_default_config_is_only_a_warning(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dcmsortd.service.config"):
        s = settle(home)
    assert s.datadir == "/data"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(home / "absent" / "config.json") in caplog.text


def test_a_missing_explicit_config_is_an_error_naming_it(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.json: config file not found"):
        settle(home, tmp_path / "nowhere.json")


def test_a_missing_explicit_config_exits_1_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.json"
    assert main(["status", "--config", str(missing), "--pid-dir", str(tmp_path)]) == 1
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "where"),
    [('{"SITES": {\n  "A": {"DATADIR": "/x",}\n}}', "line 2 column 25"),
     ('{"dcmsortd": {"umask": 002}}', "line 1 column 25"),
     ("", "line 1 column 1")],
)
def test_invalid_json_names_file_line_and_column(
    tmp_path: Path, home: Path, text: str, where: str
) -> None:
    cfg = write(tmp_path / "config.json", text)
    with pytest.raises(ConfigError, match=rf"config\.json: invalid JSON at {where}"):
        settle(home, cfg)


@pytest.mark.parametrize("data", [[1, 2], {"SITES": []}, {"SITES": {"A": "x"}},
                                  {"dcmsortd": ["umask"]}, {"SITES": {"A": {"DATADIR": 3}}}])
def test_wrong_shapes_are_errors_naming_the_file(
    tmp_path: Path, home: Path, data: Any
) -> None:
    cfg = write(tmp_path / "config.json", data)
    with pytest.raises(ConfigError, match=r"config\.json: "):
        settle(home, cfg, project="A")


def test_a_config_that_is_not_utf8_is_an_error(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_bytes(b'{"SITES": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        settle(home, cfg)


# ---------------------------------------------------------------- the "dcmsortd" settings


def test_top_level_settings_apply_and_the_projects_win(tmp_path: Path, home: Path) -> None:
    cfg = write(tmp_path / "config.json", {
        "dcmsortd": {"umask": "022", "workers": 2, "modalities": ["mr"]},
        "SITES": {"ABCD": {"DATADIR": "/srv/abcd",
                           "dcmsortd": {"workers": 3, "other_modalities": "delete"}}},
    })
    abcd = settle(home, cfg, project="ABCD")
    assert (abcd.umask, abcd.workers, abcd.modalities) == (0o022, 3, ("MR",))
    assert abcd.other_modalities == "delete"
    other = settle(home, cfg, project="OTHER")
    assert (other.umask, other.workers, other.other_modalities) == (0o022, 2, "ignore")


@pytest.mark.parametrize("place", ["top", "site"])
def test_an_unknown_setting_is_an_error_naming_it(tmp_path: Path, home: Path, place: str) -> None:
    ours = {"umask": "002", "modality": ["MR"]}
    data = {"dcmsortd": ours} if place == "top" else {"SITES": {"A": {"dcmsortd": ours}}}
    cfg = write(tmp_path / "config.json", data)
    with pytest.raises(ConfigError, match=r"config\.json: unknown dcmsortd setting\(s\): modality"):
        settle(home, cfg, project="A")


# Every setting: a config value, a different flag value (as argparse gives it), and what each
# resolves to. The flag must win.
EVERY_SETTING: dict[str, tuple[Any, list[str], str, Any, Any]] = {
    # name: (config value, flag argv, Settings attribute, from config, from flag)
    "rules": ("/c/rules.json", ["--rules", "/f/rules.json"], "rules_path",
              "/c/rules.json", "/f/rules.json"),
    "modalities": (["MR", "sr"], ["--modalities", "CT"], "modalities", ("MR", "SR"), ("CT",)),
    "other_modalities": ("delete", ["--other-modalities", "ignore"], "other_modalities",
                         "delete", "ignore"),
    "umask": ("022", ["--umask", "0"], "umask", 0o022, 0),
    "pipe": ("/c/pipe", ["--pipe", "/f/pipe"], "pipe", "/c/pipe", "/f/pipe"),
    "pipe_mode": ("600", ["--pipe-mode", "660"], "pipe_mode", 0o600, 0o660),
    "pid_dir": ("/c/pids", ["--pid-dir", "/f/pids"], "pid_file",
                "/c/pids/processSingleFile.pid", "/f/pids/processSingleFile.pid"),
    "log_dir": ("/c/logs", ["--log-dir", "/f/logs"], "log_file",
                "/c/logs/processSingleFile.log", "/f/logs/processSingleFile.log"),
    "input_roots": (["/c/in"], ["--input-root", "/f/a", "--input-root", "/f/b"], "input_roots",
                    ("/c/in",), ("/f/a", "/f/b")),
    "workers": (4, ["--workers", "2"], "workers", 4, 2),
    "flush_interval": (0.25, ["--flush-interval", "1"], "flush_interval", 0.25, 1.0),
    "catch_up": (False, ["--catch-up"], "catch_up", False, True),
    "catch_up_window": (3600, ["--catch-up-window", "60"], "catch_up_window", 3600.0, 60.0),
    "metrics": ("0.0.0.0:9100", ["--metrics", ":9101"], "metrics", ("0.0.0.0", 9100),
                ("127.0.0.1", 9101)),
    "series_quiet": (3, ["--series-quiet", "1.5"], "series_quiet", 3.0, 1.5),
    "study_quiet": (30, ["--study-quiet", "2"], "study_quiet", 30.0, 2.0),
    "hook_workers": (4, ["--hook-workers", "1"], "hook_workers", 4, 1),
}


@pytest.mark.parametrize(("value", "address"), [
    ("9100", ("127.0.0.1", 9100)), (":9100", ("127.0.0.1", 9100)), (9100, ("127.0.0.1", 9100)),
    ("10.0.0.5:9100", ("10.0.0.5", 9100)), ("[::1]:9100", ("::1", 9100)),
    ("", None), (False, None),
])
def test_the_metrics_address(tmp_path: Path, home: Path, value: Any, address: Any) -> None:
    cfg = write(tmp_path / "config.json", {"dcmsortd": {"metrics": value}})
    assert settle(home, cfg).metrics == address


def test_metrics_are_off_by_default(tmp_path: Path, home: Path) -> None:
    assert settle(home, write(tmp_path / "config.json", {})).metrics is None


def test_a_wrong_metrics_flag_is_an_error_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path / "config.json", {})
    argv = ["--config", str(cfg), "--pid-dir", str(tmp_path / "pids"), "--pipe",
            str(tmp_path / "pipe"), "--datadir", str(tmp_path / "data")]
    assert main(["run", *argv, "--metrics", "x:y"]) == 1
    assert "command line: setting metrics: expected HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "pids").exists() and not (tmp_path / "pipe").exists()


def test_every_setting_is_covered_here() -> None:
    assert sorted(EVERY_SETTING) == sorted(set(SETTING_KEYS) - CONFIG_ONLY)
    assert {"hooks"} == CONFIG_ONLY  # tested below


def test_hooks_come_from_the_config_checked(tmp_path: Path, home: Path) -> None:
    hooks = [{"on": "series", "run": ["/opt/qc", "--phantom"], "types": ["ABCD-Phantom"],
              "timeout": 30},
             {"on": "study", "run": ["/opt/archive"]}]
    s = settle(home, write(tmp_path / "config.json", {"dcmsortd": {"hooks": hooks}}))
    assert s.hooks == (Hook("series", ("/opt/qc", "--phantom"), ("ABCD-Phantom",), 30.0),
                       Hook("study", ("/opt/archive",), (), 600.0))
    assert (s.series_quiet, s.study_quiet, s.hook_workers) == (15.0, 60.0, 2)
    assert settle(home, write(tmp_path / "none.json", {})).hooks == ()


@pytest.mark.parametrize(("hooks", "reason"), [
    ({"on": "series"}, "expected a list of hook objects"),
    (["/opt/qc"], "hook 1: expected an object"),
    ([{"on": "series", "run": ["/x"], "typess": ["T"]}], "hook 1: unknown key.s. typess"),
    ([{"on": "image", "run": ["/x"]}], 'hook 1: "on" must be'),
    ([{"on": "study", "run": ["/x"]}, {"on": "study", "run": "/x --y"}],
     'hook 2: "run" must be a non-empty list'),
    ([{"on": "study", "run": []}], 'hook 1: "run" must be'),
    ([{"on": "study", "run": ["/x"], "types": [3]}], 'hook 1: "types" must be'),
    ([{"on": "study", "run": ["/x"], "timeout": 0}], 'hook 1: "timeout" must be'),
    ([{"on": "study", "run": ["/x"], "timeout": "60"}], 'hook 1: "timeout" must be'),
])
def test_a_wrong_hook_is_an_error_naming_the_file_and_the_setting(
    tmp_path: Path, home: Path, hooks: Any, reason: str
) -> None:
    cfg = write(tmp_path / "config.json", {"SITES": {"A": {"dcmsortd": {"hooks": hooks}}}})
    with pytest.raises(ConfigError, match=rf"config\.json: setting hooks: {reason}"):
        settle(home, cfg, project="A")


@pytest.mark.parametrize("name", sorted(EVERY_SETTING))
def test_every_setting_has_a_flag_and_the_flag_wins(
    tmp_path: Path, home: Path, name: str
) -> None:
    value, argv, attribute, from_config, from_flag = EVERY_SETTING[name]
    cfg = write(tmp_path / "config.json", {"dcmsortd": {name: value}})
    assert getattr(settle(home, cfg), attribute) == from_config
    args = build_parser().parse_args(["run", "--config", str(cfg), *argv])
    assert getattr(settings_from(args), attribute) == from_flag


def test_no_catch_up_flag_turns_a_configured_catch_up_off(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.json", {"dcmsortd": {"catch_up": True}})
    args = build_parser().parse_args(["run", "--config", str(cfg), "--no-catch-up"])
    assert settings_from(args).catch_up is False


@pytest.mark.parametrize(
    ("name", "value"),
    [("workers", "2"), ("workers", True), ("workers", 0), ("catch_up", "false"),
     ("modalities", [1]), ("input_roots", 7), ("pipe", ""), ("rules", 3), ("umask", "9"),
     ("umask", "1000"), ("umask", 19), ("pipe_mode", [6]), ("flush_interval", 2),
     ("flush_interval", "0.5"), ("catch_up_window", -1), ("other_modalities", "move"),
     ("metrics", "host:"), ("metrics", "70000"), ("metrics", "localhost:http"),
     ("metrics", True), ("metrics", [9100])],
)
def test_wrong_values_are_errors_naming_the_setting(
    tmp_path: Path, home: Path, name: str, value: Any
) -> None:
    cfg = write(tmp_path / "config.json", {"dcmsortd": {name: value}})
    with pytest.raises(ConfigError, match=rf"config\.json: setting {name}: expected"):
        settle(home, cfg)


@pytest.mark.parametrize(("argv", "name"), [(["--workers", "0"], "workers"),
                                            (["--umask", "8"], "umask"),
                                            (["--pipe-mode", "1777"], "pipe_mode"),
                                            (["--flush-interval", "0"], "flush_interval"),
                                            (["--catch-up-window", "-5"], "catch_up_window")])
def test_wrong_flag_values_are_errors_naming_the_command_line(
    tmp_path: Path, argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path / "config.json", {"dcmsortd": {name: "from the config"}})
    args = build_parser().parse_args(["run", "--config", str(cfg), *argv])
    with pytest.raises(ConfigError, match=f"command line: setting {name}: expected"):
        settings_from(args)
    assert main(["import", "--dry-run", "--config", str(cfg), *argv, str(tmp_path)]) == 1
    assert f"dcmsortd: command line: setting {name}" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "umask"),
                         [("002", 0o002), ("0", 0), ("0o027", 0o027), ("777", 0o777),
                          (0, 0), (22, 0o022), (2, 0o002)])
def test_umask_is_octal_text_and_a_json_number_reads_as_octal_digits(
    tmp_path: Path, home: Path, value: Any, umask: int
) -> None:
    cfg = write(tmp_path / "config.json", {"dcmsortd": {"umask": value, "pipe_mode": value}})
    s = settle(home, cfg)
    assert (s.umask, s.pipe_mode) == (umask, umask)


def test_a_comma_list_of_modalities_in_the_config_is_a_list(tmp_path: Path, home: Path) -> None:
    cfg = write(tmp_path / "config.json", {"dcmsortd": {"modalities": "mr, SR,"}})
    assert settle(home, cfg).modalities == ("MR", "SR")


def test_relative_paths_in_the_config_are_relative_to_its_folder(
    tmp_path: Path, home: Path
) -> None:
    cfg = write(tmp_path / "conf" / "config.json", {"dcmsortd": {
        "rules": "rules/mine.json", "pipe": "pipe", "pid_dir": "pids", "log_dir": "/var/log/x",
        "input_roots": ["in", "/abs/in"],
    }})
    s = settle(home, cfg)
    conf = tmp_path / "conf"
    assert s.rules_path == str(conf / "rules" / "mine.json")
    assert s.pipe == str(conf / "pipe")
    assert s.pid_file == str(conf / "pids" / "processSingleFile.pid")
    assert s.log_file == "/var/log/x/processSingleFile.log"
    assert s.input_roots == (str(conf / "in"), "/abs/in")


def test_relative_flags_are_relative_to_the_working_folder(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = settle(home, datadir="./data", pipe="p", rules="r.json")
    assert (s.datadir, s.pipe, s.rules_path) == (
        str(tmp_path / "data"), str(tmp_path / "p"), str(tmp_path / "r.json"))


# ---------------------------------------------------------------- rules next to the config


def test_classify_rules_next_to_the_config_are_picked_up(tmp_path: Path, home: Path) -> None:
    cfg = write(tmp_path / "config.json", {})
    assert settle(home, cfg).rules_path is None
    beside = write(tmp_path / "classifyRules.json", [])
    assert settle(home, cfg).rules_path == str(beside)
    assert settle(home, cfg, rules="/other.json").rules_path == "/other.json"  # the flag wins


@pytest.mark.parametrize("project", ["a/b", "../x", "x\ny"])
def test_a_project_name_cannot_escape_the_file_names(home: Path, project: str) -> None:
    with pytest.raises(ConfigError, match="project"):
        settle(home, project=project)
