# expect: OLE (prints without end)
import sys

while True:
    sys.stdout.write("spam " * 1000 + "\n")
