"""chalicelib's house rules, checked on the source: packages by domain, each stating its rule, imports only
downwards, telephony imported by app.py alone, DynamoDB keys built in store/ (and platform's utilities)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "chalicelib"
# Lowest first: a package may import only packages before it (and itself).
LAYERS = ["platform", "api", "pcc", "store", "start", "sessions", "guests", "operations", "upkeep", "telephony",
          "events"]


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in LIB.rglob("*.py")
            if "__pycache__" not in p.parts}


def imported(path: Path, name: str) -> set[str]:
    """The chalicelib modules or packages `path` (module `name`) imports, as dotted names."""
    found: set[str] = set()
    package = name.rsplit(".", 1)[0] if not path.name == "__init__.py" else name
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("chalicelib")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("chalicelib"):
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return found


def package_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_chalicelib_is_packages_each_stating_its_rule() -> None:
    top = sorted(p.name for p in LIB.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py"], top  # no module at the top level
    packages = sorted(p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert packages == sorted(LAYERS)
    for name in LAYERS:
        doc = ast.get_docstring(ast.parse((LIB / name / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"chalicelib/{name}/__init__.py states no rule"


def test_packages_import_only_downwards_and_platform_knows_no_domain() -> None:
    upward = []
    for name, path in modules().items():
        own = package_of(name)
        if own is None:
            continue
        for target in imported(path, name):
            other = package_of(target)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_nothing_but_app_imports_telephony() -> None:
    offenders = [name for name, path in modules().items() if package_of(name) != "telephony"
                 and any(package_of(t) == "telephony" for t in imported(path, name))]
    for folder in ("infra", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" not in path.parts and "chalicelib.telephony" in path.read_text():
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_dynamodb_keys_are_built_in_store_and_platform_only() -> None:
    """Domain packages pass records and ids to store/; only it (and platform's own utilities: rate limits,
    idempotency) writes `"PK"` / `"SK"` keys."""
    offenders = [name for name, path in modules().items() if package_of(name) not in ("store", "platform")
                 and ('"PK"' in path.read_text() or '"SK"' in path.read_text())]
    assert not offenders, offenders


def test_a_cold_start_imports_neither_telephony_nor_event_delivery() -> None:
    """The API function's cold start (bench/cold_start.py) pays only for what /start needs: telephony routes, the
    guest route and the events function import their packages when first called."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "STAGE": "local", "AUTH_MODE": "insecure-dev", "PCC_AGENTS": "a", "PCC_SECRET_ID": "s",
           "TABLE_NAME": "t"}
    code = "import sys, app; print(sorted(m for m in sys.modules if m.startswith('chalicelib.')))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                            text=True).stdout
    assert "chalicelib.start.service" in loaded  # the probe sees what app imports
    assert "chalicelib.telephony" not in loaded and "chalicelib.events" not in loaded, loaded
    assert "chalicelib.guests" not in loaded and "chalicelib.operations" not in loaded, loaded


# The capacity queue's rooms inside start/ (lowest first): each may import only the rooms before it. The pacing
# rule is pure (no AWS, no HTTP, no settings: a clock and the answers it is told).
QUEUE_ROOMS = ["chalicelib.start.pacing", "chalicelib.start.lifecycle", "chalicelib.start.queued_start",
               "chalicelib.start.attempt", "chalicelib.start.dispatcher", "chalicelib.start.worker",
               "chalicelib.start.capacity_queue"]


def test_the_queue_rooms_import_only_downwards_and_pacing_is_pure() -> None:
    found = modules()
    wrong = []
    for index, room in enumerate(QUEUE_ROOMS):
        targets = imported(found[room], room)
        later = [t for t in targets if any(t == r or t.startswith(r + ".") for r in QUEUE_ROOMS[index + 1:])]
        wrong += [f"{room} -> {t}" for t in later]
    assert wrong == []
    pacing = imported(found["chalicelib.start.pacing"], "chalicelib.start.pacing")
    assert pacing == set(), pacing  # nothing of chalicelib: not the store, not settings, not Pipecat Cloud
    source = found["chalicelib.start.pacing"].read_text()
    assert "boto3" not in source and "httpx" not in source


