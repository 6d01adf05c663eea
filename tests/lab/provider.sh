#!/usr/bin/env bash
# OpenSSL 3 through pkcs11-provider (the provider path that replaces engines),
# with kernel-held keys named only by pkcs11: URIs: storeutl lists them with
# their URIs, the public object is the key file's public key, pkeyutl and dgst
# sign (PKCS#1 v1.5, PSS) and decrypt (PKCS#1 v1.5, OAEP with and without a
# digest given), req makes a self-signed certificate and a CSR, s_server
# serves TLS 1.3 and 1.2 with that certificate; then once more with the
# module named by PKCS11_PROVIDER_MODULE instead of the config file.
# Everything public is checked with plain openssl (no provider) against the
# key files; every check runs even when an earlier one failed.
# Runs inside the lab guest. Usage: provider.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-provider.XXXXXX)
port=${KP11_PROVIDER_PORT:-4434}
suite=provider
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

modulesdir=$(openssl version -m | sed -nE 's/^MODULESDIR: "(.*)"$/\1/p')
provider_so=$modulesdir/pkcs11.so
[ -f "$provider_so" ] || die "pkcs11-provider not found at $provider_so (lab/setup installs it from bookworm-backports)"

# write_conf FILE [MODULE]: the openssl.cnf of the README: the default
# provider and pkcs11-provider, both active; with MODULE, the provider loads
# it (pkcs11-module-path), without, PKCS11_PROVIDER_MODULE or its default,
# p11-kit-proxy.
write_conf() {
  cat > "$1" <<CNF
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect

[default_sect]
activate = 1

[pkcs11_sect]
module = $provider_so
${2:+pkcs11-module-path = $2}
activate = 1
CNF
}
write_conf "$work/openssl.cnf" "$module"
write_conf "$work/env.cnf"
# p11: openssl with the provider and the module. plain: openssl with no
# configuration, so only the default provider: for everything public.
p11() { OPENSSL_CONF=$work/openssl.cnf openssl "$@"; }
plain() { OPENSSL_CONF=/dev/null openssl "$@"; }
uri() { echo "pkcs11:token=user;object=kp11-prov-$1;type=${2:-private}"; }

echo "# kernel $(uname -r); module $module; provider $provider_so ($(dpkg-query -W -f '${Version}' pkcs11-provider 2> /dev/null || echo '?')); $(openssl version)"

for bits in 2048 3072; do
  [ -r "$keys/rsa$bits.pem" ] || die "$keys/rsa$bits.pem missing (lab/test makes it)"
  id=$(keyctl padd asymmetric "kp11-prov-$bits" @u < "$keys/rsa$bits.pk8.der") \
    || die "keyctl padd asymmetric (is pkcs8_key_parser loaded? modprobe pkcs8_key_parser)"
  loaded+=("$id")
  plain pkey -in "$keys/rsa$bits.pem" -pubout -out "$work/pub$bits.pem" || die "openssl pkey -pubout rsa$bits.pem"
  plain pkey -in "$keys/rsa$bits.pem" -pubout -outform DER -out "$work/pub$bits.der"
done
head -c 3000 /dev/urandom > "$work/data"
for md in sha1 sha256 sha512; do plain dgst -"$md" -binary -out "$work/data.$md" "$work/data"; done
ok "loaded 2048/3072-bit keys into @u; $work/openssl.cnf: pkcs11-module-path = the module"

