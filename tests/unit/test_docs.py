"""docs/configuration.md lists every environment variable the code reads (docs that match behaviour), and the
README stays a front door."""

from __future__ import annotations

import re
from pathlib import Path

from chalicelib.platform.settings import ENV

ROOT = Path(__file__).resolve().parents[2]
READ = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")


def variables_read() -> set[str]:
    names = set(ENV)
    for folder in ("chalicelib", "infra"):
        for source in (ROOT / folder).rglob("*.py"):
            names.update(READ.findall(source.read_text()))
    names.update(READ.findall((ROOT / "app.py").read_text()))
    return names


def test_every_environment_variable_is_in_the_configuration_reference() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text() + (ROOT / "docs" / "local-development.md").read_text()
    found = variables_read()
    assert {"PCC_AGENTS", "LOCAL_SCHEDULE_SECONDS", "API_THROTTLE_RATE", "COGNITO_USER_POOL_ARN"} <= found
    missing = sorted(name for name in found if f"`{name}`" not in readme)
    assert not missing, f"docs/configuration.md does not mention: {missing}"


def test_the_readme_is_a_front_door_whose_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024, len(readme.encode())
    assert "```mermaid" in readme and "make dev" in readme and "make test" in readme
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([a-z-]+\.md)", page.read_text()):
            assert (ROOT / "docs" / target).is_file(), (page.name, target)


def test_nothing_points_outside_the_repository() -> None:
    """A person who clones the repository has only the repository: no file may send them to a path above it."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    outside = re.compile(r"\.\./(?:\.\./)*shared/|REFERENCE\.md")
    offenders = [name for name in tracked.split()
                 if (ROOT / name).is_file() and not name.endswith(("package-lock.json",))
                 and outside.search((ROOT / name).read_text(errors="replace"))
                 and name != "tests/unit/test_docs.py"]
    assert not offenders, offenders


def test_the_queue_helper_in_the_docs_is_the_one_the_demo_runs() -> None:
    """docs/capacity-queue.md's startWithQueue is the demo's (which the browser test drives), letter for letter."""
    demo = (ROOT / "infra" / "demo" / "src" / "demo.js").read_text()
    start = demo.index("// The polling helper:")
    helper = demo[start:demo.index("\n}\n", demo.index("export async function startWithQueue")) + 3]
    documented = (ROOT / "docs" / "capacity-queue.md").read_text()
    assert helper.replace("export async function", "async function") in documented


def _readme_paths() -> set[str]:
    """The paths of the README's API table, parameters as `{}`, `{a,b}` groups expanded, queries left out."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## The API"):readme.index("## What it promises")]
    paths = set()
    for span in re.findall(r"`(?:[A-Z]+(?:/[A-Z]+)* )?(/[^`\s]*)`", table):
        span = re.sub(r"\[\?[^\]]*\]|\?.*$", "", span)
        group = re.search(r"\{([a-z]+(?:,[a-z]+)+)\}", span)
        for choice in group[1].split(",") if group else [None]:
            path = span.replace(group[0], choice) if group and choice else span
            paths.add(re.sub(r"\{[^}]*\}", "{}", path))
    return paths


def test_every_route_is_in_the_readmes_api_table() -> None:
    from app import app

    documented = _readme_paths()
    for route in app.routes:
        path = re.sub(r"\{[^}]*\}", "{}", route)
        if route.startswith("/sessions/{session_id}/{p"):  # the session API proxy, any depth
            path = "/sessions/{}/{}"
        assert path in documented, (route, sorted(documented))
