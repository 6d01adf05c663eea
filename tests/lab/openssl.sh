#!/usr/bin/env bash
# OpenSSL 3 with the libp11 engine (libengine-pkcs11-openssl) and kernel-held
# keys addressed by PKCS#11 URI: PKCS#1 v1.5, PSS and raw signatures, PKCS#1
# v1.5 (with implicit rejection), OAEP and raw decryption, and TLS 1.3/1.2
# from an s_server whose key is in the kernel. Every signature and plaintext is checked with plain openssl
# against the key file; every check runs even when an earlier one failed.
# Runs inside the lab guest. Usage: openssl.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-openssl.XXXXXX)
port=${KP11_TLS_PORT:-4433}
suite=openssl
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# The engine is loaded from a config file of our own: MODULE_PATH = the module.
. "$(dirname "${BASH_SOURCE[0]}")/../../lab/lib/sshd.sh"
write_engine_conf "$work/openssl.cnf" "$module" || die "libp11 engine (libengine-pkcs11-openssl) not found"
write_conf() { write_engine_conf "$@"; }
# eng: openssl with the engine and the key in the kernel. plain: openssl with
# the system's configuration and no engine, for everything public.
eng() { OPENSSL_CONF=$work/openssl.cnf openssl "$@"; }
plain() { openssl "$@"; }
uri() { echo "pkcs11:token=user;object=kp11-ossl-$1;type=private"; }
# epk OP BITS ARGS...: openssl pkeyutl -OP with the kernel key, through the engine.
epk() { local op=$1 bits=$2; shift 2; eng pkeyutl -"$op" -engine pkcs11 -keyform engine -inkey "$(uri "$bits")" "$@"; }

echo "# kernel $(uname -r); module $module; engine $engine_so; $(openssl version)"

for bits in 2048 4096; do
  [ -r "$keys/rsa$bits.pem" ] || die "$keys/rsa$bits.pem missing (lab/test makes it)"
  id=$(openssl pkcs8 -topk8 -outform DER -nocrypt -in "$keys/rsa$bits.pem" | keyctl padd asymmetric "kp11-ossl-$bits" @u) \
    || die "keyctl padd asymmetric (is pkcs8_key_parser loaded? modprobe pkcs8_key_parser)"
  loaded+=("$id")
  plain pkey -in "$keys/rsa$bits.pem" -pubout -out "$work/pub$bits.pem" || die "openssl pkey -pubout rsa$bits.pem"
done
head -c 3000 /dev/urandom > "$work/data"
for md in sha256 sha512; do plain dgst -"$md" -binary -out "$work/data.$md" "$work/data"; done
ok "loaded 2048/4096-bit keys into @u; engine config $work/openssl.cnf (MODULE_PATH = module)"

# The engine sees the key: its public half is the key file's.
engine_pubkey() { # BITS
  local bits=$1
  eng pkey -engine pkcs11 -inform engine -in "$(uri "$bits")" -pubout -out "$work/epub$bits.pem" \
    || { echo "the engine cannot load $(uri "$bits")"; return 1; }
  cmp -s <(plain pkey -pubin -in "$work/epub$bits.pem" -outform DER) <(plain pkey -pubin -in "$work/pub$bits.pem" -outform DER) \
    || { echo "public key through the engine differs from the key file's"; return 1; }
}
for bits in 2048 4096; do
  check "engine loads $(uri $bits); its public key is the file's" engine_pubkey "$bits"
done

