"""README's fault table is the suite's: every marked fault test is a row, and every row a test."""
from fault_table import README, markdown, readme_table, rows


def test_readme_fault_table_is_the_suites():
    assert len(rows()) >= 15, "the fault-injection suite lost its rows"
    assert all(r["fault"] and r["outcome"] and r["lost"] for r in rows())
    assert readme_table(README.read_text()) == markdown(), "run: python tests/faults/fault_table.py --write"
