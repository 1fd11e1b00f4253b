# expect: RE (the sandbox's /etc/shadow is the image's, and not readable by its user)
with open("/etc/shadow") as f:
    print(f.read())
