# expect: RE (an uncaught exception: exit status 1)
import sys

n, *xs = map(int, sys.stdin.read().split())
print(sum(xs) // (n - n))
