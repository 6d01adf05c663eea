#!/usr/bin/env bash
# The same client scenarios on one PKCS#11 module; one TSV line per scenario:
#   ID <tab> SCENARIO <tab> MODULE-NAME <tab> pass|fallback|FAIL <tab> NOTE
# (fallback: the client got the right answer only because libp11 did the
# padding itself around CKM_RSA_X_509, the module having refused the mechanism)
# Both modules get exactly the same commands: the same PIN is offered to both
# (keyring-pkcs11 needs none and accepts any), only the module path and the
# token label differ. Runs inside the lab guest, as root.
# Usage: functional.sh NAME MODULE.so TOKEN-LABEL PIN KEYDIR OUT.tsv
set -uo pipefail
# start_sshd, stop_sshd, ssh_client_opts, write_engine_conf: the lab's sshd
# helper, shared with the guest tests and the demo.
. "$(dirname "${BASH_SOURCE[0]}")/../lab/lib/sshd.sh"

name=$1 module=$2 token=$3 pin=$4 keys=$5 out=$6
work=$(mktemp -d "/tmp/kp11cmp-func-$name.XXXXXX")
server_pid=
cleanup() {
  [ -n "$server_pid" ] && { kill "$server_pid" 2> /dev/null; wait "$server_pid" 2> /dev/null; }
  stop_sshd "$work"
  true
}
trap cleanup EXIT
pass=0 failed=0

# record ID SCENARIO FUNCTION ARGS...: FUNCTION prints a short note on its
# last line (the mechanism used, what was asked, or what went wrong).
record() {
  local id=$1 what=$2 res note; shift 2
  "$@" > "$work/$id.log" 2>&1
  case $? in
    0) res=pass; pass=$((pass + 1)) ;;
    3) res=fallback; pass=$((pass + 1)) ;;
    *) res=FAIL; failed=$((failed + 1)) ;;
  esac
  note=$(tail -n 1 "$work/$id.log" | tr '\t' ' ' | cut -c1-160)
  printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$what" "$name" "$res" "$note" >> "$out"
  printf '  %-4s %-60s %s  %s\n' "$res" "$what" "" "$note"
  if [ "$res" = FAIL ]; then sed 's/^/      | /' "$work/$id.log" | tail -n 25; fi
}

echo "== $name: $module, token $token"
label=kp11-bench-2048
uri="pkcs11:token=$token;object=$label;type=private;pin-value=$pin"
openssl pkey -in "$keys/rsa2048.pem" -pubout -out "$work/pub.pem" 2> /dev/null
head -c 3000 /dev/urandom > "$work/data"
openssl dgst -sha256 -binary -out "$work/data.sha256" "$work/data"

# --- OpenSC pkcs11-tool --test --login ----------------------------------------
t_pkcs11_tool() {
  local o=$work/pt.out e=$work/pt.err rc skipped
  timeout 600 pkcs11-tool --module "$module" --token-label "$token" --login --pin "$pin" --test > "$o" 2> "$e"
  rc=$?
  cat "$o" "$e"
  [ $rc -eq 0 ] || { echo "exit $rc: $(grep -m1 -E '^error:' "$e" | sed 's/^error: //')$(grep -B3 -m1 -E '^error:' "$e" | grep -m1 -oE 'OAEP parameters: hashAlg=[A-Z0-9-]+' | sed 's/^/ (/;s/$/)/')"; return 1; }
  grep -qx 'No errors' "$o" || { echo "no 'No errors' line"; return 1; }
  local secs=()
  for s in 'Signatures' 'Verify' 'Decryption'; do grep -q "^$s" "$o" && secs+=("$s"); done
  skipped=$(grep -ci 'skipping' "$o")
  echo "exit 0, 'No errors'; sections run: ${secs[*]:-none}; ${skipped} 'skipping' lines"
}
record pkcs11-tool "\`pkcs11-tool --test --login\` (all 3 keys)" t_pkcs11_tool

# --- GnuTLS p11tool --test-sign ------------------------------------------------
t_p11tool() { # EXTRA-ARGS...
  local o=$work/p11.out
  GNUTLS_PIN=$pin timeout 300 p11tool --provider "$module" --login --test-sign "$@" "pkcs11:token=$token;object=$label" > "$o" 2>&1
  local rc=$?
  cat "$o"
  [ $rc -eq 0 ] || { echo "exit $rc"; return 1; }
  grep -q 'Verifying against public key in the token... ok' "$o" || { echo "no 'Verifying against public key in the token... ok'"; return 1; }
  grep -m1 '^Signing using' "$o"
}
record p11tool-pkcs1 "\`p11tool --test-sign\` RSA-2048 (PKCS#1 v1.5)" t_p11tool
record p11tool-pss "\`p11tool --test-sign --sign-params rsa-pss\` RSA-2048" t_p11tool --sign-params rsa-pss

