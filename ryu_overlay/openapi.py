"""The OpenAPI 3 description of the REST API, served at ``GET /v1/openapi.json``.

It is kept exact enough for schema-driven fuzzing: request schemas state the limits the
model enforces, and every route lists every status it can answer.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .events import MAX_WAIT
from .model import (
    DEFAULT_MTU,
    MAX_CERT_CN,
    MAX_NAME,
    MOBILITY_MODES,
    MOBILITY_SEQ_MAX,
    MTU_MAX,
    MTU_MIN,
    UNKNOWN_ARP_MODES,
    VNI_MAX,
    VNI_MIN,
)

NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"}
IFNAME = {"type": "string", "minLength": 1, "maxLength": 15, "pattern": r"^[A-Za-z0-9_.:-]{1,15}$"}
CERT_CN = {"type": "string", "minLength": 1, "maxLength": MAX_CERT_CN,
           "description": "over OpenFlow TLS, the common name its switch's certificate must give (default: the "
                          "hypervisor's name; an ovs-pki name '<cn> id:<uuid>' matches too); a switch with "
                          "another is refused"}
MOBILITY = {"type": "string", "enum": [*MOBILITY_MODES, None], "nullable": True,
            "description": "learn: moves are learned from frames; declared: only a PUT (or an iface-id binding) "
                           "moves the port, and a frame with its MAC from anywhere else is dropped and counted "
                           "(moves_refused_declared). A port's null takes its network's; a network's null leaves "
                           "each port the default: declared with a declared location, learn without"}
MAC = {"type": "string", "pattern": r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$", "example": "02:aa:00:00:00:01"}
IP = {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}],
      "example": "10.1.0.1", "description": "a unicast address, inside one of the network's subnets"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = _content(schema)
    return out


ERROR = _answer("refused; nothing was changed", _ref("Error"))
INTERNAL = _answer("internal error of the controller or its store", _ref("Error"))
UNAVAILABLE = _answer("the store failed to make a change durable; the change was undone", _ref("Error"))


FORBIDDEN = _answer("the token's scope does not allow this (docs/security.md); nothing was changed", _ref("Error"))
TOO_MANY = {**_answer("over the token's request rate; nothing was changed", _ref("Error")),
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {**{str(code): ERROR for code in (*codes, 401, 405)}, "403": FORBIDDEN, "429": TOO_MANY,
            "500": INTERNAL, "503": UNAVAILABLE}


def _collection_paths(kind: str, item: str, put_codes: tuple[int, ...], delete_codes: tuple[int, ...],
                      example: dict[str, Any]) -> dict[str, Any]:
    any_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    new_name = {**any_name, "schema": NAME, "description": "the object's name (it is not repeated in the body)"}
    return {
        f"/v1/{kind}": {
            "get": {"summary": f"List {kind}", "operationId": f"list_{kind}",
                    "responses": {"200": _answer("all of them", {
                        "type": "object", "required": [kind],
                        "properties": {kind: {"type": "array", "items": _ref(item)}}}), **_errors()}},
        },
        f"/v1/{kind}/{{name}}": {
            "parameters": [any_name],
            "get": {"summary": f"Show one of {kind}", "operationId": f"get_{item.lower()}",
                    "responses": {"200": _answer("found", _ref(item)), **_errors(404)}},
            "put": {"summary": f"Create or replace one of {kind}", "operationId": f"put_{item.lower()}",
                    "parameters": [new_name],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _ref(item + "Input"), "example": example}}},
                    "responses": {"200": _answer("updated", _ref(item)), "201": _answer("created", _ref(item)),
                                  **_errors(*put_codes)}},
            "delete": {"summary": f"Delete one of {kind}", "operationId": f"delete_{item.lower()}",
                       "responses": {"204": _answer("deleted"), **_errors(*delete_codes)}},
        },
    }


# The collections a transaction may change, with the schema of a PUT body of each.
TRANSACTION_KINDS = (("hypervisors", "HypervisorInput"), ("networks", "NetworkInput"), ("ports", "PortInput"),
                     ("routers", "RouterInput"))
EVENT_TYPES = ("created", "changed", "deleted", "port_learned", "port_moved", "port_frozen", "duplicate_address",
               "switch_connected", "switch_disconnected", "switch_in_sync", "reloaded")
MAX_SEQ = 2**53 - 1  # the largest integer a JavaScript client reads exactly


def _transaction_schemas() -> dict[str, Any]:
    puts = [{"type": "object", "required": ["op", "kind", "name", "body"], "additionalProperties": False,
             "properties": {"op": {"type": "string", "enum": ["put"]}, "kind": {"type": "string", "enum": [kind]},
                            "name": NAME, "body": _ref(schema)}} for kind, schema in TRANSACTION_KINDS]
    delete = {"type": "object", "required": ["op", "kind", "name"], "additionalProperties": False,
              "properties": {"op": {"type": "string", "enum": ["delete"]},
                             "kind": {"type": "string", "enum": [kind for kind, _ in TRANSACTION_KINDS]},
                             "name": {"type": "string"}}}
    return {
        "TransactionInput": {
            "type": "object", "required": ["operations"], "additionalProperties": False,
            "properties": {
                "operations": {"type": "array", "items": {"oneOf": [*puts, delete]},
                               "description": "applied in order, each checked against the state the earlier "
                                              "ones left; all or none"},
                "wait": {"type": "string", "enum": ["hv"],
                         "description": "answer only once every switch the transaction changed has confirmed "
                                        "it (barrier reply), or the timeout expired"},
                "timeout": {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "default": 30,
                            "description": "seconds to wait with \"wait\": \"hv\""}}},
        "Transaction": {
            "type": "object", "required": ["results"],
            "properties": {
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["op", "kind", "name", "status", "body"],
                    "properties": {"op": {"type": "string", "enum": ["put", "delete"]},
                                   "kind": {"type": "string"}, "name": {"type": "string"},
                                   "status": {"type": "integer", "enum": [200, 201, 204]},
                                   "body": {"type": "object", "nullable": True,
                                            "description": "what the single PUT would answer; null for a "
                                                           "delete"}}}},
                "unconfirmed": {"type": "array", "items": {"type": "string"},
                                "description": "with \"wait\": \"hv\": the hypervisors that had not "
                                               "confirmed when the timeout expired, or disconnected first"}}},
        "TransactionError": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string"},
                           "index": {"type": "integer", "minimum": 0,
                                     "description": "the refused operation; absent when the request as a "
                                                    "whole is malformed"}}},
        "Event": {
            "type": "object", "required": ["seq", "at", "type", "kind", "name", "object"],
            "properties": {
                "seq": {"type": "integer", "minimum": 0}, "at": {"type": "number"},
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "kind": {"type": "string", "nullable": True}, "name": {"type": "string", "nullable": True},
                "object": {"type": "object", "nullable": True,
                           "description": "the object as its GET shows it after the event; null once gone"},
                "dpid": {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "switch events only"}}},
        "Events": {
            "type": "object", "required": ["events", "last", "resync"],
            "properties": {"events": {"type": "array", "items": _ref("Event")},
                           "last": {"type": "integer", "minimum": 0, "description": "the latest seq"},
                           "resync": {"type": "boolean",
                                      "description": "events after since were lost: re-read the state"}}},
    }


def _transaction_paths() -> dict[str, Any]:
    refused = _answer("an operation (the one at index) or the request was refused; nothing was changed",
                      _ref("TransactionError"))
    return {
        "/v1/transactions": {"post": {
            "summary": "Apply several PUTs and DELETEs at once, all or none", "operationId": "transaction",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("TransactionInput"),
                "example": {"operations": [
                    {"op": "put", "kind": "networks", "name": "blue", "body": {"vni": 5001, "tenant": "acme"}},
                    {"op": "put", "kind": "ports", "name": "a1",
                     "body": {"network": "blue", "mac": "02:aa:00:00:00:01"}}], "wait": "hv", "timeout": 5}}}},
            "responses": {"200": _answer("applied", _ref("Transaction")),
                          **{str(code): refused for code in (400, 404, 409)}, **_errors(413)}}},
        "/v1/events": {"get": {
            "summary": "The change events after a sequence number (long poll, or server-sent events)",
            "operationId": "events",
            "parameters": [
                {"name": "since", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                 "description": "the last seq the client has; without it, only events from now on"},
                {"name": "timeout", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT},
                 "description": "seconds to wait for an event if there is none yet (default 0); with "
                                "server-sent events, how long the stream lasts (default: until closed)"}],
            "responses": {"200": {"description": "the events; text/event-stream when asked for in Accept",
                                  "content": {"application/json": {"schema": _ref("Events")},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400)}}},
    }


def openapi_document() -> dict[str, Any]:
    nullable_name = {**NAME, "nullable": True}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "HypervisorName": {"type": "object", "required": ["name"], "additionalProperties": False,
                           "properties": {"name": NAME},
                           "description": "what a tenant's token reads of a hypervisor hosting its ports"},
        "HypervisorInput": {
            "type": "object", "required": ["dpid", "tunnel_ip"], "additionalProperties": False,
            "properties": {
                "dpid": {"oneOf": [{"type": "string", "pattern": r"^(0x)?[0-9a-fA-F]{1,16}$"},
                                   {"type": "integer", "minimum": 1, "maximum": 2**64 - 1}],
                         "description": "OpenFlow datapath id: hex digits or an integer"},
                "tunnel_ip": {"type": "string", "description": "underlay address of the VTEP, IPv4 or IPv6"},
                "tunnel_port": {**IFNAME, "description": "name of the flow-based tunnel port on the hypervisor's "
                                                         "bridge (default: the tunnel type and 0, e.g. vxlan0)"},
                "ovsdb": {"type": "string", "nullable": True,
                          "pattern": r"^(passive|tcp:(\[[0-9a-fA-F:.]+\]|[0-9.]+):[0-9]{1,5})$",
                          "description": "manage it over OVSDB: tcp:IP:PORT (the controller connects out) or passive "
                                         "(it connects to the controller's --ovsdb-listen); absent or null: unmanaged"},
                "tunnel_type": {"type": "string", "enum": ["vxlan", "geneve", "gre"], "default": "vxlan",
                                "description": "encapsulation it receives; gre carries the VNI in the key"},
                "cert_cn": {**CERT_CN, "nullable": True},
            }},
        "Hypervisor": {
            "type": "object",
            "required": ["name", "dpid", "tunnel_ip", "tunnel_port", "tunnel_type", "cert_cn", "connected",
                         "in_sync", "ofports", "master", "ovsdb"],
            "properties": {"name": NAME, "dpid": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                           "tunnel_ip": {"type": "string"}, "tunnel_port": IFNAME, "cert_cn": CERT_CN,
                           "tunnel_type": {"type": "string", "enum": ["vxlan", "geneve", "gre"]},
                           "ovsdb": {"type": "string", "enum": ["connected", "disconnected", None], "nullable": True,
                                     "description": "the OVSDB session of a managed hypervisor; null if unmanaged"},
                           "tunnels": {"type": "object", "additionalProperties": {"enum": ["up", "down"]},
                                       "description": "managed hypervisors only: the BFD state of the tunnel "
                                                      "towards each managed peer sharing a network with it"},
                           "connected": {"type": "boolean",
                                         "description": "its bridge is connected and reconciled"},
                           "in_sync": {"type": "boolean",
                                       "description": "connected, and every change sent to it was confirmed "
                                                      "by a barrier reply"},
                           "ofports": {"type": "object", "nullable": True,
                                       "additionalProperties": {"type": "integer", "minimum": 1},
                                       "description": "OpenFlow port number of each interface on its bridge, "
                                                      "as the switch reported them; null while not connected"},
                           "master": {"type": "string", "nullable": True,
                                      "description": "id of the controller instance that masters its switch "
                                                     "(OpenFlow role MASTER); null when none does. "
                                                     "`connected`, `in_sync` and `ofports` are as the answering "
                                                     "instance sees them: ask the master"}}},
        "NetworkInput": {
            "type": "object", "required": ["vni", "tenant"], "additionalProperties": False,
            "properties": {
                "vni": {"type": "integer", "minimum": VNI_MIN, "maximum": VNI_MAX},
                "tenant": NAME,
                "subnets": {"type": "array", "items": {"type": "string", "example": "10.1.0.0/24"}},
                "mtu": {"type": "integer", "minimum": MTU_MIN, "maximum": MTU_MAX, "nullable": True,
                        "description": f"the largest IP packet a VM may send (larger ones get ICMP errors or are "
                                       f"fragmented), and what DHCP option 26 and the RA MTU option announce; "
                                       f"null: {DEFAULT_MTU}"},
                "unknown_arp": {"type": "string", "enum": list(UNKNOWN_ARP_MODES), "default": "replicate",
                                "description": "what happens to an ARP request for an address no port owns"},
                "dhcp": {"type": "boolean", "default": True,
                         "description": "the controller answers DHCPv4 for the ports' IPv4 addresses and Router "
                                        "Solicitations for the IPv6 prefixes, and sends RAs on port up"},
                "mobility": MOBILITY,
            }},
        "Network": {
            "type": "object", "required": ["name", "vni", "tenant", "subnets", "mtu", "unknown_arp", "dhcp",
                                           "mobility"],
            "properties": {"name": NAME, "vni": {"type": "integer"}, "tenant": NAME,
                           "subnets": {"type": "array", "items": {"type": "string"}},
                           "mtu": {"type": "integer", "nullable": True},
                           "unknown_arp": {"type": "string", "enum": list(UNKNOWN_ARP_MODES)},
                           "dhcp": {"type": "boolean"}, "mobility": MOBILITY}},
        "PortInput": {
            "type": "object", "required": ["network", "mac"], "additionalProperties": False,
            "properties": {
                "network": NAME, "mac": MAC,
                "ips": {"type": "array", "items": IP, "uniqueItems": True},
                "hypervisor": {**NAME, "nullable": True, "description": "with interface: the declared location"},
                "interface": {**IFNAME, "nullable": True,
                              "description": "the VM's interface name on the hypervisor's bridge"},
                "mobility_seq": {"type": "integer", "minimum": 0, "maximum": MOBILITY_SEQ_MAX,
                                 "description": "optional: the mobility_seq the client last read; the PUT is "
                                                "refused (409) if the port has moved since"},
                "mobility": MOBILITY,
            },
            # the location is both fields or neither
            "oneOf": [{"required": ["hypervisor", "interface"],
                       "properties": {"hypervisor": NAME, "interface": IFNAME}},
                      {"properties": {"hypervisor": {"enum": [None]}, "interface": {"enum": [None]}}}]},
        "Port": {
            "type": "object",
            "required": ["name", "network", "mac", "ips", "hypervisor", "interface", "location_source",
                         "mobility_seq", "frozen", "recent_moves", "duplicate", "mobility"],
            "properties": {
                "name": NAME, "network": NAME, "mac": {"type": "string"},
                "ips": {"type": "array", "items": {"type": "string"}},
                "hypervisor": nullable_name, "interface": {**IFNAME, "nullable": True},
                "location_source": {"type": "string", "enum": ["declared", "learned", "ovsdb", None], "nullable": True},
                "mobility": MOBILITY,
                "mobility_seq": {"type": "integer", "minimum": 0,
                                 "description": "the location's sequence number: one more each time the port "
                                                "leaves a location (RFC 7432 section 15)"},
                "frozen": {"type": "boolean", "description": "moved too often; held until an operator PUT"},
                "recent_moves": {"type": "array",
                                 "description": "the moves in the 180 s up to the latest one, oldest first",
                                 "items": {"type": "object", "required": ["at", "hypervisor", "interface"],
                                           "properties": {"at": {"type": "number",
                                                                 "description": "Unix time of the move"},
                                                          "hypervisor": NAME, "interface": IFNAME},
                                           "description": "the location the port left"}},
                "duplicate": {
                    "type": "object", "nullable": True, "required": ["hypervisor", "interface", "detected_at"],
                    "description": "the port's MAC was active at this other location while its own interface "
                                   "was present; the port is held where it is until an operator PUT",
                    "properties": {"hypervisor": NAME, "interface": IFNAME, "detected_at": {"type": "number"}}}}},
        "RouterInput": {
            "type": "object", "required": ["tenant", "interfaces"], "additionalProperties": False,
            "properties": {
                "tenant": NAME,
                "interfaces": {
                    "type": "array", "minItems": 1,
                    "description": "the router's address in each subnet it routes; the prefix must be one of the "
                                   "network's subnets (400), the network of the router's tenant (409) and of no "
                                   "other router (409)",
                    "items": {"type": "object", "required": ["network", "ip"], "additionalProperties": False,
                              "properties": {"network": NAME,
                                             "ip": {"type": "string", "example": "10.1.0.254/24"}}}},
                "gateway": {
                    "type": "object", "nullable": True, "additionalProperties": False,
                    "required": ["hypervisor", "interface", "ip", "next_hop"],
                    "description": "the uplink: an OVS port on the gateway hypervisor's bridge",
                    "properties": {"hypervisor": NAME, "interface": IFNAME,
                                   "ip": {"type": "string", "example": "198.51.100.2/24"},
                                   "next_hop": {"type": "string", "format": "ipv4"}}},
                "snat": {"type": "boolean", "description": "default: true when a gateway is set"},
                "floating_ips": {"type": "object", "additionalProperties": NAME,
                                 "description": "public IPv4 address (in the gateway's subnet, used once: 409) "
                                                "-> port name"},
            }},
        "Router": {
            "type": "object",
            "required": ["name", "tenant", "interfaces", "gateway", "snat", "floating_ips", "mac"],
            "properties": {
                "name": NAME, "tenant": NAME,
                "interfaces": {"type": "array", "items": {
                    "type": "object", "required": ["network", "ip"],
                    "properties": {"network": NAME, "ip": {"type": "string"}}}},
                "gateway": {"type": "object", "nullable": True,
                            "required": ["hypervisor", "interface", "ip", "next_hop"],
                            "properties": {"hypervisor": NAME, "interface": IFNAME, "ip": {"type": "string"},
                                           "next_hop": {"type": "string"}}},
                "snat": {"type": "boolean"},
                "floating_ips": {"type": "object", "additionalProperties": {"type": "string"}},
                "mac": {**MAC, "description": "the router's MAC, allocated by the controller; kept for its life"}}},
    }
    schemas.update(_transaction_schemas())
    paths: dict[str, Any] = {}
    paths.update(_collection_paths("hypervisors", "Hypervisor", (400, 404, 409, 413), (404, 409),
                                   {"dpid": "0000000000000001", "tunnel_ip": "198.18.0.1", "tunnel_port": "vxlan0"}))
    seen_by_tenant = {"anyOf": [_ref("Hypervisor"), _ref("HypervisorName")]}
    paths["/v1/hypervisors"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"][
        "hypervisors"]["items"] = seen_by_tenant
    paths["/v1/hypervisors/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = seen_by_tenant
    paths.update(_collection_paths("networks", "Network", (400, 404, 409, 413), (404, 409),
                                   {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                                    "mtu": 1450}))
    paths.update(_collection_paths("ports", "Port", (400, 404, 409, 413), (404, 409),
                                   {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1", "fd00:1::1"],
                                    "hypervisor": "hv1", "interface": "tapA1"}))
    paths.update(_collection_paths("routers", "Router", (400, 404, 409, 413), (404,),
                                   {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                                                     {"network": "blue", "ip": "fd00:1::fe/64"}]}))
    paths.update(_transaction_paths())
    paths["/v1/topology"] = {"get": {
        "summary": "The topology graph (networkx node-link JSON) of hypervisors, networks and ports",
        "operationId": "topology",
        "responses": {"200": _answer("the graph", {"type": "object", "required": ["nodes", "links"],
                                                   "properties": {"nodes": {"type": "array"},
                                                                  "links": {"type": "array"}}}), **_errors()}}}
    paths["/v1/stats"] = {"get": {
        "summary": "Counters", "operationId": "stats",
        "responses": {"200": _answer("counters", {"type": "object",
                                                  "additionalProperties": {"type": "integer"}}), **_errors()}}}
    paths["/v1/instances"] = {"get": {
        "summary": "Live controller instances, with the hypervisors whose switches each masters",
        "operationId": "instances",
        "responses": {"200": _answer("the instances, by id", {
            "type": "object", "required": ["instances"],
            "properties": {"instances": {"type": "array", "items": {
                "type": "object", "required": ["id", "hypervisors"],
                "properties": {"id": {"type": "string"},
                               "hypervisors": {"type": "array", "items": NAME}}}}}}), **_errors()}}}
    paths["/metrics"] = {"get": {
        "summary": "Metrics in the Prometheus text format (docs/operations.md lists them)", "operationId": "metrics",
        "responses": {"200": {"description": "the metrics",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors()}}}
    paths["/v1/openapi.json"] = {"get": {
        "summary": "This document", "operationId": "openapi",
        "responses": {"200": _answer("OpenAPI 3 document", {"type": "object"}), **_errors()}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "ryu_overlay placement API", "version": __version__,
                 "description": "Declare hypervisors, virtual networks (VNIs) and VM ports; the controller "
                                "programs the overlay from them."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
    }
