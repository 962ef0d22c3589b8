"""docs/pipeline.md names priorities and code as they are."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from ryu_overlay.pipeline import Priority

TEXT = (Path(__file__).resolve().parents[2] / "docs" / "pipeline.md").read_text()


def test_every_priority_row_gives_the_name_the_code_uses():
    rows = re.findall(r"^\| (\d+) `(\w+)` \|", TEXT, re.M)
    assert rows
    for value, name in rows:
        assert getattr(Priority, name) == int(value), name
    named = {name for name in vars(Priority) if name.isupper()}
    assert named == {name for _, name in rows}


def test_every_cited_name_of_the_code_exists():
    cited = set(re.findall(r"`((?:flows|ofmsg|pipeline|controller|trace)(?:\.\w+)+)`", TEXT))
    assert "ofmsg.Changes.batch" in cited
    for dotted in cited:
        module, *attrs = dotted.split(".")
        obj = importlib.import_module(f"ryu_overlay.{module}")
        for attr in attrs:
            obj = getattr(obj, attr)
