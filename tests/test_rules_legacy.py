"""Rules files shaped like real FIONA deployments' load, with warnings (issue 14, part 3).

The files here are written for these tests, in the shapes the deployments' files have:
several rules sharing an id (three GE diffusion rules all ``GEDTI``), keys the loader does
not know (a ``Comment``/``note``/``author`` field, at rule and at entry level), hex tag
pairs like ``["0x18", "0x24"]``, ``negate: "yes"``, record keys as tags (``NumSlices``,
``PhaseEncodingDirectionPositive``) and ``check: "SeriesLevel"``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from bulkcorpus import Site as BulkSite
from bulkcorpus import restore_logging
from daemonproc import Site, stop, wait_for
from dcmsortd.cli.main import main
from dcmsortd.model.errors import RulesError
from dcmsortd.rules.engine import parse_rules
from pipefeed import feed, line_for, wait_linked
from realfiles import pydicom_data, restamp, shared_dicom

__all__ = ["restore_logging"]

SITE_RULES: list[dict[str, Any]] = [
    {"type": "GE", "id": "GEBYMANUFACTURER", "description": "This scan is from GE",
     "rules": [{"tag": ["Manufacturer"], "value": "^GE MEDICAL"}]},
    {"type": "SIEMENS", "id": "SIEMENSBYMANUFACTURER",
     "rules": [{"tag": ["0x08", "0x70"], "value": "^SIEMENS"}]},
    {"type": "ABCD-DTI", "id": "GEDTI", "Comment": "DV25 and later",
     "rules": [{"rule": "GEBYMANUFACTURER"},
               {"tag": ["0x43", "0x1039", "0"], "operator": ">", "value": 0}]},
    {"type": "ABCD-DTI", "id": "GEDTI",
     "rules": [{"rule": "GEBYMANUFACTURER"},
               {"tag": ["SeriesDescription"], "value": "(?i)dti", "note": "RSI too"}]},
    {"type": "ABCD-DTI", "id": "GEDTI", "author": "site physicist",
     "rules": [{"rule": "GEBYMANUFACTURER"}, {"tag": ["0x18", "0x24"], "value": "epi2"}]},
    {"type": "ABCD-Diffusion-FM", "id": "SIEMENSDFM", "check": "SeriesLevel",
     "rules": [{"rule": "SIEMENSBYMANUFACTURER"},
               {"tag": ["ImageType"], "operator": "contains", "value": "DIFFUSION"},
               {"tag": ["PhaseEncodingDirectionPositive"], "value": "^0$"},
               {"tag": ["NumSlices"], "operator": ">", "value": 10}]},
    {"type": "notlocalizer",
     "rules": [{"tag": ["ImageType"], "operator": "contains", "value": "LOCALIZER",
                "negate": "yes", "note": "GE writes LOCALIZER"}]},
    {"type": "notGE", "rules": [{"notrule": "GEBYMANUFACTURER", "note": "a reference"}]},
]


def _write(path: Path, rules: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rules, indent=1))
    return path


def test_site_rules_load_with_one_warning_per_shared_id_and_per_unknown_key() -> None:
    ruleset = parse_rules(json.dumps(SITE_RULES), "classifyRules.json")
    assert [r.type for r in ruleset.rules].count("ABCD-DTI") == 3
    assert ruleset.warnings == (
        "id 'GEDTI' is shared by rule 3 (type \"ABCD-DTI\"), rule 4 (type \"ABCD-DTI\") and"
        " rule 5 (type \"ABCD-DTI\"): each applies on its own (a 'rule'/'notrule' reference"
        " to this id would be an error)",
        "unknown key 'Comment' ignored (the rest of each rule applies):"
        " rule 3 (id 'GEDTI', type 'ABCD-DTI')",
        "unknown key 'note' ignored (the rest of each rule applies):"
        " rule 4 (id 'GEDTI', type 'ABCD-DTI'), entry 2; rule 7 (no id, type 'notlocalizer'),"
        " entry 1; rule 8 (no id, type 'notGE'), entry 1",
        "unknown key 'author' ignored (the rest of each rule applies):"
        " rule 5 (id 'GEDTI', type 'ABCD-DTI')",
    )


def test_each_rule_of_a_shared_id_applies() -> None:
    ruleset = parse_rules(json.dumps(SITE_RULES), "classifyRules.json")
    ge = {"Manufacturer": "GE MEDICAL SYSTEMS", "ImageType": "['ORIGINAL', 'PRIMARY']"}
    by_bvalue = ruleset.classify(ge, {(0x43, 0x1039, 0): 1000}, [], []).types
    by_description = ruleset.classify({**ge, "SeriesDescription": "DTI 96dir"},
                                      {(0x43, 0x1039, 0): 0}, [], []).types
    by_sequence = ruleset.classify(ge, {(0x18, 0x24): "epi2"}, [], []).types
    neither = ruleset.classify(ge, {(0x43, 0x1039, 0): 0}, [], []).types
    assert by_bvalue == by_description == by_sequence == ["GE", "ABCD-DTI", "notlocalizer"]
    assert neither == ["GE", "notlocalizer"]


def test_unknown_keys_many_places_are_counted_not_listed() -> None:
    rules = [{"type": f"T{i}", "notes": "x", "rules": [{"tag": ["Modality"], "value": "MR"}]}
             for i in range(10)]
    (warning,) = parse_rules(json.dumps(rules), "site.json").warnings
    assert warning.startswith("unknown key 'notes' ignored")
    assert warning.endswith("rule 3 (no id, type 'T2'); and 7 more")


def test_a_reference_to_a_shared_id_is_an_error_naming_the_rules() -> None:
    rules = [*SITE_RULES, {"type": "X", "rules": [{"notrule": "GEDTI"}]}]
    with pytest.raises(RulesError) as caught:
        parse_rules(json.dumps(rules), "site.json")
    assert caught.value.problems == [
        "rule 9 (no id, type 'X'), entry 1: a reference to id 'GEDTI', which several rules"
        " share: rule 3 (type \"ABCD-DTI\"), rule 4 (type \"ABCD-DTI\") and rule 5"
        " (type \"ABCD-DTI\") (give them distinct ids)",
    ]


def test_strict_refuses_shared_ids_and_unknown_keys() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(json.dumps(SITE_RULES), "site.json", strict=True)
    problems = caught.value.problems
    assert "rule 4 (id 'GEDTI', type 'ABCD-DTI'): duplicate id 'GEDTI' (rule 3 has it)" in problems
    assert "rule 5 (id 'GEDTI', type 'ABCD-DTI'): duplicate id 'GEDTI' (rule 3 has it)" in problems
    assert any(p.startswith("rule 3 (id 'GEDTI', type 'ABCD-DTI'): unknown key 'Comment'")
               for p in problems)
    assert any(p.startswith("rule 8 (no id, type 'notGE'), entry 1: unknown key 'note' in a"
                            " reference") for p in problems)
    assert len(problems) == 2 + 5  # two repeats of the id, five unknown keys


@pytest.mark.parametrize("bad", [
    {"tag": ["Modality"], "operator": "~", "value": "MR"},  # unknown operator
    {"tag": ["Modality"], "value": "("},  # bad regular expression
    {"rule": "NO-SUCH-RULE"},  # a reference to no rule
])
def test_what_changes_meaning_stays_an_error(bad: dict[str, Any]) -> None:
    rules = [*SITE_RULES, {"type": "X", "note": "tolerated", "rules": [bad]}]
    with pytest.raises(RulesError) as caught:
        parse_rules(json.dumps(rules), "site.json")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("rule 9 (no id, type 'X'), entry 1: ")


def test_a_cycle_through_unique_ids_stays_an_error() -> None:
    rules = [*SITE_RULES, {"type": "A", "id": "A", "rules": [{"rule": "B"}]},
             {"type": "B", "id": "B", "rules": [{"rule": "A"}]}]
    with pytest.raises(RulesError, match="reference cycle 'A' -> 'B' -> 'A'"):
        parse_rules(json.dumps(rules), "site.json")


@pytest.mark.usefixtures("restore_logging")
def test_dcmsortd_test_warns_and_strict_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "classifyRules.json", SITE_RULES)
    site = BulkSite(tmp_path / "site")
    assert main(["test", *site.flags(), "--rules", str(path)]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == len(SITE_RULES)
    warnings = [x for x in captured.err.splitlines() if "warning" in x]
    assert len(warnings) == 4 and all(str(path) in x for x in warnings), captured.err
    assert main(["test", *site.flags(), "--rules", str(path), "--strict"]) == 2
    captured = capsys.readouterr()
    assert "duplicate id 'GEDTI'" in captured.err and "unknown key 'Comment'" in captured.err


def _ge_dti(folder: Path) -> Path:
    """GE's real CT file re-stamped as an MR diffusion image of a GE scanner: its b-value
    in (0043,1039) under GE's private creator (no real GE MR file is bundled here)."""
    import pydicom

    path = restamp(pydicom_data("CT_small.dcm"), folder / "ge_dti.dcm",
                   "1.2.826.0.1.3680043.8.498.1414", "1.2.826.0.1.3680043.8.498.1414.1",
                   "1.2.826.0.1.3680043.8.498.1414.1.1", Modality="MR")
    ds = pydicom.dcmread(path)
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS",
                                                                   [1000, 8, 0, 0])
    ds.save_as(path)
    return path


