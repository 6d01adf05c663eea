#!/usr/bin/env bash
# OpenSC pkcs11-tool --test (random, digests, signatures, verify, decryption)
# and GnuTLS (p11tool --test-sign with PKCS#1 v1.5 and RSA-PSS, gnutls-serv over
# TLS 1.3, and TLS 1.2 with RSA key exchange) with kernel-held keys. Every check
# runs even when an earlier one failed.
# Runs inside the lab guest. Usage: pkcs11-tool.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-p11tools.XXXXXX)
port=${KP11_GNUTLS_PORT:-5556}
suite=pkcs11-tool
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

echo "# kernel $(uname -r); module $module; opensc $(dpkg-query -W -f '${Version}' opensc 2>/dev/null || echo '?'); $(p11tool --version | head -n 1)"
labels=()
for bits in 2048 4096; do
  [ -r "$keys/rsa$bits.pem" ] || die "$keys/rsa$bits.pem missing (lab/test makes it)"
  id=$(openssl pkcs8 -topk8 -outform DER -nocrypt -in "$keys/rsa$bits.pem" | keyctl padd asymmetric "kp11-pt-$bits" @u) \
    || die "keyctl padd asymmetric (is pkcs8_key_parser loaded? modprobe pkcs8_key_parser)"
  loaded+=("$id")
  labels+=("kp11-pt-$bits")
done
ok "loaded 2048/4096-bit keys into @u as ${labels[*]}"

