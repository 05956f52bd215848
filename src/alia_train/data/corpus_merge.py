"""`alia-data merge DIR`: the finished tasks of a planned corpus as one data config.

Refuses, in one line, while any task of the plan is unfinished (no completion marker, or a set
that no longer matches its manifest). Then writes, each atomically:

    DIR/data.yaml            every shard set's shards with their language, as a data config
                             (`alia-data mixture DIR/data.yaml`, or copy it into a config dir)
    DIR/data/<NAME>.yaml     the same, so that `--config-dir DIR data=<NAME>` selects it
                             (NAME: DIR's own name)
    DIR/stats.json           per language documents, tokens and bytes; skipped records by
                             reason; per task its sets, time and rate
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import yaml

from alia_train.data.corpus_plan import Plan, PlanError, array_ranges, load_plan
from alia_train.data.corpus_task import unfinished_tasks
from alia_train.data.manifest import read_manifest
from alia_train.fs import write_json_atomic, write_text_atomic
from alia_train.progress import human

MERGE_VERSION = 1
MAX_FIRST = 10  # first places kept per skip reason, as a tokenize run keeps

_HEADER = """\
# Written by `alia-data merge`: every shard set of plan {plan} ({tasks} tasks, {sets} sets).
#   alia-data mixture {path}
#   alia-train --config-dir {root} data={name} ...
"""


@dataclass
class Merged:
    plan: Plan
    name: str  # the data=NAME option under --config-dir DIR
    sources: list[dict]
    counts: dict[str, tuple[int, int]]  # source path -> (documents, tokens)
    stats: dict
    paths: list[str]  # the files written: data.yaml, data/NAME.yaml, stats.json


def merge(root: str) -> Merged:
    plan = load_plan(root)
    unfinished = unfinished_tasks(plan)
    if unfinished:
        raise PlanError(_unfinished_line(plan, unfinished))
    markers = [read_manifest(plan.marker_path(t)) or {} for t in range(len(plan.tasks))]
    outputs = [(lang, o) for m in markers for s in m["sets"] for lang, o in sorted(s["outputs"].items())]
    sources = [{"path": o["path"], "lang": lang} for lang, o in outputs]
    name = config_name(plan.root)
    stats = merged_stats(plan, markers)
    paths = _write(plan, name, sources, stats)
    return Merged(plan, name, sources, {o["path"]: (o["documents"], o["tokens"]) for _, o in outputs}, stats, paths)


def _unfinished_line(plan: Plan, unfinished: dict[int, str]) -> str:
    first, why = next(iter(unfinished.items()))
    which = f"task {first}" if len(unfinished) == 1 else f"tasks {array_ranges(list(unfinished))}; task {first}"
    return (f"{len(unfinished)} of {len(plan.tasks)} task(s) of {plan.root} unfinished ({which}: {why}); "
            "run them first: resubmit the same scripts/slurm/tokenize.sh command (finished tasks are skipped), "
            f"or alia-data tokenize ... --output-dir {plan.root} --task {first}")


def config_name(root: str) -> str:
    """DIR's name as a config option name (data=NAME); not a packaged option's name, which
    `--config-dir DIR data=NAME` would find first."""
    from alia_train.config.load import config_dir

    name = re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.basename(os.path.abspath(root))).strip("_") or "corpus"
    return f"{name}_corpus" if (config_dir() / "data" / f"{name}.yaml").exists() else name


def merged_stats(plan: Plan, markers: list[dict]) -> dict:
    langs: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    totals = {"records": 0, "documents": 0, "tokens": 0, "bytes": 0, "skipped": 0, "blank_lines": 0}
    for s in (s for m in markers for s in m["sets"]):
        for lang, o in s["outputs"].items():
            entry = langs.setdefault(lang, {"documents": 0, "tokens": 0, "bytes": 0, "shards": 0})
            for key in ("documents", "tokens", "bytes"):
                entry[key] += o[key]
            entry["shards"] += 1
        for key in totals:
            totals[key] += s["totals"].get(key, 0)
        for reason, v in s["skipped"].items():
            entry = skipped.setdefault(reason, {"count": 0, "first": []})
            entry["count"] += v["count"]
            entry["first"] += v["first"][: MAX_FIRST - len(entry["first"])]
    return {
        "version": MERGE_VERSION, "plan": plan.id, "tokenizer": plan.request["tokenizer"],
        "options": plan.request["options"],
        "tasks": [_task_summary(m) for m in markers],
        "sets": sum(len(m["sets"]) for m in markers),
        "languages": dict(sorted(langs.items())),
        "totals": totals,
        "skipped": dict(sorted(skipped.items())),
    }


def _task_summary(m: dict) -> dict:
    return {"task": m["task"], "sets": len(m["sets"]), "host": m.get("host"), "slurm_job": m.get("slurm_job"),
            "elapsed_s": m.get("elapsed_s"), "sets_encoded": m.get("sets_encoded"),
            "text_bytes_per_s": m.get("text_bytes_per_s"),
            "documents": sum(s["totals"]["documents"] for s in m["sets"])}


def _write(plan: Plan, name: str, sources: list[dict], stats: dict) -> list[str]:
    config = {"tokenizer": plan.request["tokenizer"]["path"], "use_sample": False, "sources": sources}
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True, width=10**6)
    top = os.path.join(plan.root, "data.yaml")
    group = os.path.join(plan.root, "data", f"{name}.yaml")
    header = _HEADER.format(plan=plan.id, tasks=len(plan.tasks), sets=stats["sets"], path=top,
                            root=plan.root, name=name)
    os.makedirs(os.path.dirname(group), exist_ok=True)
    write_text_atomic(group, header + body)
    write_text_atomic(top, header + body)
    path = os.path.join(plan.root, "stats.json")
    write_json_atomic(path, stats)
    return [top, group, path]


def format_summary(m: Merged) -> str:
    """Per language documents, tokens and bytes; tasks' times and rates; skipped records."""
    st = m.stats
    lines = [f"{'lang':<8}{'documents':>14}{'tokens':>18}{'bytes':>18}{'shards':>8}"]
    for lang, o in st["languages"].items():
        lines.append(f"{lang:<8}{o['documents']:>14,}{o['tokens']:>18,}{o['bytes']:>18,}{o['shards']:>8}")
    t = st["totals"]
    lines.append(f"{'total':<8}{t['documents']:>14,}{t['tokens']:>18,}{t['bytes']:>18,}{len(m.sources):>8}")
    timed = [x for x in st["tasks"] if x["elapsed_s"] is not None]
    if timed:
        slow = max(timed, key=lambda x: x["elapsed_s"])
        rates = [x["text_bytes_per_s"] for x in timed if x["text_bytes_per_s"]]
        lines.append(f"{len(st['tasks'])} tasks, {st['sets']} shard sets; the slowest, task {slow['task']}, "
                     f"took {slow['elapsed_s']:.1f} s"
                     + (f"; {human(sum(rates) / len(rates), 'B/s')} of text per task on average" if rates else ""))
    for reason, s in st["skipped"].items():
        lines.append(f"skipped {s['count']:,} ({reason.replace('_', ' ')}), first at {', '.join(s['first'][:3])}")
    if t.get("blank_lines"):
        lines.append(f"{t['blank_lines']:,} blank lines (not records)")
    return "\n".join(lines)
