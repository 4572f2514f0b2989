"""The one table of the GPU check, in Markdown, from the merged rows.

The printed table folds the ``ops_exact`` cases into one row per op ("24 of 24
cases identical"), listing any failed case on its own row; ``table.md`` has
every case too (``full=True``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _mark(ok: Any) -> str:
    return {True: "yes", False: "**NO**", None: ""}[ok if ok in (True, False) else None]


#: the ops whose exactness cases are folded (the first word of a case's item)
OPS = ("box_iou", "nms", "batched_nms", "ssd_decode", "ssd_match", "ssd_postprocess")


def fold_exact(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """ops_exact case rows -> one row per op where they were, failed cases kept."""
    out: List[Dict[str, Any]] = []
    groups: "OrderedDict[str, List[Dict[str, Any]]]" = OrderedDict()
    anchor = None
    for row in rows:
        if row["stage"] == "ops_exact" and row["item"].split(" ", 1)[0] in OPS:
            anchor = len(out) if anchor is None else anchor
            groups.setdefault(row["item"].split(" ", 1)[0], []).append(row)
        else:
            out.append(row)
    folded = []
    for op, cases in groups.items():
        good = sum(1 for c in cases if c["ok"] is True)
        folded.append({"stage": "ops_exact", "item": f"{op} ({len(cases)} cases)",
                       "result": f"{good} of {len(cases)} identical", "reference": cases[0]["reference"],
                       "ok": good == len(cases), "data": {}})
        folded += [c for c in cases if c["ok"] is not True]
    return out if anchor is None else out[:anchor] + folded + out[anchor:]


def render_table(payload: Dict[str, Any], full: bool = False) -> str:
    rows = payload.get("rows", [])
    shown = rows if full else fold_exact(rows)
    env = {r["item"]: r["result"] for r in rows if r["stage"] == "env"}
    lines = [f"## mtlkit GPU check: mode {payload.get('mode')}, {payload.get('date')}, {payload.get('state')}",
             ""]
    if env:
        lines.append("Machine: " + "; ".join(f"{k}: {env[k]}" for k in ("GPU", "python / torch", "build of mtlkit._C")
                                            if k in env))
        lines.append("")
    lines += ["| stage | item | result | reference | ok |", "| --- | --- | --- | --- | --- |"]
    for r in shown:
        lines.append(f"| {r['stage']} | {_cell(r['item'])} | {_cell(r['result'])} | {_cell(r['reference'])} | "
                     f"{_mark(r.get('ok'))} |")
    timings = payload.get("timings", {})
    if timings:
        lines += ["", "Stages: " + ", ".join(f"{k} {v.get('seconds')} s ({v.get('status')})"
                                            for k, v in timings.items())
                  + f"; total {payload.get('seconds')} s"]
    failed = sum(1 for r in rows if r.get("ok") is False)
    lines.append(f"Failed rows: {failed}")
    return "\n".join(lines) + "\n"