# --- OpenSC pkcs11-tool --test ------------------------------------------------
# Sign/verify/decrypt run only in a logged-in R/W session (--login, any PIN).
# pkcs11-tool's signature section only considers mechanisms flagged CKF_HW
# unless --allow-sw is given; ours are (the kernel performs the RSA operation),
# so the command runs exactly as users type it, without --allow-sw.
# stdout and stderr are kept apart: stdout is block-buffered, so mixing them
# would scramble the order of the sections.
pt=(pkcs11-tool --module "$module" --token-label user --login --pin 1234)
run_test() { # NAME EXTRA-ARGS...
  local name=$1; shift
  set +e
  echo "${pt[*]} --test $*" > "$work/$name.cmd"
  timeout 300 "${pt[@]}" --test "$@" > "$work/$name.out" 2> "$work/$name.err"
  echo $? > "$work/$name.rc"
  set -e
}
run_test full
full_out=$work/full.out full_err=$work/full.err
dump() { # NAME: the whole output of one run, for the log
  echo "--- $(cat "$work/$1.cmd"): exit $(cat "$work/$1.rc"); stdout:"; cat "$work/$1.out"
  echo "--- stderr:"; cat "$work/$1.err"
}
# section HEADER: that section of the full run's stdout.
section() {
  awk -v h="$1" '
    index($0, h) == 1 { on = 1; print; next }
    on && /^(C_SeedRandom|Digests|Signature|Verify|Key unwrap|Unwrap|Decrypt|No errors$|[0-9]+ errors$)/ { exit }
    on { print }' "$full_out"
}
# keyblock LABEL: lines of a section (stdin) from LABEL's "testing key" line
# up to the next key.
keyblock() {
  awk -v l="($1)" '
    /^  testing key / { on = index($0, l) > 0; if (on) print; next }
    on { print }'
}
# all_ok: every "    MECH: " attempt in the block (stdin) ended in OK (on the
# same line, or on the next line after an OAEP "mgf not set" note).
all_ok() {
  awk '
    /^    [A-Za-z0-9-]+: / { n++; if ($0 ~ /: OK$/) good++; else pending = 1; next }
    pending { if ($0 == "OK") good++; pending = 0 }
    END { if (n == 0 || good != n) { printf "%d of %d mechanism attempts ended in OK\n", good, n; exit 1 } }'
}
no_errors() { # NAME
  local n=$1 bad
  [ "$(cat "$work/$n.rc")" = 0 ] || { echo "pkcs11-tool exited $(cat "$work/$n.rc") (a PKCS#11 call failed: 'error: PKCS11 function ... failed' aborts the test)"; dump "$n"; return 1; }
  grep -qx 'No errors' "$work/$n.out" || { echo "pkcs11-tool did not print 'No errors'"; dump "$n"; return 1; }
  bad=$(cat "$work/$n.out" "$work/$n.err" | grep -v -x 'No errors' | grep -iE 'ERR|error|fail|abort|warning|doesn.t match' || true)
  [ -z "$bad" ] || { echo "error lines:"; echo "$bad"; dump "$n"; return 1; }
}
t_random() {
  local s; s=$(section 'C_SeedRandom() and C_GenerateRandom():')
  [ -n "$s" ] || { echo "no random section"; dump full; return 1; }
  echo "$s" | grep -qx '  seems to be OK' && ! grep -q 'C_GenerateRandom' "$full_err" \
    || { echo "$s"; grep 'C_GenerateRandom\|C_SeedRandom' "$full_err"; return 1; }
}
t_digest() {
  local s; s=$(section 'Digests:')
  [ -n "$s" ] || { echo "no 'Digests:' section"; grep -i digest "$full_err"; return 1; }
  local want
  for want in '  all 4 digest functions seem to work' '  SHA-1: OK' '  SHA256: OK'; do
    echo "$s" | grep -qxF "$want" || { echo "missing: '$want' (C_DigestInit/Update/Final, C_Digest)"; echo "$s"; return 1; }
  done
  if echo "$s" | grep -q 'ERR'; then echo "$s"; return 1; fi
}
t_sign() {
  local s want l; s=$(section 'Signatures (currently only for RSA)')
  [ -n "$s" ] || { echo "signature section did not run:"; grep -E '^Signature' "$full_out" "$full_err"; return 1; }
  for want in '  all 4 signature functions seem to work' '    RSA-X-509: OK' '    RSA-PKCS: OK' '    SHA1-RSA-PKCS: OK' '    SHA256-RSA-PKCS: OK'; do
    echo "$s" | grep -qxF "$want" || { echo "missing: '$want'"; echo "$s"; return 1; }
  done
  for l in "${labels[@]}"; do
    echo "$s" | keyblock "$l" | grep -q . || { echo "key $l was not tested"; echo "$s"; return 1; }
    echo "$s" | keyblock "$l" | grep -q 'skipping' && { echo "key $l skipped"; echo "$s"; return 1; }
    echo "$s" | keyblock "$l" | all_ok || { echo "key $l:"; echo "$s" | keyblock "$l"; return 1; }
  done
  if echo "$s" | grep -q 'ERR'; then echo "$s"; return 1; fi
}
t_verify() {
  local s want l; s=$(section 'Verify (currently only for RSA)')
  [ -n "$s" ] || { echo "verify section did not run:"; grep -E '^Verify' "$full_out" "$full_err"; return 1; }
  for want in '    RSA-X-509: OK' '    RSA-PKCS: OK' '    SHA1-RSA-PKCS: OK'; do
    echo "$s" | grep -qxF "$want" || { echo "missing: '$want' (C_Sign then C_VerifyInit/C_Verify on the public key)"; echo "$s"; return 1; }
  done
  for l in "${labels[@]}"; do
    echo "$s" | keyblock "$l" | grep -q . || { echo "key $l was not tested"; echo "$s"; return 1; }
    echo "$s" | keyblock "$l" | grep -q 'skipping' && { echo "key $l skipped"; echo "$s"; return 1; }
    echo "$s" | keyblock "$l" | all_ok || { echo "key $l:"; echo "$s" | keyblock "$l"; return 1; }
  done
  if echo "$s" | grep -q 'ERR'; then echo "$s"; return 1; fi
}
t_decrypt() {
  local s b l; s=$(section 'Decryption (currently only for RSA)')
  [ -n "$s" ] || { echo "decryption section did not run:"; grep -E '^Decrypt' "$full_out" "$full_err"; return 1; }
  for l in "${labels[@]}"; do
    b=$(echo "$s" | keyblock "$l")
    [ -n "$b" ] || { echo "key $l was not tested"; echo "$s"; return 1; }
    if echo "$b" | head -n 1 | grep -q 'skipping'; then echo "key $l skipped (CKA_DECRYPT? public key with the same CKA_ID?)"; echo "$b"; return 1; fi
    echo "$b" | grep -qxF '    RSA-X-509: OK' || { echo "key $l: no 'RSA-X-509: OK'"; echo "$b"; return 1; }
    echo "$b" | grep -qxF '    RSA-PKCS: OK' || { echo "key $l: no 'RSA-PKCS: OK'"; echo "$b"; return 1; }
    [ "$(echo "$b" | grep -c '^    RSA-PKCS-OAEP: ')" -eq 2 ] || { echo "key $l: want 2 OAEP runs (label \"ABC\" and none)"; echo "$b"; return 1; }
    echo "$b" | all_ok || { echo "key $l:"; echo "$b"; return 1; }
    if echo "$b" | grep -qE 'not supported|doesn.t match'; then echo "$b"; return 1; fi
  done
}
check "pkcs11-tool --login --pin 1234 --test: exit 0, 'No errors', no ERR/error/warning lines" no_errors full
check "pkcs11-tool --test: C_SeedRandom/C_GenerateRandom section 'seems to be OK'" t_random
check "pkcs11-tool --test: digests (C_DigestInit/Update/Final and C_Digest; SHA-1, SHA256 values)" t_digest
check "pkcs11-tool --test: signatures ran for both keys (RSA-X-509, RSA-PKCS, SHA1-/SHA256-RSA-PKCS, multi-part)" t_sign
check "pkcs11-tool --test: verify ran for both keys (C_Verify with RSA-X-509, RSA-PKCS, SHA1-RSA-PKCS)" t_verify
check "pkcs11-tool --test: decryption ran for both keys (RSA-X-509, RSA-PKCS, RSA-PKCS-OAEP with and without label)" t_decrypt

