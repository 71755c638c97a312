"""Print pip constraints that pin sccr's dependencies to the floors pyproject.toml declares.

    python ci/min_constraints.py [EXTRA ...] > constraints.txt

Every ``name>=X`` of ``[project].dependencies`` (and of the named extras) becomes ``name==X``, so
that ``pip install -c constraints.txt -e ".[test]"`` installs the lowest versions sccr claims to
support; everything else (transitive dependencies, test tools) resolves as usual. Used by
``make test-min``; the floors live in one place, pyproject.toml.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def floors(requirements: list[str]) -> list[str]:
    out = []
    for requirement in requirements:
        name, _extras, spec = REQUIREMENT.match(requirement).groups()
        if name == "sccr":  # an extra that includes another extra
            continue
        lower = [s.strip()[2:].strip() for s in spec.split(";")[0].split(",") if s.strip().startswith(">=")]
        if not lower:
            raise SystemExit(f"ci/min_constraints.py: {requirement!r} declares no floor (>=)")
        out.append(f"{name}=={lower[0]}")
    return out


def main(extras: list[str]) -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(floors(requirements)))


if __name__ == "__main__":
    main(sys.argv[1:])
