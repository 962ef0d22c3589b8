"""Lets Ryu 4.34 import on Python >= 3.10, in any program of the environment (plain ``ryu-manager`` too).

``ryu.app.wsgi``, which ``ryu.cmd.manager`` imports before it loads any application, reads
``eventlet.wsgi.ALREADY_HANDLED``; no eventlet that runs on Python >= 3.10 defines it. The
installed ``ryu_overlay_shim.pth`` imports this module at interpreter start-up. It only puts a
finder at the head of ``sys.meta_path`` that, the first time ``ryu.app.wsgi`` is about to be
imported, supplies the sentinel; eventlet is not imported before then, and every other import
costs one string comparison. The module imports nothing but ``sys`` (no ``typing``) to keep
start-up cheap. ``ryu_overlay.compat`` installs the finder too, for a checkout run without
the install (``PYTHONPATH``).
"""

import sys

TRIGGER = "ryu.app.wsgi"


def supply_already_handled() -> None:
    """Define ``eventlet.wsgi.ALREADY_HANDLED`` if this eventlet lacks it (what Ryu 4.34 expects)."""
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()


class RyuWsgiFinder:
    """A meta path finder that finds nothing; it only runs ``supply_already_handled`` first."""

    done = False

    @classmethod
    def find_spec(cls, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == TRIGGER and not cls.done:
            cls.done = True
            import contextlib

            with contextlib.suppress(ImportError):  # no eventlet: Ryu's own import error is the one to show
                supply_already_handled()


def install() -> None:
    if RyuWsgiFinder not in sys.meta_path:
        sys.meta_path.insert(0, RyuWsgiFinder)


install()