# --- the store: keys found by URI -------------------------------------------
# storeutl -text prints each private key's full URI; that URI, as printed,
# must name the same key again (it is used below).
listed() { # BITS: the private key's URI as storeutl printed it
  sed -nE "s/^URI (pkcs11:.*;object=kp11-prov-$1;type=private)\$/\1/p" "$work/store" | head -n 1
}
store_lists() {
  p11 storeutl -keys -text 'pkcs11:token=user' > "$work/store" 2> "$work/store.err" \
    || { echo "storeutl failed:"; cat "$work/store.err"; return 1; }
  local bits u
  for bits in 2048 3072; do
    u=$(listed "$bits")
    [ -n "$u" ] || { echo "no URI line for kp11-prov-$bits in:"; cat "$work/store"; return 1; }
    case $u in *"token=user"*"manufacturer=Linux%20kernel%20keyrings"* | *"manufacturer=Linux%20kernel%20keyrings"*"token=user"*) ;;
      *) echo "URI lacks token/manufacturer: $u"; return 1 ;; esac
    grep -qF "PKCS11 RSA Private Key ($bits bits)" "$work/store" || { echo "no $bits-bit RSA private key listed"; cat "$work/store"; return 1; }
  done
  p11 storeutl 'pkcs11:token=user;object=kp11-prov-2048;type=public' > "$work/store.pub" 2>&1 \
    && grep -q '^0: Public key$' "$work/store.pub" && grep -qx 'Total found: 1' "$work/store.pub" \
    || { echo "the public object is not found by its URI:"; cat "$work/store.pub"; return 1; }
}
check "storeutl -keys -text 'pkcs11:token=user' lists both keys with their URIs; the public object is found by URI" store_lists

pubkey_matches() { # BITS
  local bits=$1 u
  p11 pkey -pubin -in "$(uri "$bits" public)" -pubout -out "$work/p11pub$bits.pem" \
    || { echo "pkey -pubin -in $(uri "$bits" public) failed"; return 1; }
  cmp -s <(plain pkey -pubin -in "$work/p11pub$bits.pem" -outform DER) "$work/pub$bits.der" \
    || { echo "the public object's key differs from the key file's"; return 1; }
  # The private key's URI, exactly as storeutl listed it, names the same key.
  u=$(listed "$bits")
  [ -n "$u" ] || { echo "storeutl listed no URI for $bits bits"; return 1; }
  p11 pkey -in "$u" -pubout -outform DER -out "$work/p11priv$bits.der" \
    || { echo "pkey -in '$u' -pubout failed"; return 1; }
  cmp -s <(plain rsa -RSAPublicKey_in -inform DER -in "$work/p11priv$bits.der" -pubout -outform DER 2> /dev/null \
            || plain pkey -pubin -inform DER -in "$work/p11priv$bits.der" -outform DER) "$work/pub$bits.der" \
    || { echo "the public half of '$u' differs from the key file's"; return 1; }
}
for bits in 2048 3072; do
  check "$bits-bit: pkey -pubin -pubout of $(uri "$bits" public) is the key file's public key; so is the listed private URI's" pubkey_matches "$bits"
done

