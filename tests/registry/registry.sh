#!/usr/bin/env bash
# The tests' registry: Debian's docker-registry (CNCF distribution) on
# 127.0.0.1, seeded with images built here from Debian packages.
#
#   registry.sh up      build the images (cached), make certs, start, push (when changed)
#   registry.sh stop    stop what `up` started (by pid, checked against its cmdline)
#   registry.sh status
#
# Endpoints (all serve one storage): plain http 127.0.0.1:5180, basic auth
# :5181, token auth :5182 (token server :5183), TLS :5184 (test CA).
# State in $SANDBOX_REGISTRY_DIR (default /var/tmp/sandbox-registry):
# run/env.json (addresses, CA, credentials) and run/images.json (the
# digests served: tests read them, never hard-code them).  `up` is
# idempotent and takes a second when warm; the servers keep running
# between test runs (plain host processes: the leak check ignores them).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${SANDBOX_REGISTRY_DIR:-/var/tmp/sandbox-registry}
RUN=$DIR/run OCI=$DIR/oci TLS=$DIR/tls
ROOTFS=${SANDBOX_ROOTFS_DIR:-/var/lib/sandbox/rootfs}/debian
PYTHON=${PYTHON:-python3}
H=127.0.0.1 PLAIN=5180 BASIC=5181 TOKEN=5182 TOKSRV=5183 TLSP=5184
USER_PW=testuser:testpassword SERVICE=sandbox-test-registry ISSUER=sandbox-test-issuer

log() { printf '== registry: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ours() { # NAME: the pid in NAME.pid is alive and runs the command we started
    local pid; pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    [ -r "/proc/$pid/cmdline" ] && [ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" = "$(cat "$RUN/$1.cmdline")" ] &&
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

build() {
    local stamp; stamp=$(cat "$HERE/mkoci.py" /bin/busybox | sha256sum | cut -c1-16)
    if [ "$(cat "$OCI/small.stamp" 2>/dev/null)" != "$stamp" ]; then
        log "building the small images"; "$PYTHON" "$HERE/mkoci.py" small "$OCI/small"; echo "$stamp" >"$OCI/small.stamp"
    fi
    [ -d "$ROOTFS" ] || die "no Debian rootfs at $ROOTFS (./dev builds it: images/debian)"
    stamp=$(stat -c %Y "$ROOTFS")-$(cat "$HERE/mkoci.py" | sha256sum | cut -c1-16)
    if [ "$(cat "$OCI/debian.stamp" 2>/dev/null)" != "$stamp" ]; then
        log "building debian:bookworm from $ROOTFS"
        rm -rf "$OCI/debian.tmp"; mkdir -p "$OCI/debian.tmp"
        tar --numeric-owner --xattrs --sort=name --mtime=@1704067200 -C "$ROOTFS" -cf - . |
            "$PYTHON" "$HERE/mkoci.py" rootfs "$OCI/debian.tmp" debian:bookworm debian:latest
        rm -rf "$OCI/debian"; mv "$OCI/debian.tmp" "$OCI/debian"; echo "$stamp" >"$OCI/debian.stamp"
    fi
}

certs() {
    [ -s "$TLS/server.pem" ] && [ -s "$TLS/token.pem" ] && return
    log "making the test CA and certificates"
    mkdir -p "$TLS"; cd "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca-key.pem -out ca.pem -subj "/CN=sandbox test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost" 2>/dev/null
    # SAN (Go clients need it) and the key identifiers (Python's strict X.509 checks need them)
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 -extfile server.ext \
        -out server.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout token-key.pem -out token.pem \
        -subj "/CN=sandbox token signer" 2>/dev/null
    htpasswd -Bbn "${USER_PW%%:*}" "${USER_PW#*:}" >htpasswd
    rm -f server.csr server.ext; cd - >/dev/null
}

config() { # NAME PORT EXTRA-YAML
    printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: sandbox-test-not-secret\n%s\n' \
        "$RUN/storage" "$H:$2" "$3" >"$RUN/$1.yml"
}

start() { # NAME URL CMD...
    local name=$1 url=$2 pid code; shift 2
    ours "$name" && return
    (exec 3<>"/dev/tcp/$H/${url##*:}") 2>/dev/null && die "$url is taken by a process we did not start"
    nohup "$@" >"$RUN/$name.log" 2>&1 </dev/null 9>&- &
    pid=$!; echo "$pid" >"$RUN/$name.pid"
    for _ in $(seq 200); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --cacert "$TLS/ca.pem" "$url/v2/" || true)
        case $code in 200|401|404) break ;; esac
        kill -0 "$pid" 2>/dev/null || die "$name exited: $(tail -3 "$RUN/$name.log")"
        sleep 0.05
    done
    tr '\0' ' ' <"/proc/$pid/cmdline" >"$RUN/$name.cmdline"
    log "$name: pid $pid at $url"
}

