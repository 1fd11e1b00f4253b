# expect: RE (every write outside /tmp fails; /tmp is the sandbox's own tmpfs)
import os

# inside the sandbox's /tmp this works, and the host's /tmp never sees it
with open("/tmp/judge-hostile-canary", "w") as f:
    f.write("written by a submission\n")
for path in ("/srv/judge-hostile-canary", "/etc/judge-hostile-canary", "/judge-hostile-canary"):
    try:
        with open(path, "w") as f:
            f.write("escaped\n")
        print("wrote", path)
    except OSError as e:
        print(path, e.strerror)
os.chmod("/srv/main.py", 0o777)  # its own (host) file, mounted read-only: raises
