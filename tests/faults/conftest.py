"""The fault-injection suite: every test here injects one fault and checks what the project did.

Each test carries `@pytest.mark.fault(fault=..., outcome=..., lost=...)`: the row it contributes to
README's fault table (fault_table.py renders it; test_table.py checks README holds exactly these
rows). The results of each run are kept in `.results.json` for `python tests/faults/fault_table.py`.

"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).parent / ".results.json"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "fault(fault, outcome, lost): a row of README's fault table")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    mark = item.get_closest_marker("fault")
    if mark is None or report.when != "call" and not (report.when == "setup" and report.skipped):
        return
    item.config.stash.setdefault(_ROWS, {})[item.nodeid] = {**mark.kwargs, "result": report.outcome}


_ROWS = pytest.StashKey[dict]()


def pytest_sessionfinish(session, exitstatus) -> None:
    rows = session.config.stash.get(_ROWS, {})
    if rows:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        RESULTS.write_text(json.dumps({**old, **rows}, indent=1, sort_keys=True) + "\n")
