#!/bin/sh
# Makes the mutual-TLS material docker-compose.yml mounts for Temporal:
#   ca.pem / ca.key              a private CA, the only one Temporal and its clients trust
#   temporal.pem / temporal.key  the `temporal` service (server, and client between its own services)
#   api.pem, worker.pem, ui.pem  client certificates (with their .key) for the API, worker and Web UI
#
#   deploy/make-certs.sh [DIR]   (default: deploy/certs next to this script)
#
# Refuses to overwrite an existing CA: re-issuing it would lock out every client already
# deployed. To rotate, move DIR aside and run again. No container mounts ca.key: once the
# certificates are made, move it somewhere offline (it is needed again only to issue more).
set -eu

DIR=${1:-"$(dirname "$0")/certs"}
DAYS=${CERT_DAYS:-825}
if [ -e "$DIR/ca.key" ]; then
    echo "error: $DIR/ca.key exists; move $DIR aside to make a new CA" >&2
    exit 2
fi
mkdir -p "$DIR"
printf '*\n' >"$DIR/.gitignore" # keys never go into the repository
umask 077
EXT=$(mktemp)
trap 'rm -f "$EXT" "$EXT.log" "$DIR"/*.csr' EXIT

# P-256 keys in PKCS#8: what Go (Temporal) and rustls (the Python SDK's core) both read.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/$1.key"; }

key ca
openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days "$DAYS" -subj "/O=continuity/CN=continuity temporal CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$DIR/ca.pem"

# issue NAME EXTENDED_KEY_USAGE SUBJECT_ALT_NAMES
issue() {
    key "$1"
    openssl req -new -key "$DIR/$1.key" -subj "/O=continuity/CN=$1" -out "$DIR/$1.csr"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$2"
        echo "subjectAltName=$3"
    } >"$EXT"
    # Quiet unless it fails: OpenSSL 3 reports every good signature on stderr.
    if ! openssl x509 -req -in "$DIR/$1.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
        -CAcreateserial -sha256 -days "$DAYS" -extfile "$EXT" -out "$DIR/$1.pem" 2>"$EXT.log"; then
        cat "$EXT.log" >&2
        exit 1
    fi
}

# Temporal's services present this certificate to each other too, hence clientAuth.
issue temporal serverAuth,clientAuth DNS:temporal,DNS:localhost
for client in api worker ui; do
    issue "$client" clientAuth "DNS:$client"
done
rm -f "$DIR/ca.srl"

# The containers run as other users than the one running this script (temporal: uid 1000,
# api and worker: `continuity`), so the mounted files are readable by all; the directory is
# not, which keeps the host's other users out (compose mounts each file, not the directory).
chmod 0644 "$DIR"/*.pem "$DIR"/*.key
chmod 0600 "$DIR/ca.key"
chmod 0700 "$DIR"
echo "certificates in $DIR; move $DIR/ca.key somewhere offline"
