"""The user documentation agrees with the code: the settings table with what the worker reads and
its defaults, every link resolves, the README stays a front page, and nothing in it is a
development note. (The metrics table: tests/unit/test_metrics.py; alerts: tests/deploy.)"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

import pytest

from tests.support.docs import DOCS
from worker.config import Settings

ROOT = DOCS.parent
README = ROOT / "README.md"
CONFIGURATION = DOCS / "configuration.md"
USER_DOCS = [README, *sorted(DOCS.glob("*.md"))]


def settings_table() -> dict[str, str]:
    """Variable -> its default cell, from docs/configuration.md."""
    table: dict[str, str] = {}
    for line in CONFIGURATION.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            for name in re.findall(r"`([A-Z_]+)`", cells[0]):
                table[name] = cells[1]
    return table


def variables_read_by_the_worker() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "worker").rglob("*.py"):
        names |= set(re.findall(r"""["'](EMBED_[A-Z_]+)["']""", path.read_text()))
    return names


def test_the_settings_table_lists_exactly_what_the_worker_reads() -> None:
    documented = {n for n in settings_table() if n.startswith("EMBED_")}
    assert documented == variables_read_by_the_worker()
    assert "DATABASE_URL" in settings_table()


def _parse(cell: str) -> object:
    if cell in ("true", "false"):
        return cell == "true"
    try:
        return float(cell)
    except ValueError:
        return cell


def test_documented_defaults_are_the_code_defaults() -> None:
    table = settings_table()
    checked = 0
    for f in fields(Settings):
        cell = table[f.metadata["env"]]
        default = None if f.default is MISSING else f.default
        if cell.startswith("unset"):
            assert default is None, f.metadata["env"]
        elif re.fullmatch(r"`[^`]+`", cell):
            expected = _parse(cell.strip("`"))
            actual = (
                float(default)
                if isinstance(default, int | float) and not isinstance(default, bool)
                else default
            )
            assert actual == expected, (f.metadata["env"], cell, default)
        else:
            continue  # prose (e.g. "every core the process may use")
        checked += 1
    assert checked >= len(fields(Settings)) - 2


def test_every_relative_link_resolves() -> None:
    for doc in USER_DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            assert resolved.exists(), f"{doc.name}: {target}"
            if anchor and resolved.suffix == ".md":
                headings = {
                    re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                    for h in re.findall(r"(?m)^#+ (.+)$", resolved.read_text())
                }
                assert anchor in headings, f"{doc.name}: {target}"


def test_every_page_is_listed_once_in_the_index_by_kind() -> None:
    """docs/README.md sorts the pages by kind (Diataxis): each page of docs/ under one kind."""
    index = DOCS / "README.md"
    kinds = re.split(r"(?m)^## ", index.read_text())[1:]
    assert [k.split(":")[0] for k in kinds][:4] == [
        "Tutorials",
        "How-to guides",
        "Reference",
        "Explanation",
    ]
    listed = [
        target
        for kind in kinds
        for target in re.findall(r"(?m)^- \[[^]]+\]\(([\w.-]+\.md)\)", kind)
    ]
    assert sorted(listed) == sorted({p.name for p in DOCS.glob("*.md")} - {"README.md"})
    assert "](docs/README.md)" in README.read_text()


def test_performance_is_a_page_of_current_figures_each_with_its_machine_date_and_command() -> None:
    """The dated runs live in bench/results/history/; the page keeps the figures of today."""
    text = (DOCS / "performance.md").read_text()
    assert len(text.split()) <= 5000
    table = text.split("## Current figures", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 10
    for row in rows[1:]:
        what, _, measured, reproduce = (c.strip() for c in row.strip("|").split("|"))
        assert re.search(r"\b20\d\d-\d\d-\d\d, (AMD EPYC|Intel Xeon)", measured), what
        assert re.search(r"`(python -m bench|make )", reproduce), what


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 300
    for part in ("make demo", "make test", "embeddings.watch(", "Measured 20", "docs/"):
        assert part in text, part


def test_no_development_notes_in_user_docs() -> None:
    notes = re.compile(
        r"from memory|never built here|not run here|this session|developed on|"
        r"machines this was|was only read|TODO|FIXME",
        re.I,
    )
    for doc in USER_DOCS:
        found = notes.findall(doc.read_text())
        assert not found, f"{doc.name}: {found}"


def package_map() -> set[str]:
    """The modules and folders docs/development.md's map of `worker/` names, as dotted paths."""
    text = (DOCS / "development.md").read_text()
    block = re.search(r"## The worker package.*?```\nworker/\n(.*?)```", text, re.S)
    assert block is not None, "docs/development.md: no map of worker/"
    found: set[str] = set()
    folders: list[tuple[int, str]] = []  # the folders the line is in, with their indents
    for line in block.group(1).splitlines():
        entry = re.match(r"( +)(\S+)", line)
        if entry is None:
            continue
        indent, name = len(entry.group(1)), entry.group(2)
        while folders and folders[-1][0] >= indent:
            folders.pop()
        dotted = ".".join([f for _, f in folders] + [name.rstrip("/")])
        found.add(dotted)
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
    return found


def test_the_development_map_names_every_module_of_the_package() -> None:
    package = ROOT / "worker"
    modules = {
        ".".join(p.relative_to(package).with_suffix("").parts)
        for p in package.rglob("*.py")
        if p.name != "__init__.py"
    } | {
        ".".join(p.parent.relative_to(package).parts)
        for p in package.rglob("__init__.py")
        if p.parent != package
    }
    modules.add("queries.sql")
    assert package_map() == modules


def test_the_upgrade_guide_quotes_what_migrate_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    """`already at 0020 (0.4.0)` is what a released build prints; a build of the open release
    (from git) says `0.4.0, unreleased`, and a tester following the guide was told neither."""
    from worker.schema import files
    from worker.schema.migration import Migration
    from worker.schema.revisions import head_revision

    head = head_revision()
    building = Migration(current=head).lines()[0]
    monkeypatch.setattr(files, "RELEASED_REVISIONS", {**files.RELEASED_REVISIONS, head: ""})
    released = Migration(current=head).lines()[0]
    guide = (DOCS / "upgrading.md").read_text()
    quoted = set(re.findall(r"already at [^`\"]*\)", guide))
    unreleased = released.removesuffix(")") + ", unreleased)"
    assert released in quoted and quoted <= {released, unreleased}
    assert building in quoted  # (the released line once the release is made)
