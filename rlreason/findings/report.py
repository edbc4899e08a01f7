"""The full demo's report: report.json (every number), report.md (one section per finding) and the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rlreason.config import dump_json
from rlreason.findings.verdicts import analyse


DECIMALS = {"column steps": 1}  # columns shown with other than 3 decimals


def cell(value, decimals: int = 3) -> str:
    """A table cell: floats to 3 decimals, missing values as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def table(columns: list[str], rows: list[list]) -> list[str]:
    if not columns:
        return []
    places = [DECIMALS.get(c, 3) for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v, d) for v, d in zip(row, places)) + " |" for row in rows]
    return lines


def summary(finding: dict) -> str:
    """The verdict in a few words for the overview table: which checks failed (the section says why)."""
    failed = [c["name"] for c in finding["checks"] if not c["passed"]]
    if finding["verdict"] == "reproduced":
        return "reproduced"
    return f"did not reproduce (failed: {'; '.join(failed)})" if failed else finding["verdict"]


def markdown(report: dict) -> str:
    """report.md from report.json's contents (measurements, findings, seed, seconds, plots)."""
    findings = report["findings"]
    lines = ["# rlreason full demo: the reasoning findings on the synthetic task", "",
             f"Seed {report['seed']}. Command: `{report.get('command', 'rlreason demo --full')}`. "
             f"Every number below is in report.json; the stage pipeline's own report is in stages/report.md.", "",
             "| finding | verdict |", "|---|---|"]
    for f in findings.values():
        lines.append(f"| {f['title']} | {summary(f)} |")
    plots = report.get("plots", {})
    for key, f in findings.items():
        lines += ["", f"## {f['title']}", "", f"**Claim.** {f['claim']}", "", f"**Criteria.** {f['criteria']}", ""]
        body = table(f["columns"], f["rows"])
        if body:
            lines += body + [""]
        lines += [f"- {note}" for note in f["notes"]]
        lines += [f"- check: {c['detail']} -> {'pass' if c['passed'] else 'fail'}" for c in f["checks"]]
        lines += ["", f"**Verdict: {f['verdict']}**"]
        for plot in plots.get(key, []):
            lines += ["", f"![{f['title']}]({plot})"]
    seconds = report.get("seconds") or {}
    if seconds:
        lines += ["", "## Time", "", "| part | seconds |", "|---|---|"]
        lines += [f"| {part} | {value:.0f} |" for part, value in seconds.items()]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> dict:
    """Analyse the measurements, draw the plots, write report.json and report.md; returns the report."""
    from rlreason.findings.plots import draw_all

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["findings"] = analyse(report["measurements"])
    report["plots"] = draw_all(out, report["measurements"])
    dump_json(report, out / "report.json")
    (out / "report.md").write_text(markdown(report))
    return report


def load_report(path: str | Path) -> dict:
    """A report.json written by run_full_demo (to re-derive report.md after changing the criteria)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no report.json at {path}: run `rlreason demo --full` first")
    return json.loads(path.read_text())
