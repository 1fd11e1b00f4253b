# expect: TLE (correct, but quadratic: too slow on the large test)
import sys

n, *xs = map(int, sys.stdin.read().split())
total = 0
for i in range(n):
    total = sum(xs[: i + 1])
print(total)