# --- OpenSSH ---------------------------------------------------------------------
for bits in 2048 3072 4096; do ssh-keygen -y -f "$keys/rsa$bits.pem" | awk '{print $1, $2}' > "$work/rsa$bits.pub"; done
t_keygen_d() {
  ssh-keygen -D "$module" > "$work/listed" 2> "$work/listed.err"
  local rc=$? n
  cat "$work/listed" "$work/listed.err"
  [ $rc -eq 0 ] || { echo "exit $rc"; return 1; }
  for bits in 2048 3072 4096; do
    awk '{print $1, $2}' "$work/listed" | grep -qxF "$(cat "$work/rsa$bits.pub")" || { echo "the $bits-bit key is not listed"; return 1; }
  done
  n=$(wc -l < "$work/listed")
  echo "lists the 3 public keys, equal to ssh-keygen -y of the key files ($n lines)"
}
record ssh-keygen "\`ssh-keygen -D\` lists the 3 public keys" t_keygen_d

# A PIN, if asked, comes from SSH_ASKPASS (the non-interactive way); the
# script notes each time it is asked.
cat > "$work/askpass" <<EOF
#!/bin/sh
echo asked >> "$work/askpass.log"
echo "$pin"
EOF
chmod +x "$work/askpass"
t_ssh() {
  local port=$1 out client
  cp "$work/rsa2048.pub" "$work/authorized_keys"
  start_sshd "$work" "$port" || { echo "sshd did not start"; return 1; }
  mapfile -t client < <(ssh_client_opts "$port")
  # BatchMode would forbid the PIN prompt that SSH_ASKPASS answers; ssh
  # takes the first value given for an option, so this goes first.
  out=$(SSH_ASKPASS=$work/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid -w timeout 300 ssh -o BatchMode=no "${client[@]}" \
    -o PubkeyAcceptedAlgorithms=rsa-sha2-256 -I "$module" "root@127.0.0.1" 'echo logged-in-as-$(id -un)' < /dev/null)
  local rc=$?
  echo "$out"
  [ $rc -eq 0 ] && [ "$out" = logged-in-as-root ] || { echo "ssh -I exit $rc"; tail -n 10 "$work/sshd.log"; return 1; }
  if [ -s "$work/askpass.log" ]; then echo "logged in; PIN asked $(wc -l < "$work/askpass.log")× (given through SSH_ASKPASS)"
  else echo "logged in; no PIN asked"; fi
}
record ssh-login "\`ssh -I\` login to sshd on 127.0.0.1 (RSA-2048, rsa-sha2-256)" t_ssh "${KP11CMP_SSH_PORT:-2322}"