# --- signatures --------------------------------------------------------------
# The engine is handed the digest, as TLS and CMS code do (pkeyutl -sign on a
# hash with -pkeyopt digest:...). PKCS#1 v1.5 reaches the module as
# CKM_RSA_PKCS over a DigestInfo; PSS as CKM_RSA_PKCS_PSS + CK_RSA_PKCS_PSS_PARAMS
# (libp11 falls back to PSS padding in software + CKM_RSA_X_509 if that fails).
sign_pkcs1() { # BITS MD
  local bits=$1 md=$2 sig=$work/sig.pkcs1.$1.$2
  epk sign "$bits" -in "$work/data.$md" -out "$sig" -pkeyopt digest:"$md" \
    || { echo "engine PKCS#1 v1.5 signing failed (CKM_RSA_PKCS)"; return 1; }
  plain pkeyutl -verify -pubin -inkey "$work/pub$bits.pem" -in "$work/data.$md" -sigfile "$sig" -pkeyopt digest:"$md" \
    || { echo "signature does not verify with the key file's public key"; return 1; }
  # PKCS#1 v1.5 is deterministic: byte for byte what the key file gives.
  plain pkeyutl -sign -inkey "$keys/rsa$bits.pem" -in "$work/data.$md" -out "$sig.file" -pkeyopt digest:"$md"
  cmp -s "$sig" "$sig.file" || { echo "signature differs from openssl's with the key file"; return 1; }
}
# pss_opts MD SALTLEN: sets the array pss to the pkeyutl options for PSS.
pss_opts() { pss=(-pkeyopt digest:"$1" -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:"$2" -pkeyopt rsa_mgf1_md:"$1"); }
sign_pss() { # BITS MD SALTLEN(digest|max)
  local bits=$1 md=$2 salt=$3 sig=$work/sig.pss.$1.$2.$3 hlen want
  pss_opts "$md" "$salt"
  epk sign "$bits" -in "$work/data.$md" -out "$sig" "${pss[@]}" \
    || { echo "engine PSS signing failed (CKM_RSA_PKCS_PSS, or the CKM_RSA_X_509 fallback)"; return 1; }
  [ "$(stat -c %s "$sig")" -eq $((bits / 8)) ] || { echo "signature is $(stat -c %s "$sig") bytes, not $((bits / 8))"; return 1; }
  pss_opts "$md" auto
  plain pkeyutl -verify -pubin -inkey "$work/pub$bits.pem" -in "$work/data.$md" -sigfile "$sig" "${pss[@]}" \
    || { echo "PSS signature does not verify (salt length auto-detected)"; return 1; }
  # Then with the exact salt length asked for.
  hlen=$(( $(stat -c %s "$work/data.$md") ))
  case $salt in
    digest) want=$hlen ;;
    max) want=$((bits / 8 - hlen - 2)) ;;
  esac
  pss_opts "$md" "$want"
  plain pkeyutl -verify -pubin -inkey "$work/pub$bits.pem" -in "$work/data.$md" -sigfile "$sig" "${pss[@]}" \
    || { echo "PSS signature is valid but its salt is not $want bytes (rsa_pss_saltlen:$salt)"; return 1; }
}
sign_raw() { # BITS: no padding -> CKM_RSA_X_509
  local bits=$1 in=$work/raw.$1 sig=$work/sig.raw.$1
  { printf '\000'; head -c $((bits / 8 - 1)) /dev/urandom; } > "$in"
  # pkeyutl -sign refuses input longer than a hash; rsautl -raw takes a block.
  eng rsautl -sign -raw -engine pkcs11 -keyform engine -inkey "$(uri "$bits")" -in "$in" -out "$sig" \
    || { echo "engine raw RSA signing failed (CKM_RSA_X_509)"; return 1; }
  plain pkeyutl -verifyrecover -pubin -inkey "$work/pub$bits.pem" -in "$sig" -out "$sig.rec" -pkeyopt rsa_padding_mode:none \
    || { echo "openssl cannot recover the raw signature"; return 1; }
  cmp "$in" "$sig.rec" || { echo "raw signature does not recover the input (m^d^e != m)"; return 1; }
}
for bits in 2048 4096; do
  for md in sha256 sha512; do
    check "$bits-bit: engine pkeyutl -sign PKCS#1 v1.5 $md; openssl verifies, same bytes as the key file" sign_pkcs1 "$bits" "$md"
  done
  for md in sha256 sha512; do
    for salt in digest max; do
      check "$bits-bit: engine pkeyutl -sign PSS $md mgf1-$md saltlen:$salt; openssl verifies" sign_pss "$bits" "$md" "$salt"
    done
  done
  check "$bits-bit: engine rsautl -sign -raw (raw RSA, CKM_RSA_X_509); openssl -verifyrecover gets the input back" sign_raw "$bits"
