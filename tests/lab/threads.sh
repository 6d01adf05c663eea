#!/usr/bin/env bash
# OpenSC pkcs11-tool --test-fork and --test-threads against the module, with a
# kernel-held key signing on the main thread while the test threads run.
# Every check runs even when an earlier one failed.
# Runs inside the lab guest. Usage: threads.sh MODULE.so KEYDIR
#
# What pkcs11-tool 0.23 offers (src/tools/pkcs11-tool.c): each --test-threads
# STRING starts one thread (at most 10) before the main thread's C_Initialize;
# STRING is two-letter commands: IN C_Initialize(NULL), IL C_Initialize with
# CKF_OS_LOCKING_OK, GI C_GetInfo, SL C_GetSlotList (twice: count, then list),
# Tn C_GetTokenInfo of the n-th slot with a token (fatal on error), Pn sleep.
# A thread stops at its first result other than CKR_OK or
# CKR_CRYPTOKI_ALREADY_INITIALIZED. pkcs11-tool's exit status ignores the
# threads' results, so they are read from its stderr. Threads have no session
# command: signing is done by the main thread (--sign) at the same time.
# --test-fork forks after the main C_Initialize; the child must get CKR_OK
# from its own C_Initialize (exit status), and the parent goes on working.
# No Pn, and the main thread always signs: a thread still running when the
# main thread is done costs a 30 s wait (reported, not a failure).
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-threads.XXXXXX)
suite=threads
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

echo "# kernel $(uname -r); module $module; opensc $(dpkg-query -W -f '${Version}' opensc 2>/dev/null || echo '?')"
[ -r "$keys/rsa2048.pem" ] || die "$keys/rsa2048.pem missing (lab/test makes it)"
label=kp11-threads-2048
id=$(openssl pkcs8 -topk8 -outform DER -nocrypt -in "$keys/rsa2048.pem" | keyctl padd asymmetric "$label" @u) \
  || die "keyctl padd asymmetric (is pkcs8_key_parser loaded? modprobe pkcs8_key_parser)"
loaded+=("$id")
openssl pkey -in "$keys/rsa2048.pem" -pubout -out "$work/pub.pem" 2> "$work/pub.err" || { cat "$work/pub.err" >&2; die "openssl pkey -pubout"; }
head -c 1000 /dev/urandom > "$work/data"
ok "loaded a 2048-bit key into @u as $label"

pt=(pkcs11-tool --module "$module")
sign=(--token-label user --login --pin 1234 --sign -m SHA256-RSA-PKCS --label "$label" -i "$work/data")
# run NAME ARGS...: one pkcs11-tool run; stdout, stderr and status kept apart.
run() {
  local name=$1; shift
  echo "${pt[*]} $*" > "$work/$name.cmd"
  local t0=$SECONDS waits
  set +e
  timeout 300 "${pt[@]}" "$@" > "$work/$name.out" 2> "$work/$name.err"
  echo $? > "$work/$name.rc"
  set -e
  waits=$(grep -c 'waiting for 30 seconds' "$work/$name.err" || true)
  if [ "$waits" -gt 0 ]; then waits=", $waits x 30 s waits for threads still running"; else waits=; fi
  echo "# $name: $((SECONDS - t0)) s$waits"
}
dump() {
  echo "--- $(cat "$work/$1.cmd"): exit $(cat "$work/$1.rc"); stdout:"; cat "$work/$1.out"
  echo "--- stderr:"; cat "$work/$1.err"
}
exit0() { # NAME
  [ "$(cat "$work/$1.rc")" = 0 ] || { echo "pkcs11-tool exited $(cat "$work/$1.rc") (124: timed out, a deadlock?)"; dump "$1"; return 1; }
}
# verified NAME: the signature the run wrote is valid for the key.
verified() {
  exit0 "$1" || return 1
  [ -s "$work/$1.sig" ] || { echo "no signature written"; dump "$1"; return 1; }
  openssl dgst -sha256 -verify "$work/pub.pem" -signature "$work/$1.sig" "$work/data" \
    || { echo "signature does not verify"; dump "$1"; return 1; }
}
# forked NAME: the child's C_Initialize ran and returned CKR_OK (pkcs11-tool
# exits non-zero otherwise: "Child process exited with status").
forked() {
  exit0 "$1" || return 1
  # Not -x: the child's stdout buffer is a copy of the parent's, which may
  # end in half a line printed by a test thread at the instant of the fork.
  grep -qF '*** Calling C_Initialize in forked child process ***' "$work/$1.out" \
    || { echo "the child did not report its C_Initialize"; dump "$1"; return 1; }
}
# threaded NAME SPEC...: every thread ran all its commands and ended with
# CKR_OK; exactly one C_Initialize (threads' and main's) won.
threaded() {
  local name=$1; shift
  local err=$work/$name.err n=$# i spec want got inits
  exit0 "$name" || return 1
  grep -qx 'test_threads all threads have ended with CKR_OK' "$err" \
    || { echo "not every thread ended with CKR_OK"; dump "$name"; return 1; }
  got=$(sed -n '/^test_threads all threads have ended/,$p' "$err" | grep -cE '^test_threads thread:[0-9]+ state:-1, rv:CKR_OK$' || true)
  [ "$got" -eq "$n" ] || { echo "$got of $n threads ended with state -1 and CKR_OK"; dump "$name"; return 1; }
  if grep -E 'returned CKR_|rv:CKR_' "$err" | grep -vE 'CKR_OK$|CKR_CRYPTOKI_ALREADY_INITIALIZED$' | grep -v '^Main C_Initialize' | grep -q .; then
    echo "unexpected return values:"; grep -E 'returned CKR_' "$err" | grep -vE 'CKR_OK$|CKR_CRYPTOKI_ALREADY_INITIALIZED$'; dump "$name"; return 1
  fi
  if grep -q 'slot not available\|Unknown test' "$err"; then dump "$name"; return 1; fi
  i=0
  for spec in "$@"; do
    # Each command of the thread ran: GI once, SL twice, Tn once.
    want=$(grep -o 'GI' <<< "$spec" | wc -l)
    got=$(grep -c "^Test thread $i C_GetInfo returned CKR_OK\$" "$err" || true)
    [ "$got" -eq "$want" ] || { echo "thread $i ($spec): $got of $want C_GetInfo returned CKR_OK"; dump "$name"; return 1; }
    want=$(( $(grep -o 'SL' <<< "$spec" | wc -l) * 2 ))
    got=$(grep -c "^Test thread $i C_GetSlotList returned CKR_OK\$" "$err" || true)
    [ "$got" -eq "$want" ] || { echo "thread $i ($spec): $got of $want C_GetSlotList returned CKR_OK"; dump "$name"; return 1; }
    want=$(grep -oE 'T[0-9]' <<< "$spec" | wc -l)
    got=$(grep -c "^Test thread $i C_GetTokenInfo from slot_index" "$err" || true)
    [ "$got" -eq "$want" ] || { echo "thread $i ($spec): $got of $want C_GetTokenInfo"; dump "$name"; return 1; }
    # Every slot list the thread saw had the four standard tokens: two count
    # lines per SL (after the count call and after the list call), each 4.
    want=$(( $(grep -o 'SL' <<< "$spec" | wc -l) * 2 ))
    got=$(grep -c "^Test thread $i l_p11_num_slots:" "$err" || true)
    [ "$got" -eq "$want" ] || { echo "thread $i ($spec): $got slot counts printed, want $want"; grep "^Test thread $i " "$err"; return 1; }
    got=$(grep -c "^Test thread $i l_p11_num_slots:4\$" "$err" || true)
    [ "$got" -eq "$want" ] || { echo "thread $i ($spec): $got of $want slot counts are 4:"; grep "^Test thread $i l_p11_num_slots:" "$err"; return 1; }
    grep -qx "Test thread $i returning rv = 0" "$err" || { echo "thread $i did not return"; dump "$name"; return 1; }
    i=$((i + 1))
  done
  # C_Initialize from several threads at once: one CKR_OK, the rest
  # CKR_CRYPTOKI_ALREADY_INITIALIZED.
  inits=$(grep -cE '^Test thread [0-9]+ C_Initialize +returned CKR_OK$|^Main C_Initialize\(.*\) rv:CKR_OK$' "$err" || true)
  [ "$inits" -eq 1 ] || { echo "$inits C_Initialize calls returned CKR_OK (want exactly 1)"; grep -E 'C_Initialize' "$err"; return 1; }
}

