"""The README's layout section is the package's tree: one line per module, none missing, none stale."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_entries(readme: str) -> list[str]:
    """The paths the layout block names: a folder line ``name/`` opens a level, indented by two per level."""
    block = readme.split("\n## Layout\n", 1)[1].split("```", 2)[1]
    entries, folders = [], []
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m or not (m.group(2).endswith((".py", "/"))):
            continue  # a description's continuation line
        level, name = len(m.group(1)) // 2, m.group(2)
        folders = folders[:level]
        if name.endswith("/"):
            folders.append(name[:-1])
        else:
            entries.append("/".join(folders + [name]))
    return entries


def test_the_layout_lists_every_module_once():
    entries = layout_entries((ROOT / "README.md").read_text())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "radis_mlx").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "radis_mlx"}
    assert sorted(set(modules) - set(entries)) == [], "modules the README's layout does not list"
    assert sorted(set(entries) - modules) == [], "layout lines naming no module"
    assert len(entries) == len(set(entries)), "a module listed twice"
