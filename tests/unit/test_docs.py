"""The docs describe the code as it is: every table, flow family and REST route."""

from __future__ import annotations

import re
from pathlib import Path

from ryu_overlay.openapi import openapi_document
from ryu_overlay.pipeline import TABLES, Family

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_pipeline_doc_has_a_section_per_table_with_its_number():
    text = (DOCS / "pipeline.md").read_text()
    sections = re.findall(r"^## Table (\d+): `(\w+)`", text, re.M)
    assert [(int(n), name) for n, name in sections] == [(i, t.name) for i, t in enumerate(TABLES)]


def test_pipeline_doc_lists_every_flow_family_with_its_value():
    text = (DOCS / "pipeline.md").read_text()
    for family in Family:
        assert re.search(rf"^\| {family.value} \| `{family.name}` \|", text, re.M), family


def test_rest_doc_mentions_every_route_of_the_openapi_document():
    text = (DOCS / "rest.md").read_text()
    for path in openapi_document()["paths"]:
        pattern = re.escape(path).replace(re.escape("{name}"), r"[\w.-]+") + r"(?![\w/])"
        assert re.search(pattern, text), path
