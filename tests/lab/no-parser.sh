#!/usr/bin/env bash
# A kernel without pkcs8_key_parser, through the tool: `keyring-pkcs11
# import` and `keyring-pkcs11 exec` exit 2, name EBADMSG and the modprobe
# that fixes it, start nothing and leave no key behind.
#
# Unloading the parser while a private key it parsed exists oopses the
# kernel (seen on 6.12: the key's subtype points into the unloaded module),
# and keys restricted to their possessors do not show in /proc/keys, so no
# test can be sure there are none once others have run. lab/test therefore
# runs this in a guest of its own, freshly booted, before anything there has
# made a private key (with tests/no_parser.rs after it: KP11_GUEST_PART=no-parser
# in tests/lab/guest.sh). Usage: no-parser.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
bin=$(dirname "$module")/keyring-pkcs11
work=$(mktemp -d /tmp/kp11-noparser.XXXXXX)
suite=no-parser
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
# shellcheck source=tests/lab/keyusage.sh
source "$(dirname "${BASH_SOURCE[0]}")/keyusage.sh"
np_cleanup() {
  modprobe pkcs8_key_parser 2> /dev/null || true
  cleanup
}
trap np_cleanup EXIT

[ -x "$bin" ] || die "no CLI at $bin"
echo "# kernel $(uname -r); cli $bin"
install -m 600 "$keys/rsa2048.pem" "$work/key.pem"
# Certificates (the kernel's own signing keys, "...: X509.…") are parsed by
# x509_key_parser; any other asymmetric key may be one of pkcs8's.
if grep ' asymmetri ' /proc/keys | grep -v ': X509\.'; then die "private keys exist in this guest: not unloading pkcs8_key_parser (run this first in a fresh guest)"; fi
before=$(steady_usage 0)
rmmod pkcs8_key_parser || die "cannot unload pkcs8_key_parser"

# without RC TEXT CMD...: CMD exits RC and says TEXT and the modprobe line.
without() {
  local want=$1 text=$2 rc=0
  shift 2
  "$@" > "$work/out" 2> "$work/err" < /dev/null || rc=$?
  cat "$work/err"
  [ "$rc" -eq "$want" ] || { echo "exit status $rc, want $want"; return 1; }
  grep -qF -- "$text" "$work/err" || { echo "stderr does not say '$text'"; return 1; }
  grep -qF "sudo modprobe pkcs8_key_parser" "$work/err" || { echo "no modprobe line"; return 1; }
}

check "import without the parser: exit 2, EBADMSG and 'sudo modprobe pkcs8_key_parser'" \
  without 2 "Bad message (EBADMSG)" "$bin" import "$work/key.pem" --label kp11-np-import
started() { [ ! -e "$work/started" ] || { echo "the command was started"; return 1; }; }
check "exec without the parser: exit 2, EBADMSG and the modprobe line" \
  without 2 "(EBADMSG)" "$bin" exec --key web="$work/key.pem" -- touch "$work/started"
check "exec without the parser: the command is not started" started
check "nothing left in the kernel (keys owned, visible asymmetric keys)" settle "$before" 0

modprobe pkcs8_key_parser || die "cannot reload pkcs8_key_parser"
summary