# --- signatures ----------------------------------------------------------------
sign_pkcs1() { # BITS MD: pkeyutl over a digest (CKM_RSA_PKCS on a DigestInfo)
  local bits=$1 md=$2 sig=$work/sig.pkcs1.$1.$2
  p11 pkeyutl -sign -inkey "$(uri "$bits")" -in "$work/data.$md" -out "$sig" -pkeyopt digest:"$md" \
    || { echo "provider PKCS#1 v1.5 signing failed"; return 1; }
  plain pkeyutl -verify -pubin -inkey "$work/pub$bits.pem" -in "$work/data.$md" -sigfile "$sig" -pkeyopt digest:"$md" \
    || { echo "signature does not verify with the key file's public key"; return 1; }
  # PKCS#1 v1.5 is deterministic: byte for byte what the key file gives.
  plain pkeyutl -sign -inkey "$keys/rsa$bits.pem" -in "$work/data.$md" -out "$sig.file" -pkeyopt digest:"$md"
  cmp -s "$sig" "$sig.file" || { echo "signature differs from openssl's with the key file"; return 1; }
}
# pss_opts PREFIX MD SALTLEN: sets the array pss to PSS options for pkeyutl
# (-pkeyopt) or dgst (-sigopt).
pss_opts() { pss=("$1" rsa_padding_mode:pss "$1" rsa_pss_saltlen:"$3" "$1" rsa_mgf1_md:"$2"); }
sign_pss() { # BITS MD SALTLEN(digest|max)
  local bits=$1 md=$2 salt=$3 sig=$work/sig.pss.$1.$2.$3 hlen want
  pss_opts -pkeyopt "$md" "$salt"
  p11 pkeyutl -sign -inkey "$(uri "$bits")" -in "$work/data.$md" -out "$sig" -pkeyopt digest:"$md" "${pss[@]}" \
    || { echo "provider PSS signing failed"; return 1; }
  hlen=$(stat -c %s "$work/data.$md")
  case $salt in digest) want=$hlen ;; max) want=$((bits / 8 - hlen - 2)) ;; esac
  # Verified with the exact salt length asked for, not auto-detected.
  pss_opts -pkeyopt "$md" "$want"
  plain pkeyutl -verify -pubin -inkey "$work/pub$bits.pem" -in "$work/data.$md" -sigfile "$sig" -pkeyopt digest:"$md" "${pss[@]}" \
    || { echo "PSS signature does not verify with salt length $want"; return 1; }
}
dgst_sign() { # MODE: dgst -sign hashes in the provider's mechanism (CKM_SHA256_RSA_PKCS[_PSS])
  local sig=$work/sig.dgst.$1 opts=()
  [ "$1" = pss ] && { pss_opts -sigopt sha256 digest; opts=("${pss[@]}"); }
  p11 dgst -sha256 -sign "$(uri 2048)" "${opts[@]}" -out "$sig" "$work/data" \
    || { echo "provider dgst -sign failed"; return 1; }
  plain dgst -sha256 -verify "$work/pub2048.pem" "${opts[@]}" -signature "$sig" "$work/data" \
    || { echo "dgst signature does not verify with the key file's public key"; return 1; }
}
for md in sha256 sha512; do
  check "2048-bit: pkeyutl -sign PKCS#1 v1.5 $md by URI; openssl verifies, same bytes as the key file" sign_pkcs1 2048 "$md"
done
check "3072-bit: pkeyutl -sign PKCS#1 v1.5 sha256 by URI; openssl verifies, same bytes as the key file" sign_pkcs1 3072 sha256
for salt in digest max; do
  check "2048-bit: pkeyutl -sign PSS sha256 mgf1-sha256 saltlen:$salt by URI; openssl verifies" sign_pss 2048 sha256 "$salt"
done
check "3072-bit: pkeyutl -sign PSS sha512 mgf1-sha512 saltlen:digest by URI; openssl verifies" sign_pss 3072 sha512 digest
check "2048-bit: dgst -sha256 -sign by URI (PKCS#1 v1.5); openssl dgst -verify" dgst_sign pkcs1
check "2048-bit: dgst -sha256 -sign by URI with -sigopt PSS; openssl dgst -verify" dgst_sign pss

# The verify steps above prove something only if a wrong key is rejected.
negative() {
  if plain pkeyutl -verify -pubin -inkey "$work/pub3072.pem" -in "$work/data.sha256" \
      -sigfile "$work/sig.pkcs1.2048.sha256" -pkeyopt digest:sha256 > /dev/null 2>&1; then
    echo "the 2048-bit key's signature verified with the 3072-bit public key"; return 1
  fi
  [ -s "$work/sig.pkcs1.2048.sha256" ] || { echo "no signature to test with"; return 1; }
}
check "openssl rejects the provider's signature under another public key (the verify steps are meaningful)" negative

