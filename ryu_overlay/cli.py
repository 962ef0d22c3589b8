"""The ``ryu-overlay`` command.

``ryu-overlay [ryu-manager options] [more apps]`` runs the controller through Ryu's own
manager with ryu_overlay.app loaded, so every ``ryu-manager`` flag keeps working. Three
subcommands do other jobs:

* ``ryu-overlay setup-hypervisor ...`` prepares a hypervisor's Open vSwitch bridge;
* ``ryu-overlay trace ...`` shows what the pipeline would do with a packet;
* ``ryu-overlay ctl ...`` is a client of a running controller's REST API (``ctl.py``).
"""

from __future__ import annotations

import sys

USAGE_EXTRA = """
subcommands:
  ryu-overlay setup-hypervisor --help   prepare a hypervisor's Open vSwitch bridge
  ryu-overlay trace --help              trace a packet through the desired pipeline
  ryu-overlay ctl --help                show and change a running controller's state
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "setup-hypervisor":
        from . import hypervisor
        return hypervisor.main(argv[1:])
    if argv and argv[0] == "trace":
        from . import trace
        return trace.main(argv[1:])
    if argv and argv[0] == "ctl":
        from . import ctl
        return ctl.main(argv[1:])
    return run_controller(argv)


def run_controller(argv: list[str]) -> int:
    from .app import CLI_OPTS
    from .compat import FRAMEWORK, framework_module

    cfg = framework_module("cfg")
    cfg.CONF.register_cli_opts(CLI_OPTS)
    if "--help" in argv or "-h" in argv:
        print(USAGE_EXTRA)
    if FRAMEWORK == "ryu":
        framework_module("cmd.manager").main(args=[*argv, "ryu_overlay.app"], prog="ryu-overlay")
        return 0
    # os-ken 4.x has no manager command; start the apps the way it documents.
    cfg.CONF(args=argv, prog="ryu-overlay", project="os_ken")
    framework_module("lib.hub").patch(thread=True)
    app_manager = framework_module("base.app_manager")
    app_manager.AppManager.run_apps(["ryu_overlay.app"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
