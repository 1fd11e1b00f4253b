# expect: RE (a fork bomb: the pids limit ends it)
import os

while True:
    try:
        os.fork()
    except OSError:
        pass