# --- decryption -------------------------------------------------------------------
# Encrypted with the public key file by plain openssl, decrypted through the
# provider with the kernel key.
decrypt() { # BITS NAME PKEYOPTS...
  local bits=$1 name=$2 pt=$work/pt.$1.$2 ct=$work/ct.$1.$2; shift 2
  head -c 32 /dev/urandom > "$pt"
  plain pkeyutl -encrypt -pubin -inkey "$work/pub$bits.pem" -in "$pt" -out "$ct" "$@" \
    || { echo "openssl could not encrypt with the public key file"; return 1; }
  p11 pkeyutl -decrypt -inkey "$(uri "$bits")" -in "$ct" -out "$ct.out" "$@" \
    || { echo "provider decryption failed"; return 1; }
  cmp "$pt" "$ct.out" || { echo "decrypted text differs from the plaintext"; return 1; }
}
oaep=(-pkeyopt rsa_padding_mode:oaep)
check "2048-bit: pkeyutl -decrypt PKCS#1 v1.5 by URI" decrypt 2048 pkcs1
check "3072-bit: pkeyutl -decrypt PKCS#1 v1.5 by URI" decrypt 3072 pkcs1
check "2048-bit: pkeyutl -decrypt OAEP rsa_oaep_md:sha1 (MGF1 digest not given)" \
  decrypt 2048 oaep-sha1 "${oaep[@]}" -pkeyopt rsa_oaep_md:sha1
check "2048-bit: pkeyutl -decrypt OAEP rsa_oaep_md:sha256 (MGF1 digest not given)" \
  decrypt 2048 oaep-sha256 "${oaep[@]}" -pkeyopt rsa_oaep_md:sha256
check "3072-bit: pkeyutl -decrypt OAEP rsa_oaep_md:sha256 rsa_mgf1_md:sha256 rsa_oaep_label" \
  decrypt 3072 oaep-sha256-label "${oaep[@]}" -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -pkeyopt rsa_oaep_label:6b70313120746573
# No digest given: the provider sends hashAlg 0, mgf 0; the module takes
# OpenSSL's default, SHA-1 with MGF1-SHA-1 (README, Mechanisms).
check "2048-bit: pkeyutl -decrypt OAEP with no digest given (OpenSSL's default SHA-1)" \
  decrypt 2048 oaep-default "${oaep[@]}"

# --- certificates ---------------------------------------------------------------
# A self-signed certificate and a CSR signed by the kernel key, checked by
# plain openssl; s_server below serves this certificate.
self_signed() {
  p11 req -new -x509 -key "$(uri 2048)" -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -days 2 -out "$work/cert.pem" || { echo "req -new -x509 -key $(uri 2048) failed"; return 1; }
  cmp -s <(plain x509 -in "$work/cert.pem" -noout -pubkey | plain pkey -pubin -outform DER) "$work/pub2048.der" \
    || { echo "the certificate's public key is not the key file's"; return 1; }
  plain verify -CAfile "$work/cert.pem" "$work/cert.pem" \
    || { echo "the self-signed certificate's signature does not verify"; return 1; }
}
csr() {
  p11 req -new -key "$(uri 3072)" -subj /CN=kp11-provider-csr -out "$work/csr.pem" \
    || { echo "req -new -key $(uri 3072) failed"; return 1; }
  plain req -in "$work/csr.pem" -verify -noout || { echo "the CSR's signature does not verify"; return 1; }
  cmp -s <(plain req -in "$work/csr.pem" -noout -pubkey | plain pkey -pubin -outform DER) "$work/pub3072.der" \
    || { echo "the CSR's public key is not the key file's"; return 1; }
}
check "req -new -x509 -key $(uri 2048): self-signed certificate of the key file's public key; openssl verify" self_signed
check "req -new -key $(uri 3072): CSR of the key file's public key; openssl req -verify" csr

# --- TLS ------------------------------------------------------------------------
if [ -s "$work/cert.pem" ]; then
  # Bounded: the server goes at the end of the script, or after 300 s.
  OPENSSL_CONF=$work/openssl.cnf timeout 300 openssl s_server -key "$(uri 2048)" -cert "$work/cert.pem" \
    -accept "127.0.0.1:$port" -www < /dev/null > "$work/server.log" 2>&1 &
  server_pid=$!
