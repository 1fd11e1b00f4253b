"""cffi build script (API mode): compiles the launcher, the exec I/O loop
and the file-call batches into ``sandbox._sandbox_cext``.  The cdef is read from the headers, between their
markers, so the declarations are written once."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools wants source paths relative to the project root
REL = "sandbox/_cext"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-fno-strict-aliasing"]


HEADERS = ("launch.h", "execio.h", "fsbatch.h")


def _cdef() -> str:
    parts = []
    for h in HEADERS:
        text = (HERE / h).read_text()
        parts.append(text.split("/* BEGIN CDEF */", 1)[1].split("/* END CDEF */", 1)[0])
    return "\n".join(parts)


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "sandbox._sandbox_cext",
    "".join(f'#include "{h}"\n' for h in HEADERS),
    sources=[f"{REL}/launch_unsafe.c", f"{REL}/tcpmetrics.c", f"{REL}/execio.c", f"{REL}/fsbatch.c"],
    include_dirs=[REL],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
