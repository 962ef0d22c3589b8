"""ryu_overlay: network virtualization with L3 (VXLAN) overlays, programmed by a Ryu application."""

import warnings

# eventlet announces its own deprecation on import; Ryu cannot run without it.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

__version__ = "0.1.0"
