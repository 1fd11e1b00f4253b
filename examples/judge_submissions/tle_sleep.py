# expect: TLE (waits forever: the wall-clock timeout)
import time

time.sleep(3600)