done

# The checks above verify signatures with openssl; this one proves they can fail.
negative() {
  plain pkeyutl -sign -inkey "$keys/rsa2048.pem" -in "$work/data.sha256" -out "$work/sig.good" -pkeyopt digest:sha256 || return 1
  cp "$work/sig.good" "$work/sig.bad"
  local b; b=$(od -An -tu1 -j100 -N1 "$work/sig.bad" | tr -d ' ')   # invert byte 100
  printf "\\$(printf %03o $((b ^ 255)))" | dd of="$work/sig.bad" bs=1 seek=100 conv=notrunc 2> /dev/null
  cmp -s "$work/sig.bad" "$work/sig.good" && { echo "could not corrupt the signature"; return 1; }
  if plain pkeyutl -verify -pubin -inkey "$work/pub2048.pem" -in "$work/data.sha256" -sigfile "$work/sig.bad" -pkeyopt digest:sha256 > /dev/null 2>&1; then
    echo "openssl accepted a corrupted signature: the verify steps prove nothing"; return 1
  fi
}
check "openssl pkeyutl -verify rejects a corrupted signature (the verify steps are meaningful)" negative

# --- decryption --------------------------------------------------------------
# Encrypt with the public key file (no engine), decrypt with the kernel key.
decrypt() { # BITS NAME OPENSSL-PKEYOPTS...
  local bits=$1 name=$2 pt=$work/pt.$1.$2 ct=$work/ct.$1.$2; shift 2
  if [ "$name" = raw ]; then
    { printf '\000'; head -c $((bits / 8 - 1)) /dev/urandom; } > "$pt"
  else
    head -c 32 /dev/urandom > "$pt"
  fi
  plain pkeyutl -encrypt -pubin -inkey "$work/pub$bits.pem" -in "$pt" -out "$ct" "$@" \
    || { echo "openssl could not encrypt with the public key"; return 1; }
  epk decrypt "$bits" -in "$ct" -out "$ct.out" "$@" \
    || { echo "engine decryption failed"; return 1; }
  cmp "$pt" "$ct.out" || { echo "decrypted text differs from the plaintext"; return 1; }
}
oaep256=(-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256)
for bits in 2048 4096; do
  check "$bits-bit: engine pkeyutl -decrypt PKCS#1 v1.5 (CKM_RSA_PKCS) of openssl -encrypt output" decrypt "$bits" pkcs1
  check "$bits-bit: engine pkeyutl -decrypt OAEP sha256/mgf1-sha256 (CKM_RSA_PKCS_OAEP)" decrypt "$bits" oaep256 "${oaep256[@]}"
  check "$bits-bit: engine pkeyutl -decrypt OAEP default sha1/mgf1-sha1 (CKM_RSA_PKCS_OAEP)" decrypt "$bits" oaep1 -pkeyopt rsa_padding_mode:oaep
  check "$bits-bit: engine pkeyutl -decrypt rsa_padding_mode:none (CKM_RSA_X_509)" decrypt "$bits" raw -pkeyopt rsa_padding_mode:none
done

