"""The manifest of a shard set: `PREFIX.stats.json`, the one file readers trust.

`alia-data tokenize` publishes a shard set in one step as far as readers are concerned: the
stats file names every file of the set with its size and SHA-256 ("files"), and it is renamed
into place last. Before the first shard is renamed, the stats file is replaced by a
"publishing" marker naming the files about to change, so a run killed half-way leaves a
marker (never an old manifest vouching for new files), and readers refuse the set.

Readers check what the manifest vouches for: sizes and modification times always (one stat
per file, at every training start), SHA-256 when asked (`deep`: "up to date", `alia-data
verify`). Hashing a 10 TB corpus at every start would take hours; the modification time
changes with any write through the file system, so together with the size it catches a shard
changed in place at the cost of the stat. Not caught by it: a change that restores the old
mtime (touch -d, or bit rot below the file system); the SHA-256 checks catch those. A copy that
does not keep mtimes (cp without -p) looks changed: `alia-data verify` hashes the files and,
when they match, records their new times (`record_times`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from alia_train.data.tokenizer import file_sha256
from alia_train.fs import write_json_atomic

MANIFEST_VERSION = 2
PUBLISHING = "publishing"


class ManifestError(ValueError):
    """A shard set that its manifest does not vouch for; the message names the file."""


def stats_path(prefix: str) -> str:
    return f"{prefix}.stats.json"


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str
    mtime_ns: int

    def as_json(self) -> dict:
        return {"bytes": self.bytes, "sha256": self.sha256, "mtime_ns": self.mtime_ns}


def describe(path: str, sha256: str | None = None) -> FileEntry:
    """Size, SHA-256 and modification time of a written, closed file (`sha256` when the writer
    hashed it as it went). A rename keeps the time."""
    st = os.stat(path)
    return FileEntry(st.st_size, sha256 or file_sha256(path), st.st_mtime_ns)


def read_manifest(path: str) -> dict | None:
    """The parsed stats file at `path`, or None when there is none (or it is not JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_publishing(manifest: dict) -> bool:
    return manifest.get("state") == PUBLISHING


def publishing_marker(names: list[str]) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "state": PUBLISHING,
        "note": "alia-data tokenize was stopped while publishing these files; run it again",
        "files": {name: None for name in sorted(set(names))},
    }


def file_problem(directory: str, name: str, entry: dict | None, deep: bool) -> str | None:
    """Why `directory/name` is not the file `entry` describes, or None when it is."""
    path = os.path.join(directory, name)
    if not isinstance(entry, dict):
        return f"{path}: not vouched for by the manifest"
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}: missing"
    if st.st_size != entry.get("bytes"):
        return f"{path}: {st.st_size} bytes, the manifest says {entry.get('bytes')}"
    if deep:
        same = file_sha256(path) == entry.get("sha256")
        return None if same else f"{path}: content differs from the manifest (sha256)"
    if entry.get("mtime_ns") not in (None, st.st_mtime_ns):  # manifests before mtimes: size only
        return f"{path}: modified after the manifest was written (same size, another modification time)"
    return None


def manifest_problem(path: str, manifest: dict, deep: bool, only: list[str] | None = None) -> str | None:
    """Why the files named by the finished manifest at `path` cannot be trusted, or None."""
    if is_publishing(manifest):
        return f"{path}: a publish was interrupted (alia-data tokenize killed half-way)"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return f"{path}: no file manifest (written by an older alia-data)"
    directory = os.path.dirname(os.path.abspath(path))
    for name in only if only is not None else sorted(files):
        problem = file_problem(directory, name, files.get(name), deep)
        if problem is not None:
            return problem
    return None


def record_times(path: str, manifest: dict) -> bool:
    """Record the files' current modification times in the manifest at `path` (after a `deep`
    check found their content unchanged: copied, or touched); whether anything changed."""
    directory = os.path.dirname(os.path.abspath(path))
    changed = False
    for name, entry in manifest.get("files", {}).items():
        mtime = os.stat(os.path.join(directory, name)).st_mtime_ns
        changed |= entry.get("mtime_ns") != mtime
        entry["mtime_ns"] = mtime
    if changed:
        write_json_atomic(path, manifest)
    return changed


def find_manifest(shard: str) -> tuple[str, dict] | None:
    """The stats file that names the shard `PREFIX_<lang>` (.bin), searched at every '_'.

    Languages may contain '_', so `a_b_c` is looked up as `a_b.stats.json` then `a.stats.json`.
    """
    directory, base = os.path.split(os.path.abspath(shard))
    name = base + ".bin"
    cut = len(base)
    while (cut := base.rfind("_", 0, cut)) > 0:
        path = os.path.join(directory, base[:cut] + ".stats.json")
        manifest = read_manifest(path)
        if manifest is not None and name in (manifest.get("files") or {}):
            return path, manifest
        if manifest is not None and _lists_output(manifest, shard):
            return path, manifest  # an older stats file: outputs without a file manifest
    return None


def _lists_output(manifest: dict, shard: str) -> bool:
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict):
        return False
    base = os.path.basename(shard)
    return any(isinstance(o, dict) and os.path.basename(str(o.get("path", ""))) == base for o in outputs.values())


def content_identity(shard: str) -> str:
    """A string that changes whenever the dataset at `shard` (.bin/.idx) is rewritten: the
    SHA-256 its manifest records, else sizes and modification times (shards from other tools)."""
    found = find_manifest(shard)
    base = os.path.basename(shard)
    if found is not None:
        files = found[1].get("files") or {}
        entries = [files.get(f"{base}.bin"), files.get(f"{base}.idx")]
        if all(isinstance(e, dict) and e.get("sha256") for e in entries):
            return f"{shard}:" + ":".join(e["sha256"] for e in entries)
    parts = [shard]
    for path in (f"{shard}.bin", f"{shard}.idx"):
        st = os.stat(path)
        parts += [str(st.st_size), str(st.st_mtime_ns)]
    return ":".join(parts)
