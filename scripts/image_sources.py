"""Copy what docker/Dockerfile's `build` stage COPYs into a folder, and print its project spec.

    python3 scripts/image_sources.py DEST      # prints e.g. "." or ".[serve]"

scripts/smoke_install.sh uses it so that its bare install is the image's: the same files (a
package the Dockerfile forgets to COPY fails there too) and the same `pip install` spec. Only
the standard library: it runs before any venv exists. COPY follows Docker's rules for the forms
the Dockerfile uses: a folder's contents go into the target, files into a target ending in "/".
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = "build"


def instructions(path: Path) -> list[tuple[str, list[str]]]:
    """(KEYWORD, words) per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        out.append((keyword.upper(), shlex.split(rest)))
        pending = ""
    return out


def main(dest: Path) -> str:
    in_stage, specs = False, []
    for keyword, words in instructions(REPO / "docker" / "Dockerfile"):
        if keyword == "FROM":
            in_stage = len(words) >= 3 and words[-2].upper() == "AS" and words[-1] == STAGE
        elif not in_stage:
            continue
        elif keyword == "COPY" and not any(w.startswith("--from") for w in words):
            *sources, target = [w for w in words if not w.startswith("--")]
            for source in sources:
                src, to = REPO / source, dest / target
                if src.is_dir():
                    shutil.copytree(src, to, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    if target.endswith("/") or len(sources) > 1:
                        to = to / src.name
                    to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, to)
        elif keyword == "RUN" and "install" in words and not any(w.startswith("torch==") for w in words):
            specs.append(words[-1])
    if len(specs) != 1 or not specs[0].startswith("."):
        sys.exit(f"image_sources: expected one `pip install .[extras]` in stage {STAGE!r}, found {specs}")
    return specs[0]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(main(Path(sys.argv[1])))
