"""The one module that imports the OpenFlow framework: Ryu 4.34, or its maintained fork os-ken.

Ryu 4.34 is the last Ryu release. On Python >= 3.10 ``ryu.app.wsgi`` (imported by
``ryu.cmd.manager``) needs ``eventlet.wsgi.ALREADY_HANDLED``, which no eventlet that runs
there still defines; ``ryu_overlay_shim`` supplies it. The install loads that module at
interpreter start-up (so plain ``ryu-manager`` works); we load it here too, for a checkout
run through ``PYTHONPATH``. os-ken has the same API under another package name, so
everything else in ryu_overlay imports from here.

Set ``RYU_OVERLAY_FRAMEWORK=os_ken`` (or ``ryu``) to force one of them.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import ryu_overlay_shim

ryu_overlay_shim.install()


def _choose() -> str:
    forced = os.environ.get("RYU_OVERLAY_FRAMEWORK")
    candidates = [forced] if forced else ["ryu", "os_ken"]
    errors = []
    for base in candidates:
        try:
            importlib.import_module(base + ".ofproto.ofproto_v1_3_parser")
            return base
        except ImportError as exc:
            errors.append(f"{base}: {exc}")
    raise ImportError("neither Ryu nor os-ken can be imported (" + "; ".join(errors) + ")")


FRAMEWORK: str = _choose()


def framework_module(name: str) -> ModuleType:
    """Import ``<framework>.<name>``, e.g. ``framework_module("lib.hub")``."""
    return importlib.import_module(f"{FRAMEWORK}.{name}")


def app_base() -> type:
    """The base class of applications: ``RyuApp`` in Ryu, ``OSKenApp`` in os-ken."""
    app_manager = framework_module("base.app_manager")
    base: type = getattr(app_manager, "RyuApp", None) or app_manager.OSKenApp
    return base


ofproto = framework_module("ofproto.ofproto_v1_3")
parser = framework_module("ofproto.ofproto_v1_3_parser")
nicira_ext = framework_module("ofproto.nicira_ext")
ofproto_parser_base = framework_module("ofproto.ofproto_parser")
packet_lib = framework_module("lib.packet")


_oxm_fields = framework_module("ofproto.oxm_fields")
_type_desc = framework_module("lib.type_desc")
ERICSSON_OXM_CLASS = 0x1000  # OVS's ERICOXM_OF_ class: a plain 32-bit OXM header, no experimenter id


class EricssonExtended(_oxm_fields._OxmClass):  # type: ignore[misc,name-defined]
    """The OXM class of Open vSwitch's Ericsson ND fields (OVS >= 2.11), which Ryu 4.34 lacks."""

    _class = ERICSSON_OXM_CLASS


def _add_ericsson_nd_fields() -> None:
    """Teach the framework's OXM tables ``nd_reserved`` and ``nd_options_type``.

    OVS's meta-flow.h declares them as ``ERICOXM_OF_ICMPV6_ND_RESERVED(1)`` (be32: the NS/NA
    word after the checksum, whose top bits are the R, S, O flags of an advertisement) and
    ``ERICOXM_OF_ICMPV6_ND_OPTIONS_TYPE(2)`` (u8: the type of the first link-layer address
    option), neither maskable, both with the prerequisite "ND". With them registered, Ryu's
    match and set-field objects encode them (headers 0x10000204 and 0x10000401) and flow
    stats read back from a switch decode them by name.
    """
    names = {f.name for f in ofproto.oxm_types}
    new = [EricssonExtended("nd_reserved", 1, _type_desc.Int4),
           EricssonExtended("nd_options_type", 2, _type_desc.Int1)]
    if not names.isdisjoint(f.name for f in new):
        return
    ofproto.oxm_types.extend(new)
    _oxm_fields.generate(ofproto.__name__)


_add_ericsson_nd_fields()
