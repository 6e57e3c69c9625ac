#!/usr/bin/env bash
# make tls-certs: a local CA and a certificate for the user-service, for TLS
# between the CLI and the user-service (docker-compose.tls.yml; README, "TLS
# between the CLI and the user-service").
#
#   scripts/tls-certs.sh [DIR]      DIR defaults to .run/tls
#
# Writes ca.key and ca.crt (once: an existing CA is kept, so certificates it
# signed stay trusted), then user-service.key and user-service.crt, valid for
# the names user-service and localhost, the address 127.0.0.1, and the DNS
# names in TLS_NAMES (comma-separated). Keys are mode 0600 in a 0700 folder.
# Mount only the files a container needs: never ca.key.
set -euo pipefail
command -v openssl >/dev/null || { echo "tls-certs: openssl is required (apt-get install openssl)" >&2; exit 1; }

dir=${1:-.run/tls}
mkdir -p "$dir"
chmod 700 "$dir"
umask 077

sans="DNS:user-service,DNS:localhost,IP:127.0.0.1"
IFS=, read -r -a extra <<<"${TLS_NAMES:-}"
for n in ${extra[@]+"${extra[@]}"}; do
  [ -n "$n" ] && sans="$sans,DNS:$n"
done

if [ ! -f "$dir/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 1825 -subj "/CN=shippy local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt" 2>/dev/null
fi

openssl ecparam -name prime256v1 -genkey -noout -out "$dir/user-service.key"
openssl req -new -key "$dir/user-service.key" -subj "/CN=user-service" -out "$dir/user-service.csr"
printf 'subjectAltName=%s\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' "$sans" >"$dir/user-service.ext"
openssl x509 -req -in "$dir/user-service.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 397 -sha256 -extfile "$dir/user-service.ext" -out "$dir/user-service.crt" 2>/dev/null
rm -f "$dir/user-service.csr" "$dir/user-service.ext"
chmod 644 "$dir/ca.crt" "$dir/user-service.crt"
openssl verify -CAfile "$dir/ca.crt" "$dir/user-service.crt" >/dev/null
echo "tls-certs: $dir/user-service.crt for $sans, signed by $dir/ca.crt"