# A ciphertext whose PKCS#1 v1.5 padding is bad (block type 01 instead of
# 02): plain openssl 3.0 with the key file refuses it; through the engine it
# decrypts, in two separate processes to the same message of at most k - 11
# bytes (implicit rejection: the module's secret comes from the key).
implicit_rejection() { # BITS
  local bits=$1 k=$(($1 / 8)) em=$work/bad.$1.em ct=$work/bad.$1.ct n
  { printf '\000\001'; head -c $((k - 40)) /dev/urandom | tr '\000' '\001'; printf '\000'; head -c 37 /dev/urandom; } > "$em"
  plain pkeyutl -encrypt -pubin -inkey "$work/pub$bits.pem" -in "$em" -out "$ct" -pkeyopt rsa_padding_mode:none \
    || { echo "openssl could not raw-encrypt the bad block"; return 1; }
  if plain pkeyutl -decrypt -inkey "$keys/rsa$bits.pem" -in "$ct" -out "$ct.file" > /dev/null 2>&1; then
    echo "openssl with the key file accepted the bad padding: the ciphertext is not bad"; return 1
  fi
  for n in 1 2; do
    epk decrypt "$bits" -in "$ct" -out "$ct.out$n" \
      || { echo "engine decryption $n of a bad-padding ciphertext failed: the return code tells bad padding"; return 1; }
  done
  cmp "$ct.out1" "$ct.out2" || { echo "two processes gave different messages for one ciphertext"; return 1; }
  [ "$(stat -c %s "$ct.out1")" -le $((k - 11)) ] || { echo "synthetic message of $(stat -c %s "$ct.out1") bytes, more than k - 11"; return 1; }
}
for bits in 2048 4096; do
  check "$bits-bit: engine pkeyutl -decrypt of a bad-padding PKCS#1 v1.5 ciphertext: exit 0, the same synthetic message in two processes" implicit_rejection "$bits"
done

# --- which mechanism the engine really used ------------------------------------
# libp11 silently falls back to padding in software + CKM_RSA_X_509 when
# CKM_RSA_PKCS_PSS / CKM_RSA_PKCS_OAEP fail; OpenSC's pkcs11-spy shows the calls.
spy=$(ls /usr/lib/*/pkcs11-spy.so /usr/lib/*/pkcs11/pkcs11-spy.so 2>/dev/null | head -n 1 || true)
# spy_calls LOG: one line per call, "C_Fn(CKM_...) -> CKR_...", lookups left out.
spy_calls() {
  awk '/ C_[A-Za-z]+$/ { fn = $NF; mech = "" } /pMechanism->type/ { mech = "(" $NF ")" }
    /^Returned:/ { print fn mech " -> " $3 }' "$1" | grep -vE '^C_(GetAttributeValue|FindObjects|GetSlot|GetToken|GetMechanism|GetInfo)' | tail -n 20
}
# spied OP MECH LOGNAME CMD...: run CMD with the spy between engine and module;
# OP (C_Sign/C_Decrypt) must have returned CKR_OK right after an Init with MECH.
spied() {
  local op=$1 mech=$2 log=$work/spy.$3; shift 3
  [ -n "$spy" ] || { echo "pkcs11-spy.so (package opensc-pkcs11) not found"; return 1; }
  write_conf "$work/spy.cnf" "$spy"
  PKCS11SPY=$module PKCS11SPY_OUTPUT=$log OPENSSL_CONF=$work/spy.cnf openssl "$@" \
    || { echo "command failed through the spy"; spy_calls "$log"; return 1; }
  awk -v op="$op" -v init="${op}Init" -v mech="$mech" '
    / C_[A-Za-z]+$/ { fn = $NF; next }
    fn == init && /pMechanism->type/ { armed = ($NF == mech) }
    /^Returned:/ { if (fn == op && armed && $0 ~ /CKR_OK/) found = 1 }
    END { exit !found }' "$log" \
    || { echo "no $op returning CKR_OK after ${op}Init($mech); the calls were:"; spy_calls "$log"; return 1; }
}
pss_opts sha256 digest
check "engine PSS signing uses CKM_RSA_PKCS_PSS itself (pkcs11-spy), not the CKM_RSA_X_509 fallback" \
  spied C_Sign CKM_RSA_PKCS_PSS pss pkeyutl -sign -engine pkcs11 -keyform engine -inkey "$(uri 2048)" -in "$work/data.sha256" -out "$work/sig.spy" "${pss[@]}"
