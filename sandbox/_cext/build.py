"""cffi build script (API mode): compiles the launcher into
``sandbox._sandbox_cext``.  The cdef is read from launch.h, between its
markers, so the declarations are written once."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools wants source paths relative to the project root
REL = "sandbox/_cext"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-fno-strict-aliasing"]


def _cdef() -> str:
    text = (HERE / "launch.h").read_text()
    return text.split("/* BEGIN CDEF */", 1)[1].split("/* END CDEF */", 1)[0]


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "sandbox._sandbox_cext",
    '#include "launch.h"\n',
    sources=[f"{REL}/launch_unsafe.c"],
    include_dirs=[REL],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
