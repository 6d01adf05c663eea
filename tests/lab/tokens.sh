#!/usr/bin/env bash
# Tokens are keyrings, seen through GnuTLS p11tool and OpenSC pkcs11-tool:
# session, user, persistent and named keyrings (environment and config file)
# and the process keyring, stable PKCS#11 URIs, login without a PIN, listing
# and signing through both clients on every kind of token.
# Runs inside the lab guest. Usage: tokens.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-tokens.XXXXXX)
pass=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; pass=$((pass + 1)); }
ids=()
# Undone in reverse: a key in the persistent keyring is unlinked while @s
# still links (so this process possesses) that keyring; the other way
# round root is refused and the key outlives the script (seen: servers.sh's
# host-key agent then served kp11-tok-persistent too).
cleanup() {
  local i r
  for ((i = ${#ids[@]} - 1; i >= 0; i--)); do
    r=${ids[i]}
    keyctl unlink "${r#*:}" "${r%%:*}" > /dev/null 2>&1 || echo "tokens: could not unlink ${r#*:} from ${r%%:*}" >&2
  done
  rm -rf "$work"
}
trap cleanup EXIT
p11() { p11tool --provider "$module" "$@"; }
load() { # load BITS LABEL KEYRING
  local id
  id=$(openssl pkcs8 -topk8 -outform DER -nocrypt -in "$keys/rsa$1.pem" | keyctl padd asymmetric "$2" "$3")
  ids+=("$3:$id")
}

persistent=$(keyctl get_persistent @s)
ids+=("@s:$persistent")
work_ring=$(keyctl newring kp11-work @u)
ci_ring=$(keyctl newring kp11-ci @u)
ids+=("@u:$work_ring" "@u:$ci_ring")
load 2048 kp11-tok-user @u
load 3072 kp11-tok-session @s
load 2048 kp11-tok-persistent "$persistent"
load 3072 kp11-tok-work "$work_ring"
load 2048 kp11-tok-ci "$ci_ring"

# Named keyrings from the environment and from a config file.
export KEYRING_PKCS11_KEYRINGS=kp11-work
printf '# test config\nkeyring = kp11-ci\n' > "$work/conf"
export KEYRING_PKCS11_CONFIG=$work/conf
p11 --list-tokens > "$work/tokens"
for t in session user persistent kp11-work kp11-ci; do
  grep -qxF "	Label: $t" "$work/tokens" || { cat "$work/tokens" >&2; fail "token $t not listed"; }
done
ok "p11tool --list-tokens shows session, user, persistent and named (env + config file) tokens"

grep -q "URL: pkcs11:model=user%20keyring;manufacturer=Linux%20kernel%20keyrings;serial=u$(id -u);token=user" "$work/tokens" \
  || fail "user token URI is not the documented one"
p11 --list-token-urls > "$work/urls1"
keyctl new_session > /dev/null   # another login session: the URIs must not change
keyctl link @u @s
# The old session keyring, its key and its link to the persistent keyring go
# with it; link the persistent keyring here too, or root (who may not write
# to it without possessing it) cannot unlink the key in it at the end.
keep=()
for r in "${ids[@]}"; do [[ $r == @s:* ]] || keep+=("$r"); done
ids=("${keep[@]}")
[ "$(keyctl get_persistent @s)" = "$persistent" ] || fail "another persistent keyring in the new session"
ids=("@s:$persistent" "${ids[@]}")
p11 --list-token-urls > "$work/urls2"
cmp -s "$work/urls1" "$work/urls2" || { diff "$work/urls1" "$work/urls2" >&2; fail "token URIs changed between sessions"; }
ok "token URIs are stable across processes and login sessions"
# The new session keyring is empty; put the session test key in it again.
load 3072 kp11-tok-session @s

# The public key GnuTLS exports is the file's, read from each object: GnuTLS
# reads the modulus from the private key, so both must carry it.
openssl pkey -in "$keys/rsa2048.pem" -pubout > "$work/file.pub.pem"
for type in private public; do
  p11 --export-pubkey "pkcs11:token=user;object=kp11-tok-user;type=$type" > "$work/user.$type.pem" 2> "$work/user.$type.err" \
    || { cat "$work/user.$type.err" >&2; fail "p11tool --export-pubkey from the $type object"; }
  cmp -s <(openssl pkey -pubin -in "$work/user.$type.pem" -outform DER) <(openssl pkey -pubin -in "$work/file.pub.pem" -outform DER) \
    || fail "the public key p11tool exports from the $type object differs from the key file's"
done
ok "p11tool --export-pubkey from the private object and from the public object: both the loaded key's"

for t in user session persistent kp11-work kp11-ci; do
  label=kp11-tok-${t#kp11-}
  p11 --list-all "pkcs11:token=$t" > "$work/objs.$t"
  grep -q "object=$label;type=private" "$work/objs.$t" || { cat "$work/objs.$t" >&2; fail "token $t lacks its private key"; }
  grep -q "object=$label;type=public" "$work/objs.$t" || fail "token $t lacks its public key"
  n=$(grep -c "^Object" "$work/objs.$t")
  [ "$n" -eq 2 ] || { cat "$work/objs.$t" >&2; fail "token $t shows $n objects, want exactly its own 2"; }
  p11 --test-sign "pkcs11:token=$t;object=$label" > "$work/sign.$t" 2>&1 || { cat "$work/sign.$t" >&2; fail "p11tool --test-sign on token $t"; }
  grep -q "Verifying against public key in the token... ok" "$work/sign.$t" || fail "p11tool did not verify on token $t"
done
ok "each token lists exactly its keyring's key (private + public), and p11tool --test-sign works on each"

# pkcs11-tool insists on logging in: any PIN gives a logged-in session. On
# every token: it lists exactly that keyring's key and signs with it.
for t in user session persistent kp11-work kp11-ci; do
  label=kp11-tok-${t#kp11-}
  case $t in session|kp11-work) bits=3072 ;; *) bits=2048 ;; esac
  pt=(pkcs11-tool --module "$module" --token-label "$t")
  "${pt[@]}" --login --pin "pin-$t" --list-objects > "$work/pt.objs.$t" 2>&1 || { cat "$work/pt.objs.$t" >&2; fail "pkcs11-tool --login --list-objects on token $t"; }
  [ "$(grep -c "^  label: *$label\$" "$work/pt.objs.$t")" -eq 2 ] || { cat "$work/pt.objs.$t" >&2; fail "pkcs11-tool does not list $label (private and public) on token $t"; }
  n=$(grep -cE '^(Private|Public) Key Object' "$work/pt.objs.$t")
  [ "$n" -eq 2 ] || { cat "$work/pt.objs.$t" >&2; fail "pkcs11-tool shows $n key objects on token $t, want exactly its own 2"; }
  head -c 1000 /dev/urandom > "$work/data.$t"
  "${pt[@]}" --login --pin whatever --sign -m SHA256-RSA-PKCS --label "$label" -i "$work/data.$t" -o "$work/sig.$t" > "$work/pt.sign.$t" 2>&1 \
    || { cat "$work/pt.sign.$t" >&2; fail "pkcs11-tool --sign on token $t"; }
  openssl dgst -sha256 -verify <(openssl pkey -in "$keys/rsa$bits.pem" -pubout) -signature "$work/sig.$t" "$work/data.$t" > /dev/null \
    || fail "pkcs11-tool's signature on token $t does not verify"
done
ok "pkcs11-tool --login --pin (any) on user, session, persistent and both named tokens: lists exactly the keyring's key and signs (openssl verifies)"

pt=(pkcs11-tool --module "$module" --token-label user)
id=$(sed -nE 's/^.*ID: +([0-9a-f]+)$/\1/p' "$work/pt.objs.user" | head -n 1)
[ -n "$id" ] || { cat "$work/pt.objs.user" >&2; fail "pkcs11-tool shows no ID"; }
head -c 1000 /dev/urandom > "$work/data"
"${pt[@]}" --login --pin x --sign -m RSA-PKCS --id "$id" -i <(printf 'raw PKCS#1 input') -o "$work/sig2" > "$work/pt.sign2" 2>&1 || { cat "$work/pt.sign2" >&2; fail "pkcs11-tool RSA-PKCS"; }
openssl pkeyutl -verifyrecover -pubin -inkey "$work/file.pub.pem" -in "$work/sig2" | grep -qx 'raw PKCS#1 input' || fail "RSA-PKCS signature does not recover the input"
ok "pkcs11-tool --sign -m RSA-PKCS --id (the CKA_ID it listed); openssl recovers the input"

# The process token: the kernel gives a process no process keyring across
# fork and exec, so a client starts with it empty and what it puts there
# lives and is used within that one run, then dies with the process.
# /proc/keys shows root every key of uid 0; it must show the user token's
# key, or the absence checks below would prove nothing.
gone_from_proc_keys() { # LABEL
  grep -q " kp11-tok-user: " /proc/keys || { cat /proc/keys >&2; fail "/proc/keys does not show kp11-tok-user"; }
  for _ in $(seq 100); do grep -q " $1: " /proc/keys || return 0; sleep 0.1; done
  return 1
}
p11 --list-tokens > "$work/tokens.p" || fail "p11tool --list-tokens"
grep -qxF "	Label: process" "$work/tokens.p" || { cat "$work/tokens.p" >&2; fail "p11tool does not list the process token"; }
rc=0; p11 --list-all "pkcs11:token=process" > "$work/objs.process" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -qx "No matching objects found" "$work/objs.process" \
  || { cat "$work/objs.process" >&2; fail "p11tool --list-all of a new process's process token: exit $rc, want 2 and 'No matching objects found'"; }
p11 --login --set-pin=0000 --generate-privkey rsa --bits 2048 --label kp11-tok-process "pkcs11:token=process" > "$work/gen.process" 2>&1 \
  || { cat "$work/gen.process" >&2; fail "p11tool --generate-privkey into the process token"; }
openssl pkey -pubin -in "$work/gen.process" -noout -text 2> /dev/null | grep -q "Public-Key: (2048 bit)" \
  || { cat "$work/gen.process" >&2; fail "p11tool printed no 2048-bit public key for the key it generated"; }
gone_from_proc_keys kp11-tok-process || fail "the key p11tool generated in its process token outlived p11tool"
ok "p11tool on the process token: listed, empty in a new process, --generate-privkey into it; the key died with p11tool"

openssl pkey -in "$keys/rsa2048.pem" -outform DER -out "$work/k2048.der"
timeout 600 pkcs11-tool --module "$module" --token-label process --login --pin 0 \
  --write-object "$work/k2048.der" --type privkey --label kp11-tok-process --id 0707 --test > "$work/pt.process" 2>&1 \
  || { cat "$work/pt.process" >&2; fail "pkcs11-tool --write-object --test on the process token"; }
for want in "No errors" "  testing key 0 (kp11-tok-process) " "  testing key 0 (kp11-tok-process)" "    SHA256-RSA-PKCS: OK" "    RSA-PKCS: OK"; do
  grep -qxF "$want" "$work/pt.process" || { cat "$work/pt.process" >&2; fail "pkcs11-tool --test on the process token: no '$want'"; }
done
[ "$(grep -cxF "  testing key 0 (kp11-tok-process)" "$work/pt.process")" -eq 2 ] \
  || { cat "$work/pt.process" >&2; fail "pkcs11-tool --test on the process token: verify and decryption did not both test the key"; }
gone_from_proc_keys kp11-tok-process || fail "the key pkcs11-tool wrote to its process token outlived pkcs11-tool"
ok "pkcs11-tool --write-object into the process token and --test in the same run (sign, verify, decrypt); the key died with pkcs11-tool"

echo "tokens: $pass passed, 0 failed"
