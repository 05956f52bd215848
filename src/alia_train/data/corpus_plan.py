"""A corpus tokenized by N tasks: the split, and the plan every task and the merge follow.

`alia-data tokenize --output-dir DIR --tasks N` writes DIR/plan.json once: the inputs, the
tokenizer, the options, and for each task its shard sets and the input files of each.

* The split is by size on disk, deterministic: inputs sorted by (size descending, path), each
  given to the task with the fewest bytes so far (ties: the lowest index), i.e. greedy
  longest-processing-time, within 4/3 of the best possible largest task. The listing order of
  the inputs plays no part. A file is never split across tasks.
* A task's files (sorted by path) are cut, in order, into shard sets of at most `set_bytes`
  (a larger file is a set of its own). A set is one `alia-data tokenize` output prefix,
  published atomically: a task cut short loses at most the set it was writing.
* The plan's id is a hash of the request (inputs with size and mtime, tokenizer SHA-256,
  options, N, set size). Its sets live in DIR/shards/<id>/, so a plan replaced with --force
  never mixes its sets with the old plan's.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import time
from dataclasses import dataclass

from alia_train.data.manifest import read_manifest
from alia_train.data.readers import InputFile, discover_inputs
from alia_train.data.tokenize_request import TokenizeOptions, check_request, input_languages
from alia_train.data.tokenizer import load_tokenizer
from alia_train.fs import make_writable_parent, write_json_atomic

PLAN_VERSION = 1
PLAN_FILE = "plan.json"
DEFAULT_SET_BYTES = 10_000_000_000
# The options that change what a set holds (as tokenize's fingerprint); workers, --strict and
# progress do not.
PLANNED_OPTIONS = ("text_key", "lang_key", "lang", "lang_from_path", "max_chars")


class PlanError(ValueError):
    """A plan that cannot be made or followed; the message says what to do."""


@dataclass(frozen=True)
class PlannedSet:
    name: str  # task00001-set0002: the file-name prefix of its shards
    inputs: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class Plan:
    root: str  # DIR, absolute
    id: str
    request: dict
    tasks: tuple[tuple[PlannedSet, ...], ...]

    @property
    def shard_dir(self) -> str:
        return os.path.join(self.root, "shards", self.id)

    def prefix(self, s: PlannedSet) -> str:
        return os.path.join(self.shard_dir, s.name)

    def marker_path(self, task: int) -> str:
        return os.path.join(self.shard_dir, f"task{task:05d}.done.json")

    def options(self, **run: object) -> TokenizeOptions:
        """The tokenize options of this plan's sets (inputs and prefix set per set)."""
        picked = {k: self.request["options"][k] for k in PLANNED_OPTIONS}
        return TokenizeOptions(inputs=[], tokenizer=self.request["tokenizer"]["path"], output_prefix="",
                               **picked, **run)  # type: ignore[arg-type]

    def to_json(self) -> dict:
        tasks = [{"bytes": sum(s.bytes for s in sets),
                  "sets": [{"name": s.name, "bytes": s.bytes, "inputs": list(s.inputs)} for s in sets]}
                 for sets in self.tasks]
        return {"version": PLAN_VERSION, "id": self.id, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                "request": self.request, "tasks": tasks}


def split_by_size(sizes: dict[str, int], n: int) -> list[list[str]]:
    """`n` groups of the paths in `sizes`, balanced by size (see the module's docstring)."""
    heap = [(0, i) for i in range(n)]  # (bytes so far, task): the lightest task first
    groups: list[list[str]] = [[] for _ in range(n)]
    for path in sorted(sizes, key=lambda p: (-sizes[p], p)):
        total, i = heapq.heappop(heap)
        groups[i].append(path)
        heapq.heappush(heap, (total + sizes[path], i))
    return [sorted(g) for g in groups]


def cut_sets(paths: list[str], sizes: dict[str, int], set_bytes: int) -> list[list[str]]:
    """Consecutive runs of `paths` of at most `set_bytes` each (a larger file alone)."""
    sets: list[list[str]] = []
    room = 0
    for p in paths:
        if not sets or sizes[p] > room:
            sets.append([])
            room = set_bytes
        sets[-1].append(p)
        room -= sizes[p]
    return sets


