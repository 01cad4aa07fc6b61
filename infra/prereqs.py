"""What `make dev` and `make test` need from the machine, checked before anything is installed or started.

    python3 infra/prereqs.py dev|test

Each missing piece is named with the command that fixes it, and the exit code is 1. Standard library only,
and written so that an older `python3` (3.7 on) can run it far enough to say it is too old.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping

MIN_PYTHON = (3, 11)


def problems(target: str, environ: Mapping[str, str] | None = None,
             which: Callable[[str], str | None] = shutil.which, version: tuple[int, int] | None = None) -> list[str]:
    """The missing prerequisites of `make <target>`, as sentences that name the fix."""
    environ = os.environ if environ is None else environ
    version = (sys.version_info[0], sys.version_info[1]) if version is None else version
    found: list[str] = []
    if tuple(version) < MIN_PYTHON:
        needed, have = f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}", f"{version[0]}.{version[1]}"
        found.append(f"Python {needed} or newer is needed (this python3 is {have}): install it, e.g. "
                     "`apt-get install python3.11 python3.11-venv`, or put a newer python3 first on PATH")
    else:
        try:
            import ensurepip  # noqa: F401 - Debian ships venv without it in a separate package
            import venv  # noqa: F401
        except ImportError:
            found.append("python3 cannot create virtual environments (Debian/Ubuntu split this out): "
                         "`apt-get install python3-venv`")
    for tool, package in (("node", "nodejs"), ("npm", "npm")):
        if which(tool) is None:
            found.append(f"`{tool}` is needed to build the demo page (@pipecat-ai/client-js): "
                         f"`apt-get install {package}`")
    if target == "test":
        chromium = environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
        if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
            found.append(f"the browser test drives Chromium at {chromium} (set CHROMIUM_PATH to use another): "
                         "`apt-get install chromium`")
    if which("git") is None:
        found.append("`git` is needed (the tests check that running the project changes no tracked file): "
                     "`apt-get install git`")
    return found


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "dev"
    if target not in ("dev", "test"):
        print("usage: python3 infra/prereqs.py dev|test", file=sys.stderr)
        return 2
    found = problems(target)
    for line in found:
        print(f"[make {target}] missing: {line}", file=sys.stderr)
    if found:
        print(f"[make {target}] install the above, then run `make {target}` again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
