"""Budget copies for benchmarks: a budget TOML file with some keys of one section set (text edit, so the file's
comments and every other key stay as they are)."""
from __future__ import annotations

import re
from pathlib import Path


def budget_with(path: Path, section: str, values: dict, out: Path) -> Path:
    """Write ``path`` to ``out`` with ``key = value`` for each of ``values``: the key's line replaced where it is
    present, else the key added at the top of ``[section]``; returns ``out``."""
    text = path.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        if n == 0:
            text = re.sub(rf"(?m)^\[{section}\]\s*$", f"[{section}]\n{key} = {value}", text, count=1)
    out.write_text(text)
    return out