@pytest.mark.e2e
def test_daemon_starts_with_site_rules_logs_the_warnings_and_classifies(tmp_path: Path) -> None:
    site = Site(tmp_path)
    rules = _write(tmp_path / "classifyRules.json", SITE_RULES)
    ge = _ge_dti(site.archive)
    dwi = restamp(shared_dicom("siemens_ve11_dwi_b0.dcm"), site.archive / "dwi.dcm")
    started = site.cli("start", "--no-catch-up", "--rules", str(rules))
    assert started.returncode == 0, started.stderr
    try:
        feed(site.pipe, [line_for(ge), line_for(dwi)])
        wait_linked(site, ge)
        wait_linked(site, dwi)
        more = [*SITE_RULES, {"type": "T", "id": "SIEMENSDFM", "rules": [{"tag": ["X"],
                                                                      "operator": "exist"}]}]
        _write(rules, more)
        os.kill(int(site.pid_file.read_text().split()[0]), signal.SIGHUP)
        wait_for(lambda: "rules reloaded" in site.log_text(), 20, "the reload")
        wait_for(lambda: "id 'SIEMENSDFM' is shared" in site.log_text(), 5, "its warning")
    finally:
        stopped = site.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    log = site.log_text()
    assert log.count(f"{rules}: id 'GEDTI' is shared by rule 3") == 2  # start, SIGHUP
    assert f"{rules}: unknown key 'Comment' ignored" in log
    types = {r["Manufacturer"]: r["ClassifyType"] for r in site.records().values()}
    assert types["GE MEDICAL SYSTEMS"] == ["GE", "ABCD-DTI", "notlocalizer"]
    assert "SIEMENS" in types["SIEMENS"] and "notGE" in types["SIEMENS"]


@pytest.mark.e2e
def test_daemon_run_refuses_a_reference_to_a_shared_id(tmp_path: Path) -> None:
    site = Site(tmp_path)
    rules = _write(tmp_path / "classifyRules.json",
                   [*SITE_RULES, {"type": "X", "rules": [{"rule": "GEDTI"}]}])
    started = site.cli("start", "--no-catch-up", "--rules", str(rules))
    assert started.returncode == 2
    assert "a reference to id 'GEDTI', which several rules share" in started.stderr
    assert not site.pid_file.exists()
    daemon = site.start_run("--no-catch-up", "--rules", str(_write(rules, SITE_RULES)))
    code, out = stop(daemon)
    assert code == 0, out