# --- OpenSSL 3 with the libp11 engine ---------------------------------------------
spy=$(ls /usr/lib/*/pkcs11-spy.so /usr/lib/*/pkcs11/pkcs11-spy.so 2> /dev/null | head -n 1)
write_engine_conf "$work/engine.cnf" "$module"
write_engine_conf "$work/spy.cnf" "$spy"
# Every engine operation runs through OpenSC's pkcs11-spy, which shows which
# mechanism the module really performed: libp11 silently falls back to
# padding in software + CKM_RSA_X_509 when the module refuses PSS or OAEP.
spied() { # LOG OPENSSL-ARGS...
  local log=$1; shift
  PKCS11SPY=$module PKCS11SPY_OUTPUT=$log OPENSSL_CONF=$work/spy.cnf timeout 300 openssl "$@"
}
# used OP LOG: the mechanisms whose OP (C_Sign/C_Decrypt) returned CKR_OK.
used() {
  awk -v op="$1" -v init="$1Init" '
    / C_[A-Za-z]+$/ { fn = $NF; next }
    fn == init && /pMechanism->type/ { mech = $NF }
    /^Returned:/ { if (fn == op && $0 ~ /CKR_OK/) ok[mech] = 1 }
    END { s = ""; for (m in ok) s = s (s ? ", " : "") m; print s }' "$2"
}
t_engine_pkcs1() {
  local sig=$work/sig.pkcs1
  spied "$work/spy.pkcs1" pkeyutl -sign -engine pkcs11 -keyform engine -inkey "$uri" -in "$work/data.sha256" -out "$sig" -pkeyopt digest:sha256 \
    || { echo "engine sign failed"; return 1; }
  openssl pkeyutl -verify -pubin -inkey "$work/pub.pem" -in "$work/data.sha256" -sigfile "$sig" -pkeyopt digest:sha256 || { echo "does not verify"; return 1; }
  openssl pkeyutl -sign -inkey "$keys/rsa2048.pem" -in "$work/data.sha256" -out "$sig.file" -pkeyopt digest:sha256
  cmp -s "$sig" "$sig.file" || { echo "differs from openssl's signature with the key file"; return 1; }
  echo "verifies, byte-equal to the key file's; module did $(used C_Sign "$work/spy.pkcs1")"
}
pss=(-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest -pkeyopt rsa_mgf1_md:sha256)
t_engine_pss() {
  local sig=$work/sig.pss
  spied "$work/spy.pss" pkeyutl -sign -engine pkcs11 -keyform engine -inkey "$uri" -in "$work/data.sha256" -out "$sig" "${pss[@]}" \
    || { echo "engine PSS sign failed"; return 1; }
  openssl pkeyutl -verify -pubin -inkey "$work/pub.pem" -in "$work/data.sha256" -sigfile "$sig" "${pss[@]}" || { echo "does not verify"; return 1; }
  local m; m=$(used C_Sign "$work/spy.pss")
  if [ "$m" = CKM_RSA_X_509 ]; then echo "verifies, but the module refused CKM_RSA_PKCS_PSS: libp11 padded in software and used CKM_RSA_X_509"; return 3; fi
  echo "verifies; module did $m"
}
t_engine_oaep() { # TAG OPENSSL-PKEYOPTS...
  local tag=$1; shift
  head -c 32 /dev/urandom > "$work/pt.$tag"
  openssl pkeyutl -encrypt -pubin -inkey "$work/pub.pem" -in "$work/pt.$tag" -out "$work/ct.$tag" "$@" || { echo "openssl encrypt failed"; return 1; }
  spied "$work/spy.$tag" pkeyutl -decrypt -engine pkcs11 -keyform engine -inkey "$uri" -in "$work/ct.$tag" -out "$work/dec.$tag" "$@" \
    || { echo "engine decrypt failed"; return 1; }
  cmp -s "$work/pt.$tag" "$work/dec.$tag" || { echo "wrong plaintext"; return 1; }
  local m; m=$(used C_Decrypt "$work/spy.$tag")
  if [ "$m" = CKM_RSA_X_509 ]; then echo "plaintext correct, but the module refused CKM_RSA_PKCS_OAEP with these parameters: libp11 used CKM_RSA_X_509 and decoded OAEP itself"; return 3; fi
  echo "plaintext correct; module did $m"
}
record engine-pkcs1 "OpenSSL engine: PKCS#1 v1.5 sign (SHA-256) + verify" t_engine_pkcs1
record engine-pss "OpenSSL engine: PSS sign (SHA-256, MGF1-SHA256) + verify" t_engine_pss
record engine-oaep1 "OpenSSL engine: OAEP decrypt (SHA-1, the default)" t_engine_oaep oaep1 -pkeyopt rsa_padding_mode:oaep
record engine-oaep256 "OpenSSL engine: OAEP decrypt (SHA-256, MGF1-SHA256)" t_engine_oaep oaep256 \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256

# --- TLS 1.3: s_server with the key behind the engine, s_client ----------------------
t_tls13() {
  local port=$1 out=$work/tls.out
  openssl req -x509 -new -key "$keys/rsa2048.pem" -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -days 2 -out "$work/cert.pem" 2> /dev/null
  OPENSSL_CONF=$work/engine.cnf openssl s_server -engine pkcs11 -keyform engine -key "$uri" -cert "$work/cert.pem" \
    -accept "127.0.0.1:$port" -www < /dev/null > "$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    grep -q '^ACCEPT' "$work/server.log" 2> /dev/null && break
    kill -0 "$server_pid" 2> /dev/null || { cat "$work/server.log"; echo "s_server exited"; return 1; }
    sleep 0.1
  done
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 120 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -CAfile "$work/cert.pem" \
    -verify_return_error -ign_eof > "$out" 2> "$out.err"
  local rc=$?
  kill "$server_pid" 2> /dev/null; wait "$server_pid" 2> /dev/null; server_pid=
  [ $rc -eq 0 ] && grep -q '^New, TLSv1.3, Cipher is' "$out" || { tail -n 5 "$out.err"; tail -n 5 "$work/server.log"; echo "handshake failed (s_client exit $rc)"; return 1; }
  grep -q '^HTTP/1.0 200 ok' "$out" || { echo "no HTTP answer"; return 1; }
  echo "TLSv1.3 handshake, $(grep -m1 '^Peer signature type' "$out" | sed 's/^Peer signature type: //') server signature, HTTP answer"
}
record tls13 "TLS 1.3: \`openssl s_server -engine pkcs11\` + \`s_client -tls1_3\`" t_tls13 "${KP11CMP_TLS_PORT:-4443}"

echo "== $name: $pass passed, $failed failed"
