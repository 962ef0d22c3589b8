"""Make the shared test modules in tests/ (scenario, testbed, controller_proc) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