check "engine OAEP decryption uses CKM_RSA_PKCS_OAEP itself (pkcs11-spy), not the CKM_RSA_X_509 fallback" \
  spied C_Decrypt CKM_RSA_PKCS_OAEP oaep pkeyutl -decrypt -engine pkcs11 -keyform engine -inkey "$(uri 2048)" -in "$work/ct.2048.oaep256" -out "$work/pt.spy" "${oaep256[@]}"

# --- TLS ----------------------------------------------------------------------
# A self-signed certificate made from the key file (the certificate is public),
# then s_server with the key in the kernel. TLS 1.3 needs RSA-PSS.
plain req -x509 -new -key "$keys/rsa2048.pem" -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -days 2 -out "$work/cert.pem" 2> "$work/req.err" || { cat "$work/req.err" >&2; die "openssl req -x509"; }
plain pkey -pubin -in "$work/pub2048.pem" -outform DER -out "$work/pub2048.der"
eng s_server -engine pkcs11 -keyform engine -key "$(uri 2048)" -cert "$work/cert.pem" \
  -accept "127.0.0.1:$port" -www < /dev/null > "$work/server.log" 2>&1 &
server_pid=$!
server_up() {
  for _ in $(seq 1 600); do
    grep -q '^ACCEPT' "$work/server.log" 2> /dev/null && return 0
    kill -0 "$server_pid" 2> /dev/null || { echo "s_server exited:"; cat "$work/server.log"; return 1; }
    sleep 0.1
  done
  echo "s_server did not print ACCEPT within 60 s:"; cat "$work/server.log"; return 1
}
tls() { # FLAG PROTO SIGTYPE [CLIENT ARGS...]
  local flag=$1 proto=$2 sigtype=$3 out=$work/tls$1${4:-} before; shift 3
  [ -n "$server_pid" ] && kill -0 "$server_pid" 2> /dev/null || { echo "s_server is not running"; return 1; }
  before=$(wc -l < "$work/server.log")
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client -connect "127.0.0.1:$port" "$flag" "$@" \
    -CAfile "$work/cert.pem" -verify_return_error -showcerts -ign_eof > "$out" 2> "$out.err"
  local rc=$?
  if [ $rc -ne 0 ] || ! grep -q "^New, $proto, Cipher is" "$out"; then
    echo "handshake failed (s_client exit $rc)"; tail -n 5 "$out.err"
    echo "server said:"; tail -n +"$((before + 1))" "$work/server.log" | head -n 15; return 1
  fi
  grep -qE '^ *Verify return code: 0 \(ok\)' "$out" || { echo "server certificate did not verify"; grep 'Verify return code' "$out"; return 1; }
  grep -qx "Peer signature type: $sigtype" "$out" || { echo "peer signature type is not $sigtype:"; grep -i 'peer sig' "$out"; return 1; }
  sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/{p;/-----END CERTIFICATE-----/q}' "$out" > "$out.cert"
  cmp -s <(plain x509 -in "$out.cert" -noout -pubkey | plain pkey -pubin -outform DER) "$work/pub2048.der" \
    || { echo "the server's certificate is not for the kernel-held key"; return 1; }
  grep -q '^HTTP/1.0 200 ok' "$out" || { echo "no HTTP answer from s_server -www"; tail -n 5 "$out"; return 1; }
}
check "s_server -engine pkcs11 -key $(uri 2048) is listening on 127.0.0.1:$port" server_up
check "TLS 1.3: s_client handshake with the kernel key (RSA-PSS), certificate matches the key, HTTP answer" \
  tls -tls1_3 TLSv1.3 RSA-PSS
check "TLS 1.2 default signature algorithms: s_client handshake (RSA-PSS), HTTP answer" \
  tls -tls1_2 TLSv1.2 RSA-PSS
check "TLS 1.2 with -sigalgs RSA+SHA256 (PKCS#1 v1.5): s_client handshake, HTTP answer" \
  tls -tls1_2 TLSv1.2 RSA -sigalgs RSA+SHA256

summary
