"""Everything is declared in setup.cfg; this file only adds ``ryu_overlay_shim.pth`` to the install.

A ``.pth`` file must sit at the top of site-packages, where no setup.cfg key puts a file, so
``build_py`` writes it: into the build directory for a wheel (``pip install .``), or, for a
PEP 660 editable install (``pip install -e .``, setuptools >= 64), straight into the editable
wheel, which setuptools assembles in the ``install`` command's ``install_lib``. Either way pip
records it, and ``pip uninstall`` removes it. ``ryu_overlay_shim.py`` says what it does.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "ryu_overlay_shim.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        self.mkpath(target)
        with open(os.path.join(target, PTH), "w", encoding="ascii") as out:
            out.write("import ryu_overlay_shim\n")

    def get_outputs(self, include_bytecode: bool = True) -> list:
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


setup(cmdclass={"build_py": BuildPyWithPth})
