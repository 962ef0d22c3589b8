"""An in-process REST client whose every response is checked against the OpenAPI document."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from webob import Request, Response

from ryu_overlay.openapi import openapi_document
from ryu_overlay.rest import RestApp

DOC = openapi_document()
COMPONENTS = DOC["components"]["schemas"]
ROUTES = [(re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", tpl) + "$"), tpl) for tpl in DOC["paths"]]


def json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema: ``$ref`` inlined, ``nullable`` made a null type."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        target = json_schema(COMPONENTS[name])
        return {"anyOf": [target, {"type": "null"}]} if schema.get("nullable") else target
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("nullable", "example"):
            continue
        if key == "properties":
            out[key] = {k: json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") or key in ("oneOf", "anyOf", "allOf"):
            out[key] = json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(json_schema(schema), format_checker=jsonschema.FormatChecker()).validate(instance)


def route_of(path: str) -> str | None:
    return next((tpl for pattern, tpl in ROUTES if pattern.fullmatch(path)), None)


def check_against_document(method: str, path: str, body: bytes | None, resp: Response) -> None:
    """Fail unless ``resp`` is what the OpenAPI document promises for this route, method and status."""
    assert resp.status_int == 204 or resp.content_type in ("application/json", "text/event-stream"), resp
    tpl = route_of(path)
    if tpl is None or method.lower() not in DOC["paths"][tpl]:
        assert resp.status_int in (401, 404, 405), (method, path, resp.status)
        validate(resp.json, COMPONENTS["Error"])
        return
    operation = DOC["paths"][tpl][method.lower()]
    declared = operation["responses"]
    assert str(resp.status_int) in declared, f"{method} {tpl} answered {resp.status}, not in the document"
    answer = declared[str(resp.status_int)]
    if "content" in answer:
        assert resp.content_type in answer["content"], (method, tpl, resp.content_type)
        if resp.content_type == "application/json":
            validate(resp.json, answer["content"]["application/json"]["schema"])
    else:
        assert resp.body == b""
    if method in ("PUT", "POST") and resp.status_int in (200, 201):
        validate(json.loads(body or b"null"), operation["requestBody"]["content"]["application/json"]["schema"])


@dataclass
class Api:
    app: RestApp
    token: str | None = None
    seen: list[tuple[str, str, int]] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, auth: bool = True) -> Response:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        kwargs: dict[str, Any] = {"method": method, "headers": dict(headers or {})}
        if data is not None:
            kwargs["body"] = data
        if auth and self.token is not None:
            kwargs["headers"].setdefault("Authorization", f"Bearer {self.token}")
        req = Request.blank(path, **kwargs)
        resp = req.get_response(self.app)
        try:
            decoded = req.path_info
        except UnicodeDecodeError:
            decoded = req.environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
        check_against_document(method, decoded, data, resp)
        self.seen.append((method, path, resp.status_int))
        return resp

    def get(self, path: str, **kw: Any) -> Response:
        return self.call("GET", path, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.call("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.call("DELETE", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.call("POST", path, body, **kw)
