"""Build glue: the cffi launcher extension, and the sandbox init, a static
executable shipped inside the package (it runs inside sandboxes, where no
host library is reachable)."""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
INIT_SRC = HERE / "sandbox" / "_cext" / "init.c"
INIT_NAME = "sandbox-init"
# No libc (see _cext/rt.h): our own _start, raw system calls.  The loop
# pattern option keeps gcc from turning rt's memcpy loop into a memcpy call.
INIT_FLAGS = [
    "-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector", "-fno-pie", "-no-pie",
    "-fno-tree-loop-distribute-patterns", "-fno-asynchronous-unwind-tables",
    "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-s",
]


class BuildWithInit(build_ext):
    def run(self) -> None:
        super().run()
        outdirs = {Path(self.build_lib) / "sandbox"}
        if self.inplace or getattr(self, "editable_mode", False):
            outdirs.add(HERE / "sandbox")
        for out in outdirs:
            out.mkdir(parents=True, exist_ok=True)
            cc = self.compiler.compiler_so[0] if self.compiler else "cc"
            tmp = out / (INIT_NAME + ".tmp")
            subprocess.run(
                [cc, *INIT_FLAGS, "-I", str(INIT_SRC.parent), "-o", str(tmp), str(INIT_SRC), "-lgcc"],
                check=True,
            )
            tmp.replace(out / INIT_NAME)
        # The seccomp profiles live at the top (policies/); a wheel carries a
        # copy inside the package, where sandbox.seccomp looks first.
        wheel_pkg = Path(self.build_lib) / "sandbox" / "policies"
        wheel_pkg.mkdir(parents=True, exist_ok=True)
        for f in (HERE / "policies").glob("*.json"):
            shutil.copyfile(f, wheel_pkg / f.name)


setup(cffi_modules=["sandbox/_cext/build.py:ffibuilder"], cmdclass={"build_ext": BuildWithInit})