up() {
    mkdir -p "$RUN/storage" "$OCI"
    build; certs
    config plain $PLAIN ""
    config basic $BASIC "$(printf 'auth:\n  htpasswd:\n    realm: sandbox-test\n    path: %s' "$TLS/htpasswd")"
    config token $TOKEN "$(printf 'auth:\n  token:\n    realm: http://%s:%s/token\n    service: %s\n    issuer: %s\n    rootcertbundle: %s' \
        $H $TOKSRV $SERVICE $ISSUER "$TLS/token.pem")"
    config tls $TLSP "$(printf '  tls:\n    certificate: %s\n    key: %s' "$TLS/server.pem" "$TLS/server-key.pem")"
    start plain "http://$H:$PLAIN" docker-registry serve "$RUN/plain.yml"
    start basic "http://$H:$BASIC" docker-registry serve "$RUN/basic.yml"
    start token-server "http://$H:$TOKSRV" "$PYTHON" "$HERE/tokenserver.py" --listen "$H:$TOKSRV" \
        --key "$TLS/token-key.pem" --cert "$TLS/token.pem" --issuer $ISSUER --service $SERVICE --user $USER_PW
    start token "http://$H:$TOKEN" docker-registry serve "$RUN/token.yml"
    start tls "https://$H:$TLSP" docker-registry serve "$RUN/tls.yml"
    push
    cat >"$RUN/env.json" <<JSON
{"plain": "$H:$PLAIN", "basic": "$H:$BASIC", "token": "$H:$TOKEN", "tls": "$H:$TLSP",
 "ca": "$TLS/ca.pem", "user": "${USER_PW%%:*}", "password": "${USER_PW#*:}",
 "storage": "$RUN/storage", "log": "$RUN/plain.log", "images": "$RUN/images.json"}
JSON
}

push() {
    local want; want=$(cat "$OCI"/*.stamp | sha256sum | cut -c1-16)
    [ "$(cat "$RUN/pushed.stamp" 2>/dev/null)" = "$want" ] && [ -s "$RUN/images.json" ] && return
    local refs=() r
    cp() { skopeo copy -q --dest-tls-verify=false "$@"; }
    for r in busybox:latest busybox:zstd busybox:uncompressed whiteout:latest many:latest; do
        cp --preserve-digests "oci:$OCI/small:$r" "docker://$H:$PLAIN/library/$r"; refs+=("library/$r")
    done
    cp --all --preserve-digests "oci:$OCI/small:multiarch:latest" "docker://$H:$PLAIN/library/multiarch:latest"
    cp --format v2s2 "oci:$OCI/small:busybox:latest" "docker://$H:$PLAIN/library/busybox:v2s2"
    cp --all --format v2s2 "oci:$OCI/small:multiarch:latest" "docker://$H:$PLAIN/library/multiarch:v2s2"
    for r in debian:bookworm debian:latest; do
        cp --preserve-digests "oci:$OCI/debian:$r" "docker://$H:$PLAIN/library/$r"; refs+=("library/$r")
    done
    "$PYTHON" "$HERE/mkoci.py" record "$H:$PLAIN" "$RUN/images.json" "${refs[@]}" library/multiarch:latest \
        library/busybox:v2s2 library/multiarch:v2s2
    echo "$want" >"$RUN/pushed.stamp"
    log "pushed ${#refs[@]}+3 images; digests in $RUN/images.json"
}

stop() {
    local n pid
    for n in tls token token-server basic plain; do
        if ours "$n"; then
            pid=$(cat "$RUN/$n.pid"); kill "$pid"
            for _ in $(seq 50); do ours "$n" || break; sleep 0.1; done
            log "stopped $n (pid $pid)"
        fi
        rm -f "$RUN/$n.pid" "$RUN/$n.cmdline"
    done
}

mkdir -p "$DIR"
exec 9>"$DIR/.lock"; flock 9   # one caller at a time (pytest processes, ./dev)
case ${1:-up} in
up) up ;;
stop) stop ;;
status) for n in plain basic token-server token tls; do ours $n && echo "$n: running" || echo "$n: stopped"; done ;;
*) sed -n '2,16p' "$0"; exit 2 ;;
esac
