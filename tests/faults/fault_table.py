"""README's fault table, produced from the fault-injection suite: one row per test in
tests/faults/ marked `@pytest.mark.fault(fault=..., outcome=..., lost=...)`, in file order.

    python tests/faults/fault_table.py            # print the table (with the last run's results)
    python tests/faults/fault_table.py --write    # rewrite README's table between its markers

test_table.py fails when README's table and the suite's markers disagree.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent.parent / "README.md"
START, END = "<!-- fault table: python tests/faults/fault_table.py --write -->", "<!-- end of fault table -->"
COLUMNS = ("fault", "outcome", "lost")


def _is_fault_mark(node: ast.AST) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return isinstance(f, ast.Attribute) and f.attr == "fault" and isinstance(f.value, ast.Attribute) \
        and f.value.attr == "mark"


def rows() -> list[dict]:
    """Every marked test: {test, fault, outcome, lost} (values are string literals)."""
    out = []
    for path in sorted(HERE.glob("test_*.py")):
        for fn in ast.parse(path.read_text()).body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            for deco in fn.decorator_list:
                if _is_fault_mark(deco):
                    kw = {k.arg: ast.literal_eval(k.value) for k in deco.keywords}
                    out.append({"test": f"{path.name}::{fn.name}", **{c: kw[c] for c in COLUMNS}})
    return out


def markdown(with_results: bool = False) -> str:
    results = {}
    if with_results and (HERE / ".results.json").exists():
        for node, r in json.loads((HERE / ".results.json").read_text()).items():
            results[node.split("tests/faults/")[-1].split("[")[0]] = r["result"]
    head = ["Fault injected", "What the project did", "Lost"] + (["Last run"] if with_results else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows():
        cells = [r[c] for c in COLUMNS] + ([results.get(r["test"], "not run")] if with_results else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_table(text: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no fault table between {START!r} and {END!r}")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write() -> None:
    text = README.read_text()
    readme_table(text)  # both markers present
    head, rest = text.split(START, 1)
    README.write_text(f"{head}{START}\n{markdown()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    write() if "--write" in sys.argv else print(markdown(with_results=True))
