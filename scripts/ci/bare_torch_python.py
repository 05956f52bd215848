"""Make a Python that has torch and numpy only, as a bare PyTorch GPU image gives, from this
venv's own torch: the dress rehearsal of the GPU check runs in it (scripts/gpu_check.sh
--rehearse), so that whatever else the check imports must come from the wheels in .whl/.

    .venv/bin/python scripts/ci/bare_torch_python.py DIR     # prints DIR/bin/python

DIR becomes a venv without site packages (pip included) whose site-packages links, read-only,
to the installed files of torch, numpy and what they require (sympy, triton, the nvidia
libraries, ...): nothing is copied or downloaded, so it takes a second, not a 3 GB install.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker

ROOTS = ("torch", "numpy")


def closure(roots=ROOTS) -> list[metadata.Distribution]:
    """The installed distributions of `roots` and everything they require (extras left out)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in found:
            continue
        found[name] = dist = metadata.distribution(name)
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if marker and not Marker(marker).evaluate({"extra": ""}):
                continue
            todo.append(re.split(r"[\s<>=!~\[(;]", spec.strip(), maxsplit=1)[0])
    return list(found.values())


def top_level_paths(dist: metadata.Distribution) -> set[Path]:
    """The entries of site-packages a distribution installed (packages, modules, its
    .dist-info), from its RECORD."""
    site = Path(dist.locate_file(""))
    tops = set()
    for file in dist.files or []:
        first = Path(file).parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            tops.add(site / first)
    return tops


def make(target: Path) -> Path:
    python = target / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    for dist in closure():
        for path in top_level_paths(dist):
            link = purelib / path.name
            if path.exists() and not link.exists():
                link.symlink_to(path)
    return python


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make(Path(sys.argv[1]).resolve()))