fi
server_up() {
  [ -n "$server_pid" ] || { echo "no certificate, so no server"; return 1; }
  for _ in $(seq 1 600); do
    grep -q '^ACCEPT' "$work/server.log" 2> /dev/null && return 0
    kill -0 "$server_pid" 2> /dev/null || { echo "s_server exited:"; cat "$work/server.log"; return 1; }
    sleep 0.1
  done
  echo "s_server did not print ACCEPT within 60 s:"; cat "$work/server.log"; return 1
}
tls() { # FLAG PROTO SIGTYPE [CLIENT ARGS...]
  local flag=$1 proto=$2 sigtype=$3 out=$work/tls$1${4:-} before rc; shift 3
  [ -n "$server_pid" ] && kill -0 "$server_pid" 2> /dev/null || { echo "s_server is not running"; return 1; }
  before=$(wc -l < "$work/server.log")
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client -connect "127.0.0.1:$port" "$flag" "$@" \
    -CAfile "$work/cert.pem" -verify_return_error -ign_eof > "$out" 2> "$out.err"
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q "^New, $proto, Cipher is" "$out"; then
    echo "handshake failed (s_client exit $rc)"; tail -n 5 "$out.err"
    echo "server said:"; tail -n +"$((before + 1))" "$work/server.log" | head -n 15; return 1
  fi
  grep -qE '^ *Verify return code: 0 \(ok\)' "$out" || { echo "server certificate did not verify"; return 1; }
  grep -qx "Peer signature type: $sigtype" "$out" || { echo "peer signature type is not $sigtype:"; grep -i 'peer sig' "$out"; return 1; }
  grep -q '^HTTP/1.0 200 ok' "$out" || { echo "no HTTP answer from s_server -www"; tail -n 5 "$out"; return 1; }
}
check "s_server -key $(uri 2048) (through the provider) listens on 127.0.0.1:$port" server_up
check "TLS 1.3: s_client handshake (RSA-PSS by the kernel key), certificate verifies, HTTP answer" tls -tls1_3 TLSv1.3 RSA-PSS
check "TLS 1.2: s_client handshake (RSA-PSS), HTTP answer" tls -tls1_2 TLSv1.2 RSA-PSS
check "TLS 1.2 with -sigalgs RSA+SHA256 (PKCS#1 v1.5): s_client handshake, HTTP answer" tls -tls1_2 TLSv1.2 RSA -sigalgs RSA+SHA256
if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; server_pid=; fi

# --- PKCS11_PROVIDER_MODULE instead of pkcs11-module-path ---------------------------
# The same configuration without pkcs11-module-path: with the variable the
# provider loads our module; without it, its default (p11-kit-proxy, with
# which this module is not registered here) does not know the key, which
# shows the variable is what found it.
env_module() {
  PKCS11_PROVIDER_MODULE=$module OPENSSL_CONF=$work/env.cnf openssl storeutl -keys -text 'pkcs11:token=user' > "$work/store.env" 2>&1 \
    && grep -qF ';object=kp11-prov-2048;type=private' "$work/store.env" \
    || { echo "PKCS11_PROVIDER_MODULE=$module: storeutl did not list the key:"; cat "$work/store.env"; return 1; }
  PKCS11_PROVIDER_MODULE=$module OPENSSL_CONF=$work/env.cnf openssl pkeyutl -sign -inkey "$(uri 2048)" \
    -in "$work/data.sha256" -out "$work/sig.env" -pkeyopt digest:sha256 \
    || { echo "PKCS11_PROVIDER_MODULE=$module: signing failed"; return 1; }
  plain pkeyutl -verify -pubin -inkey "$work/pub2048.pem" -in "$work/data.sha256" -sigfile "$work/sig.env" -pkeyopt digest:sha256 \
    || { echo "the signature does not verify"; return 1; }
  if OPENSSL_CONF=$work/env.cnf openssl storeutl -keys -text 'pkcs11:token=user' 2>&1 | grep -qF 'object=kp11-prov-2048;'; then
    echo "without PKCS11_PROVIDER_MODULE the key was found all the same (is keyring-pkcs11 registered with p11-kit here?)"; return 1
  fi
}
check "PKCS11_PROVIDER_MODULE=<module> with no pkcs11-module-path: storeutl lists the key, pkeyutl signs, openssl verifies; without it the key is not found" env_module

summary