# --- GnuTLS p11tool -------------------------------------------------------------
p11() { timeout 120 p11tool --provider "$module" "$@"; }
t_tokens() {
  p11 --list-tokens > "$work/tokens" 2>&1 || { cat "$work/tokens"; return 1; }
  grep -qxF '	Label: user' "$work/tokens" || { echo "no token labelled user:"; cat "$work/tokens"; return 1; }
}
t_list() {
  local l t
  p11 --list-all pkcs11:token=user > "$work/list" 2>&1 || { cat "$work/list"; return 1; }
  for l in "${labels[@]}"; do
    for t in private public; do
      grep -q "object=$l;type=$t" "$work/list" || { echo "no $t key $l listed:"; cat "$work/list"; return 1; }
    done
  done
}
test_sign() { # LABEL EXPECTED-ALGORITHM-REGEX P11TOOL-ARGS...
  local l=$1 alg=$2 out=$work/ts.$1; shift 2
  p11 --test-sign "$@" "pkcs11:token=user;object=$l" > "$out" 2>&1 || { echo "p11tool --test-sign $* exited non-zero:"; cat "$out"; return 1; }
  grep -qE "^Signing using $alg\.\.\. ok$" "$out" || { echo "not signed with $alg:"; cat "$out"; return 1; }
  grep -qx 'Verifying against private key parameters... ok' "$out" || { cat "$out"; return 1; }
  grep -qx 'Verifying against public key in the token... ok' "$out" || { cat "$out"; return 1; }
}
check "p11tool --list-tokens shows the user token" t_tokens
check "p11tool --list-all pkcs11:token=user lists both keys (private + public)" t_list
for l in "${labels[@]}"; do
  check "p11tool --test-sign $l (RSA-SHA256, CKM_RSA_PKCS)" test_sign "$l" 'RSA-SHA256'
  check "p11tool --test-sign --hash SHA512 $l (RSA-SHA512)" test_sign "$l" 'RSA-SHA512' --hash SHA512
  check "p11tool --test-sign --sign-params rsa-pss $l (RSA-PSS-SHA256, CKM_RSA_PKCS_PSS)" test_sign "$l" 'RSA-PSS(-RSAE)?-SHA256' --sign-params rsa-pss
  check "p11tool --test-sign --sign-params rsa-pss --hash SHA512 $l (RSA-PSS-SHA512)" test_sign "$l" 'RSA-PSS(-RSAE)?-SHA512' --sign-params rsa-pss --hash SHA512
done

# --- GnuTLS TLS 1.3 server with the kernel key ----------------------------------
# GnuTLS uses RSA-PSS (needed for TLS 1.3) only if the token lists
# CKM_RSA_PKCS_PSS; otherwise "Detected incompatible with TLS1.3 RSA key!".
openssl req -x509 -new -key "$keys/rsa2048.pem" -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -days 2 -out "$work/cert.pem" 2> "$work/req.err" || { cat "$work/req.err" >&2; die "openssl req -x509"; }
gnutls-serv --provider "$module" --http -p "$port" --x509certfile "$work/cert.pem" \
  --x509keyfile "pkcs11:token=user;object=kp11-pt-2048;type=private" < /dev/null > "$work/gserv.log" 2>&1 &
