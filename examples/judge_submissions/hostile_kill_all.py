# expect: RE (kill -9 of every process it may signal: there are none, then itself)
import os

try:
    os.kill(-1, 9)  # in its own pid namespace only its own processes, and kill(-1) spares the caller
except ProcessLookupError:
    pass
os.kill(os.getpid(), 9)
