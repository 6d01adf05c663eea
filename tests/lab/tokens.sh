#!/usr/bin/env bash
# Tokens are keyrings, seen through GnuTLS p11tool and OpenSC pkcs11-tool:
# session, user, persistent and named keyrings (environment and config file),
# stable PKCS#11 URIs, login without a PIN, signing through each client.
# Runs inside the lab guest. Usage: tokens.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-tokens.XXXXXX)
pass=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; pass=$((pass + 1)); }
ids=()
cleanup() {
  for r in "${ids[@]:-}"; do [ -n "$r" ] && keyctl unlink "${r#*:}" "${r%%:*}" > /dev/null 2>&1 || true; done
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
p11 --list-token-urls > "$work/urls2"
cmp -s "$work/urls1" "$work/urls2" || { diff "$work/urls1" "$work/urls2" >&2; fail "token URIs changed between sessions"; }
ok "token URIs are stable across processes and login sessions"
# The new session keyring is empty; put the session test key in it again.
load 3072 kp11-tok-session @s

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

# GnuTLS reads the modulus from the private key: same key as the file.
p11 --export-pubkey "pkcs11:token=user;object=kp11-tok-user;type=private" > "$work/user.pub.pem" 2> /dev/null \
  || p11 --export-pubkey "pkcs11:token=user;object=kp11-tok-user;type=public" > "$work/user.pub.pem"
openssl pkey -in "$keys/rsa2048.pem" -pubout > "$work/file.pub.pem"
cmp -s <(openssl pkey -pubin -in "$work/user.pub.pem" -outform DER) <(openssl pkey -pubin -in "$work/file.pub.pem" -outform DER) \
  || fail "exported public key differs from the key file's"
ok "the public key GnuTLS exports is the loaded key's"

# pkcs11-tool insists on logging in: any PIN gives a logged-in session.
pt=(pkcs11-tool --module "$module" --token-label user)
"${pt[@]}" --login --pin 123456 --list-objects > "$work/pt.objs" 2>&1 || { cat "$work/pt.objs" >&2; fail "pkcs11-tool --login"; }
grep -q "label:      kp11-tok-user" "$work/pt.objs" || fail "pkcs11-tool does not list the key"
id=$(sed -nE 's/^.*ID: +([0-9a-f]+)$/\1/p' "$work/pt.objs" | head -n 1)
head -c 1000 /dev/urandom > "$work/data"
"${pt[@]}" --login --pin whatever --sign -m SHA256-RSA-PKCS --id "$id" -i "$work/data" -o "$work/sig" > "$work/pt.sign" 2>&1 \
  || { cat "$work/pt.sign" >&2; fail "pkcs11-tool --sign"; }
openssl dgst -sha256 -verify "$work/file.pub.pem" -signature "$work/sig" "$work/data" > /dev/null || fail "pkcs11-tool signature does not verify"
"${pt[@]}" --login --pin x --sign -m RSA-PKCS --id "$id" -i <(printf 'raw PKCS#1 input') -o "$work/sig2" > /dev/null 2>&1 || fail "pkcs11-tool RSA-PKCS"
openssl pkeyutl -verifyrecover -pubin -inkey "$work/file.pub.pem" -in "$work/sig2" | grep -qx 'raw PKCS#1 input' || fail "RSA-PKCS signature does not recover the input"
ok "pkcs11-tool --login --pin (any) lists and signs; openssl verifies SHA256-RSA-PKCS and RSA-PKCS"

echo "tokens: $pass passed, 0 failed"