server_pid=$!
t_gnutls_tls13() {
  local out=$work/gtls.out
  for _ in $(seq 1 600); do
    grep -q 'listening' "$work/gserv.log" 2> /dev/null && break
    kill -0 "$server_pid" 2> /dev/null || { echo "gnutls-serv exited:"; cat "$work/gserv.log"; return 1; }
    sleep 0.1
  done
  grep -q 'listening' "$work/gserv.log" || { echo "gnutls-serv did not start listening within 60 s:"; cat "$work/gserv.log"; return 1; }
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client -connect "127.0.0.1:$port" -tls1_3 \
    -CAfile "$work/cert.pem" -verify_return_error -ign_eof > "$out" 2> "$out.err"
  local rc=$?
  grep -q '^New, TLSv1.3, Cipher is' "$out" && [ $rc -eq 0 ] \
    || { echo "TLS 1.3 handshake failed (s_client exit $rc):"; tail -n 5 "$out.err"; echo "gnutls-serv said:"; tail -n 15 "$work/gserv.log"; return 1; }
  grep -qx 'Peer signature type: RSA-PSS' "$out" || { grep -i 'peer sig' "$out"; return 1; }
  grep -q '^HTTP/1.0 200 OK' "$out" || { echo "no HTTP answer:"; tail -n 5 "$out"; return 1; }
}
check "gnutls-serv --provider MODULE --x509keyfile pkcs11:...kp11-pt-2048: TLS 1.3 handshake (RSA-PSS), HTTP answer" t_gnutls_tls13

# --- TLS 1.2 RSA key exchange: the server decrypts the premaster secret --------
# The case Bleichenbacher's attack targets: C_Decrypt with CKM_RSA_PKCS on what
# a client sent. (OpenSSL 3.0's s_server cannot do this with an engine key:
# its TLS code asks for a padding mode the legacy engine path refuses.) The
# server runs through OpenSC's pkcs11-spy, which shows the mechanism.
spy=$(ls /usr/lib/*/pkcs11-spy.so /usr/lib/*/pkcs11/pkcs11-spy.so 2>/dev/null | head -n 1 || true)
t_gnutls_rsa_kx() {
  local out=$work/grsa.out log=$work/grsa.log spylog=$work/grsa.spy pid
  [ -n "$spy" ] || { echo "pkcs11-spy.so (package opensc-pkcs11) not found"; return 1; }
  PKCS11SPY=$module PKCS11SPY_OUTPUT=$spylog gnutls-serv --provider "$spy" --priority NORMAL:+RSA --http -p "$((port + 1))" \
    --x509certfile "$work/cert.pem" --x509keyfile "pkcs11:token=user;object=kp11-pt-2048;type=private" < /dev/null > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -q 'listening' "$log" 2> /dev/null && break; sleep 0.1; done
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client -connect "127.0.0.1:$((port + 1))" -tls1_2 -cipher AES128-GCM-SHA256 \
    -CAfile "$work/cert.pem" -verify_return_error -ign_eof > "$out" 2> "$out.err"
  local rc=$?
  kill "$pid" 2> /dev/null; wait "$pid" 2> /dev/null
  grep -q '^New, TLSv1.2, Cipher is AES128-GCM-SHA256' "$out" && [ $rc -eq 0 ] \
    || { echo "TLS 1.2 RSA key exchange failed (s_client exit $rc):"; tail -n 5 "$out.err"; echo "gnutls-serv said:"; tail -n 15 "$log"; return 1; }
  grep -q '^HTTP/1.0 200 OK' "$out" || { echo "no HTTP answer:"; tail -n 5 "$out"; return 1; }
  awk '/ C_[A-Za-z]+$/ { fn = $NF; next }
    fn == "C_DecryptInit" && /pMechanism->type/ { armed = ($NF == "CKM_RSA_PKCS") }
    /^Returned:/ { if (fn == "C_Decrypt" && armed && $0 ~ /CKR_OK/) found = 1 }
    END { exit !found }' "$spylog" || { echo "no C_Decrypt(CKM_RSA_PKCS) returning CKR_OK in the spy's log"; return 1; }
}
check "gnutls-serv TLS 1.2 RSA key exchange (AES128-GCM-SHA256): premaster decrypted with C_Decrypt(CKM_RSA_PKCS), HTTP answer" t_gnutls_rsa_kx

summary