def test_the_queue_sweep_is_schedule_work() -> None:
    """The sweep is upkeep's (the schedule runs it), not the routes' module's."""
    found = modules()
    assert "def sweep" not in found["chalicelib.start.capacity_queue"].read_text()
    schedule = "chalicelib.upkeep.schedule"
    assert "chalicelib.upkeep.queue_sweep" in imported(found[schedule], schedule)


def test_the_store_reads_no_settings() -> None:
    """store/ is given what policy it applies (a TTL, a window) by its callers; the addresses of what it writes
    (table, events table, wake-up queue) come from platform's data access, never from the settings module."""
    for name, path in modules().items():
        if name.startswith("chalicelib.store."):
            assert not {i for i in imported(path, name) if i.startswith("chalicelib.platform.settings")}, name
            assert "get_settings" not in path.read_text(), name


def test_the_store_raises_no_http_error() -> None:
    """store/ says what went wrong (DomainError subclasses); only the edge's table (chalicelib.api.errors) turns
    that into a status and a code."""
    for name, path in modules().items():
        if name.startswith("chalicelib.store."):
            assert "chalicelib.platform.errors.ApiError" not in imported(path, name), name
    from chalicelib.api.errors import ERRORS
    from chalicelib.platform.errors import DomainError

    kinds = {c.kind for c in _subclasses(DomainError) if "kind" in vars(c)}
    assert kinds <= set(ERRORS), kinds - set(ERRORS)  # every kind raised has its answer at the edge


EDGE = {"chalicelib.api.errors", "chalicelib.platform.http", "app"}


def _named_kinds(tree: ast.AST) -> list[tuple[str, str]]:
    """(class, kind) of every `Refused("kind", ...)` / `TryLater("kind", ...)` and every `kind="..."` argument."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if callee in ("Refused", "TryLater") and node.args and isinstance(node.args[0], ast.Constant):
            found.append((callee, str(node.args[0].value)))
        if callee in ("take", "concurrent"):  # rate_limits' refusals
            found += [("TryLater", str(k.value.value)) for k in node.keywords
                      if k.arg == "kind" and isinstance(k.value, ast.Constant)]
    return found


def test_only_the_edge_maps_errors_to_http() -> None:
    """Below the edge nothing builds an HTTP answer (ApiError): what it refuses is a
    named kind, and every kind named has its row in the edge's table (a TryLater one answers 429)."""
    from chalicelib.api.errors import ERRORS

    paths = {**modules(), "app": ROOT / "app.py"}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        if name not in EDGE:
            built = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", getattr(n.func, "attr", None)) == "ApiError"]
            assert not built, (name, built)
        for cls, kind in _named_kinds(tree):
            assert kind in ERRORS, (name, kind)
            assert (ERRORS[kind][0] == 429) == (cls == "TryLater"), (name, cls, kind)


def _subclasses(cls: type) -> set[type]:
    import importlib

    for name in modules():
        importlib.import_module(name.removesuffix(".__init__"))
    found, todo = set(), [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_free_form_dicts_say_which_kind_they_are() -> None:
    """A free-form dict is named for what it holds (chalicelib.platform.shapes: JsonObject, Item); the settings'
    Daily room and token properties, handed to Pipecat Cloud as they are, are the one exception."""
    allowed = {"chalicelib.platform.shapes": 2, "chalicelib.platform.settings_groups": 2}
    for name, path in modules().items():
        found = path.read_text().count("dict[str, Any]")
        assert found <= allowed.get(name, 0), (name, found)


def test_the_store_decides_nothing() -> None:
    """store/ writes what it is given: which lifecycle event a transition writes is chalicelib.start.lifecycle's
    choice, how a session is billed chalicelib.start.billing's; only the outbox builds an event's write."""
    import re

    for name, path in modules().items():
        if not name.startswith("chalicelib.store.") or name == "chalicelib.store.outbox":
            continue
        tree = ast.parse(path.read_text())
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not {s for s in strings if re.fullmatch(r"(start|session|call)\.[a-z_]+", s)}, name
        called = {getattr(n.func, "id", getattr(n.func, "attr", "")) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not called & {"event_writes", "record_event", "billed_seconds", "split_seconds", "ceil"}, name