# --- --test-fork -----------------------------------------------------------------
run fork-list --test-fork -L
check "pkcs11-tool --test-fork -L: the child's C_Initialize returns CKR_OK, the parent lists slots" forked fork-list
run fork-sign --test-fork --use-locking "${sign[@]}" -o "$work/fork-sign.sig"
check "pkcs11-tool --test-fork --use-locking --sign: child C_Initialize CKR_OK" forked fork-sign
check "pkcs11-tool --test-fork --use-locking --sign: the parent's SHA256-RSA-PKCS signature verifies" verified fork-sign

# --- --test-threads --------------------------------------------------------------
# targs SPEC...: the --test-threads options for these thread specs.
targs() { local s; for s in "$@"; do printf -- '--test-threads\n%s\n' "$s"; done; }
all_tokens=GISLT0T1T2T3

specs=("IN$all_tokens" "IL$all_tokens")
mapfile -t ta < <(targs "${specs[@]}")
run t2 "${ta[@]}" "${sign[@]}" -o "$work/t2.sig"
check "--test-threads x2 (IN and IL, then GI SL T0-T3) while the main thread signs, C_Initialize(NULL)" threaded t2 "${specs[@]}"
check "--test-threads x2: the main thread's signature verifies" verified t2

specs=()
for i in 1 2 3 4 5; do specs+=("IL${all_tokens}GISL"); done
mapfile -t ta < <(targs "${specs[@]}")
run t5 --use-locking "${ta[@]}" "${sign[@]}" -o "$work/t5.sig"
check "--use-locking --test-threads x5 (IL GI SL T0-T3 GI SL) while the main thread signs" threaded t5 "${specs[@]}"
check "--use-locking --test-threads x5: the main thread's signature verifies" verified t5

specs=()
for i in 1 2 3 4 5; do specs+=("IN${all_tokens}SLT1" "ILSL${all_tokens}GI"); done
mapfile -t ta < <(targs "${specs[@]}")
run t10 "${ta[@]}" "${sign[@]}" -o "$work/t10.sig"
check "--test-threads x10 (the maximum; IN and IL mixed) while the main thread signs, no locking args" threaded t10 "${specs[@]}"
check "--test-threads x10: the main thread's signature verifies" verified t10

run t10f --use-locking --test-fork "${ta[@]}" "${sign[@]}" -o "$work/t10f.sig"
check "--use-locking --test-fork --test-threads x10: threads all CKR_OK" threaded t10f "${specs[@]}"
check "--use-locking --test-fork --test-threads x10: the child's C_Initialize returns CKR_OK" forked t10f
check "--use-locking --test-fork --test-threads x10: the parent's signature verifies" verified t10f

summary
