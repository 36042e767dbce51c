"""The fault-injection suite: every test here injects one fault and checks what the project did.

Each test carries `@pytest.mark.fault(fault=..., outcome=..., lost=...)`: the row it contributes to
README's fault table. `python tests/faults/table.py` prints the table from these markers and the
last run's results (`tests/faults/.results.json`, written at the end of every run of this folder);
test_readme checks that README's table holds exactly these rows, each with a passing test.
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
