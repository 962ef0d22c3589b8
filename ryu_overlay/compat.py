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