def corpus_request(opts: TokenizeOptions, tasks: int, set_bytes: int, check_fields: bool) -> dict:
    """What defines the work: inputs (sorted by path), tokenizer, options, tasks, set size.

    `check_fields`: also read the first records of every input (when planning; a task only
    needs the request to compare it with the plan, its sets check their own inputs)."""
    if tasks < 1:
        raise PlanError(f"--tasks {tasks}: must be at least 1")
    if set_bytes < 1:
        raise PlanError(f"--set-bytes {set_bytes}: must be positive")
    if check_fields:
        req = check_request(opts)
        inputs, tok = req.inputs, req.tokenizer
    else:
        inputs, tok = discover_inputs(opts.inputs), load_tokenizer(opts.tokenizer)
        input_languages(inputs, opts)  # a path without a language fails here, not in a set
    if tasks > len(inputs):
        raise PlanError(f"--tasks {tasks}: only {len(inputs)} input file(s), and a file is never split "
                        f"across tasks; use --tasks {len(inputs)} or fewer")
    return {
        "inputs": [_input_record(i) for i in sorted(inputs, key=lambda i: i.path)],
        "tokenizer": {"path": tok.path, "sha256": tok.sha256},
        "options": {k: getattr(opts, k) for k in PLANNED_OPTIONS},
        "tasks": tasks,
        "set_bytes": set_bytes,
    }


def _input_record(item: InputFile) -> dict:
    return {"path": item.path, "size": item.size, "mtime_ns": os.stat(item.path).st_mtime_ns}


def plan_id(request: dict) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def make_plan(root: str, request: dict) -> Plan:
    sizes = {i["path"]: i["size"] for i in request["inputs"]}
    tasks = []
    for t, group in enumerate(split_by_size(sizes, request["tasks"])):
        sets = cut_sets(group, sizes, request["set_bytes"])
        tasks.append(tuple(PlannedSet(f"task{t:05d}-set{j:04d}", tuple(s), sum(sizes[p] for p in s))
                           for j, s in enumerate(sets)))
    return Plan(os.path.abspath(root), plan_id(request), request, tuple(tasks))


def plan_path(root: str) -> str:
    return os.path.join(os.path.abspath(root), PLAN_FILE)


def load_plan(root: str) -> Plan:
    """The plan in DIR (re-derived from its request, which must hash to its id)."""
    path = plan_path(root)
    if not os.path.isdir(root):
        raise PlanError(f"{root}: no such directory; give the --output-dir of alia-data tokenize")
    data = read_manifest(path)  # any JSON object, or None
    if data is None:
        raise PlanError(f"{path}: no plan; make one with alia-data tokenize --output-dir {root} --tasks N --plan "
                        "(scripts/slurm/tokenize.sh does)")
    request = data.get("request")
    if not isinstance(request, dict) or data.get("id") != plan_id(request):
        raise PlanError(f"{path}: damaged (its request does not match its id); make the plan again with --force")
    return make_plan(root, request)


def ensure_plan(root: str, request: dict, replace: bool, log) -> Plan:
    """The plan for `request` in DIR: the one there when it is the same request, else a new
    one (written), else an error naming what differs (or, with `replace`, the new one)."""
    plan = make_plan(root, request)
    path = plan_path(root)
    old = read_manifest(path)
    if old is not None and old.get("id") == plan.id:
        return plan
    if old is not None and not replace:
        what = differences(old.get("request"), request)
        raise PlanError(f"{path} is the plan of another request ({what}); use another --output-dir, or "
                        "--force with --plan to replace the plan (its finished sets are kept, unused)")
    make_writable_parent(path, "--output-dir")
    if old is not None:
        log(f"replacing the plan {old.get('id')} ({differences(old.get('request'), request)}); "
            f"its sets in {os.path.join(plan.root, 'shards', str(old.get('id')))} are no longer used")
    os.makedirs(plan.shard_dir, exist_ok=True)
    write_json_atomic(path, plan.to_json())
    return plan


def array_ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5": task numbers as Slurm's --array takes them."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def differences(old: object, new: dict) -> str:
    """What differs between two requests, in a few words."""
    if not isinstance(old, dict):
        return "unreadable"
    out = [f"{key} {old.get(key)} -> {new[key]}" for key in ("tasks", "set_bytes") if old.get(key) != new[key]]
    if (old.get("tokenizer") or {}).get("sha256") != new["tokenizer"]["sha256"]:
        out.append("another tokenizer")
    for k, v in new["options"].items():
        if (old.get("options") or {}).get(k) != v:
            out.append(f"{k} {(old.get('options') or {}).get(k)!r} -> {v!r}")
    before = {i.get("path"): i for i in old.get("inputs") or [] if isinstance(i, dict)}
    after = {i["path"]: i for i in new["inputs"]}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(after) & set(before) if before[p] != after[p])
    for word, paths in (("added", added), ("removed", removed), ("changed", changed)):
        if paths:
            out.append(f"{len(paths)} input(s) {word}, e.g. {paths[0]}")
    return "; ".join(out) or "an older plan format"
