#!/usr/bin/env bash
# `keyring-pkcs11 exec` on a real kernel: every bad input leaves the program
# unstarted, says why on one line, exits 1 (input) or 2 (kernel), and leaves
# no key in any keyring (the kernel's own accounting, /proc/key-users, and
# /proc/keys are back where they were); the keys it loads are usable by the
# program and its descendants, also after they setuid() to another user, and
# by nothing else, not even root outside the tree (no view, no use), and no
# process of the tree can make them outlive it (no link, revoke, setperm);
# they die with the tree (SIGKILL); the program is exec'd in place (same PID,
# exit status) with the caller's file descriptors and ignored signals;
# --credentials reads a systemd credentials directory.
# Runs as root inside the lab guest. Usage: exec.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
bin=$(dirname "$module")/keyring-pkcs11
work=$(mktemp -d /tmp/kp11-exec.XXXXXX)
chmod 755 "$work"
suite=exec
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
user=kp11exec
quota_keys=$(cat /proc/sys/kernel/keys/root_maxkeys)
quota_bytes=$(cat /proc/sys/kernel/keys/root_maxbytes)
tree=()
exec_cleanup() {
  ((${#tree[@]})) && kill -KILL "${tree[@]}" 2> /dev/null
  echo "$quota_keys" > /proc/sys/kernel/keys/root_maxkeys
  echo "$quota_bytes" > /proc/sys/kernel/keys/root_maxbytes
  cleanup
}
trap exec_cleanup EXIT

[ -x "$bin" ] || die "no CLI at $bin"
echo "# kernel $(uname -r); cli $bin"
id "$user" > /dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$user"

# --- inputs --------------------------------------------------------------------
k2=$work/web.pem k3=$work/api.pem
install -m 600 "$keys/rsa2048.pem" "$k2"
install -m 600 "$keys/rsa3072.pem" "$k3"
openssl req -new -x509 -key "$k2" -subj /CN=kp11-exec-web -days 2 -out "$work/web.crt" 2> /dev/null
openssl req -new -x509 -key "$k3" -subj /CN=kp11-exec-ca -days 2 -out "$work/ca.crt" 2> /dev/null
printf 'kp11-exec-pass\n' > "$work/pass"
printf 'not-it\n' > "$work/wrong"
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:kp11-exec-pass -in "$k2" -out "$work/enc.p8"
openssl genpkey -algorithm ed25519 -out "$work/ed25519.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.pem"
head -c 1200 /dev/urandom > "$work/garbage"
ssh-keygen -y -f "$k2" > "$work/web.pub"
# An executable whose ELF interpreter does not exist: execve fails (ENOENT).
# (Not a file of unknown format: execvp hands those to /bin/sh.)
sed 's|/lib64/ld-linux-x86-64.so.2|/lib64/ld-linux-x86-64.so.X|' "$(type -P true)" > "$work/notaprogram"; chmod 755 "$work/notaprogram"
printf '#!/bin/sh\n' > "$work/notexecutable"; chmod 644 "$work/notexecutable"
head -c 64 /dev/urandom > "$work/data"
openssl dgst -sha256 -binary -out "$work/data.sha256" "$work/data"

# shellcheck source=tests/lab/keyusage.sh
source "$(dirname "${BASH_SOURCE[0]}")/keyusage.sh"

# refused RC TEXT [--as USER] EXEC-ARGS...: `keyring-pkcs11 exec EXEC-ARGS --
# touch MARKER` exits RC, the marker is not created, the first line of
# stderr is the reason and contains TEXT, and every key is gone again.
refused() {
  local want=$1 text=$2 rc=0 before as=() uid=0
  shift 2
  if [ "${1:-}" = --as ]; then as=(setpriv --reuid="$2" --regid="$2" --clear-groups); uid=$(id -u "$2"); shift 2; fi
  before=$(steady_usage "$uid")
  rm -f "$work/started"
  "${as[@]}" "$bin" exec "$@" -- touch "$work/started" > "$work/out" 2> "$work/err" < "${stdin:-/dev/null}" || rc=$?
  cat "$work/err"
  [ "$rc" -eq "$want" ] || { echo "exit status $rc, want $want"; return 1; }
  [ ! -e "$work/started" ] || { echo "the command was started"; return 1; }
  head -n 1 "$work/err" | grep -q '^keyring-pkcs11: error: ' || { echo "the first line is not the reason"; return 1; }
  head -n 1 "$work/err" | grep -qF -- "$text" || { echo "the first line does not say '$text'"; return 1; }
  [ ! -s "$work/out" ] || { echo "unexpected stdout:"; cat "$work/out"; return 1; }
  settle "$before" "$uid"
}

# (A kernel without the PKCS#8 parser: tests/lab/no-parser.sh, in a guest of
# its own.)

# --- 2. bad input: exit 1, nothing started, nothing left -----------------------
check "a missing key file: exit 1" refused 1 "cannot read key file $work/nope" --key web="$work/nope"
check "a directory as key file: exit 1" refused 1 "cannot read key file" --key web="$work"
check "a key file the user may not read (non-root user): exit 1, Permission denied" \
  refused 1 "Permission denied" --as "$user" --key web="$k2"
check "random bytes as a key: exit 1" refused 1 "$work/garbage" --key web="$work/garbage"
check "a certificate as a key: exit 1" refused 1 "$work/web.crt" --key web="$work/web.crt"
check "an OpenSSH public key as a key: exit 1" refused 1 "public key" --key web="$work/web.pub"
check "a wrong passphrase: exit 1" refused 1 "wrong passphrase" --key web="$work/enc.p8" --passphrase-file "$work/wrong"
check "an encrypted key and no terminal: exit 1, says --passphrase-file" refused 1 "--passphrase-file" --key web="$work/enc.p8"
check "an Ed25519 key: exit 1" refused 1 "Ed25519" --key web="$work/ed25519.pem"
check "an EC key: exit 1" refused 1 "only RSA" --key web="$work/ec.pem"
check "two keys with one label: exit 1" refused 1 'two keys are labelled "web"' --key web="$k2" --key web="$k3"
check "one key under two labels: exit 1" refused 1 "are the same key" --key web="$k2" --key again="$work/enc.p8" --passphrase-file "$work/pass"
check "a certificate for another key: exit 1" refused 1 "not for this key" --key web="$k2" --cert web="$work/ca.crt"
check "a certificate with no key: exit 1" refused 1 "no --key api" --key web="$k2" --cert api="$work/ca.crt"
check "two inputs from stdin: exit 1" refused 1 "standard input" --key web=- --passphrase-file -
check "no key at all: exit 1" refused 1 "no key to load" 
check "a command not found in PATH: exit 1" refused 1 "command not found: kp11-no-such-command" --key web="$k2" -- kp11-no-such-command
check "a command path that does not exist: exit 1" refused 1 "command not found or not executable: /nonexistent/server" --key web="$k2" -- /nonexistent/server
check "a command that is not executable: exit 1" refused 1 "not executable" --key web="$k2" -- "$work/notexecutable"
# Found and executable, but execve fails after the keys are in the kernel,
# restricted: they go with the tool's keyring.
check "a command execve refuses after the keys are loaded (its ELF interpreter is missing): exit 1, the keys gone" \
  refused 1 "cannot run $work/notaprogram: its ELF interpreter" --key web="$k2" --cert web="$work/web.crt" -- "$work/notaprogram"
check "--credentials without \$CREDENTIALS_DIRECTORY: exit 1" refused 1 "CREDENTIALS_DIRECTORY is not set" --credentials
mkdir -p "$work/creds-empty"
CREDENTIALS_DIRECTORY=$work/creds-empty check "--credentials with no *.key: exit 1" refused 1 "no *.key file in \$CREDENTIALS_DIRECTORY ($work/creds-empty)" --credentials

# --- 3. the kernel refuses: a full key quota (EDQUOT) -----------------------
# How many keys and bytes one key costs here (the keyring, the key, records).
qkeys() { awk '$1 == "0:" { split($4, k, "/"); print k[1] }' /proc/key-users; }
qbytes() { awk '$1 == "0:" { split($5, b, "/"); print b[1] }' /proc/key-users; }
before=$(steady_usage)
base_keys=$(qkeys) base_bytes=$(qbytes)
"$bin" exec --key web="$k2" -- awk '$1 == "0:" { split($4, k, "/"); split($5, b, "/"); print k[1], b[1] }' /proc/key-users > "$work/inside" \
  || die "exec with one key failed"
read -r in_keys in_bytes < "$work/inside"
settle "$before" || die "the key of a finished program is still in the kernel"
ring_and_key=$((in_keys - base_keys))
echo "# one key under exec costs $ring_and_key keys (keyring + key), $((in_bytes - base_bytes)) bytes"
edquot() { # MAXKEYS MAXBYTES TEXT EXEC-ARGS...
  local mk=$1 mb=$2 text=$3 rc=0
  shift 3
  echo "$mk" > /proc/sys/kernel/keys/root_maxkeys
  echo "$mb" > /proc/sys/kernel/keys/root_maxbytes
  refused 2 "Disk quota exceeded (EDQUOT)" "$@" || rc=1
  echo "$quota_keys" > /proc/sys/kernel/keys/root_maxkeys
  echo "$quota_bytes" > /proc/sys/kernel/keys/root_maxbytes
  grep -qF -- "$text" "$work/err" || { echo "no '$text' in the message"; rc=1; }
  return $rc
}
check "key quota full, no room for the keyring: exit 2, EDQUOT, names root_maxkeys" \
  edquot "$base_keys" "$quota_bytes" "sysctl -w kernel.keys.root_maxkeys=" --key web="$k2"
check "key quota full after the keyring: exit 2, EDQUOT, names root_maxkeys" \
  edquot "$((base_keys + 1))" "$quota_bytes" "kernel.keys.root_maxkeys" --key web="$k2"
check "key quota full after the first of two keys: exit 2, the first taken out" \
  edquot "$((base_keys + ring_and_key))" "$quota_bytes" "kernel.keys.root_maxkeys" --key web="$k2" --key api="$k3"
check "byte quota full: exit 2, EDQUOT, names root_maxbytes" \
  edquot "$quota_keys" "$((base_bytes + 8))" "kernel.keys.root_maxbytes" --key web="$k2"

# --- 4. a running tree: who can use and see the keys --------------------------
# The program records what it sees, then waits; the checks run from inside
# (the program, a child of it after setuid) and outside (this shell: same
# uid, not in the tree; and another user).
cat > "$work/inside.sh" <<'SH'
#!/bin/bash
# Runs as the exec'd program. $1: work dir, $2: module, $3: unprivileged user.
w=$1 module=$2 user=$3
echo $$ > "$w/inside.pid"
grep -E '^Sig(Blk|Ign):' /proc/self/status > "$w/inside.sig"
ls /proc/$$/fd | grep -vx 255 > "$w/inside.fd"   # 255: bash's own, the script
readlink /proc/$$/fd/3 > "$w/inside.fd3" 2>&1
ring=$(keyctl show @s | awk 'NR == 2 { print $1 }')
echo "$ring" > "$w/inside.ring"
{ keyctl rdescribe "$ring"; for k in $(keyctl rlist @s); do echo "$k $(keyctl rdescribe "$k")"; done; } > "$w/inside.keys"
p11tool --provider "$module" --list-all 'pkcs11:token=session' > "$w/inside.p11" 2>&1
p11tool --provider "$module" --test-sign 'pkcs11:token=session;object=web;type=private' > "$w/inside.sign" 2>&1; echo "rc=$?" >> "$w/inside.sign"
setpriv --reuid="$user" --regid="$user" --clear-groups bash -c 'id -un; p11tool --provider "$0" --test-sign "pkcs11:token=session;object=api;type=private"' "$module" > "$w/inside.setuid" 2>&1; echo "rc=$?" >> "$w/inside.setuid"
runuser -u "$user" -- p11tool --provider "$module" --test-sign 'pkcs11:token=session;object=web;type=private' > "$w/inside.runuser" 2>&1; echo "rc=$?" >> "$w/inside.runuser"
web=$(keyctl search @s asymmetric web)
for op in "link $web @u" "setperm $web 0x3f3f3f3f" "revoke $web" "unlink $web @s" "setperm $ring 0x3f3f3f3f"; do
  echo "$op: $(keyctl $op 2>&1; echo "rc=$?")" | tr '\n' ' '; echo
done > "$w/inside.deny"
touch "$w/inside.done"
exec sleep 600
SH
chmod 755 "$work/inside.sh"
before=$(steady_usage)
# SIGHUP ignored and SIGPIPE ignored by the caller, fd 3 open: what reaches the program?
bash -c 'trap "" HUP PIPE; grep "^SigIgn:" /proc/self/status > "$0/caller.sig"; exec "$@"' "$work" "$bin" -v exec --key web="$k2" --cert web="$work/web.crt" --key api="$k3" \
  -- "$work/inside.sh" "$work" "$module" "$user" 3< "$work/data" > "$work/tree.out" 2> "$work/tree.err" &
tree=($!)
for _ in $(seq 600); do [ -e "$work/inside.done" ] && break; sleep 0.1; done
[ -e "$work/inside.done" ] || { cat "$work/tree.err" >&2; die "the program under exec did not finish its checks"; }
tree+=($(cat /proc/"${tree[0]}"/task/*/children 2> /dev/null))
web=$(sed -n 's/^keyring-pkcs11: key "web": RSA 2048 bits, kernel key \([0-9]*\), in session keyring \([0-9]*\).*/\1/p' "$work/tree.err")
api=$(sed -n 's/^keyring-pkcs11: key "api": RSA 3072 bits, kernel key \([0-9]*\),.*/\1/p' "$work/tree.err")
ring=$(cat "$work/inside.ring")
echo "# tree ${tree[*]}: keyring $ring, web $web, api $api"

same_process() {
  cat "$work/tree.err"
  [ "$(cat "$work/inside.pid")" = "${tree[0]}" ] || { echo "the program runs as pid $(cat "$work/inside.pid"), the tool was ${tree[0]}"; return 1; }
  [ -n "$web" ] && [ -n "$api" ] || { echo "-v did not print both keys' serials"; return 1; }
  grep -qF "in session keyring $ring (possessors only)" "$work/tree.err" || { echo "-v names another keyring than the program's @s ($ring)"; return 1; }
}
check "the program replaces the tool (same pid); -v names each key's serial and the keyring" same_process
inherited() {
  cat "$work/inside.sig" "$work/inside.fd" "$work/inside.fd3"
  grep -qx 'SigBlk:	0000000000000000' "$work/inside.sig" || { echo "signals blocked"; return 1; }
  # What the caller ignored stays ignored (SIGHUP, as under nohup; SIGINT
  # and SIGQUIT, as for a background job), except SIGPIPE (bit 12): back at
  # its default action (documented).
  local caller want
  caller=$(awk '{ print $2 }' "$work/caller.sig")
  want=$(printf 'SigIgn:\t%016x' $((0x$caller & ~0x1000)))
  echo "caller's $(cat "$work/caller.sig")"
  (( (0x$caller & 0x1001) == 0x1001 )) || { echo "the caller did not ignore SIGHUP and SIGPIPE"; return 1; }
  grep -qx "$want" "$work/inside.sig" || { echo "ignored signals: want $want"; return 1; }
  [ "$(tr '\n' ' ' < "$work/inside.fd")" = "0 1 2 3 " ] || { echo "the program's fds are not the caller's 0-3"; return 1; }
  [ "$(cat "$work/inside.fd3")" = "$work/data" ] || { echo "fd 3 is not the caller's"; return 1; }
}
check "the program gets the caller's fds (0-3, socket activation style) and no others, SIGHUP still ignored, SIGPIPE default, nothing blocked" inherited
use_only() {
  cat "$work/inside.keys"
  local n
  n=$(wc -l < "$work/inside.keys")
  [ "$n" -ge 4 ] || { echo "fewer links than keyring + 2 keys + a certificate"; return 1; }
  [ "$(grep -c ';0;0;0b000000;' "$work/inside.keys")" -eq "$n" ] || { echo "not everything is 0x0b000000 (possessor view, read, search; nothing for user, group, other)"; return 1; }
  grep -q "^$web asymmetric;0;0;0b000000;web$" "$work/inside.keys" || { echo "no key web ($web)"; return 1; }
  grep -q "^$api asymmetric;0;0;0b000000;api$" "$work/inside.keys" || { echo "no key api ($api)"; return 1; }
}
check "keyring, keys and the certificate record: possessor view/read/search only (0x0b000000)" use_only
tree_uses() {
  cat "$work/inside.p11" "$work/inside.sign"
  grep -q 'object=web;type=private' "$work/inside.p11" && grep -q 'object=api;type=private' "$work/inside.p11" || { echo "p11tool in the tree does not list web and api"; return 1; }
  grep -q 'object=web;type=cert' "$work/inside.p11" || { echo "no certificate for web"; return 1; }
  grep -q 'Verifying against public key in the token.*ok' "$work/inside.sign" && grep -q 'rc=0' "$work/inside.sign" || { echo "p11tool --test-sign failed in the tree"; return 1; }
}
check "the program (a process of the tree) lists web, api and web's certificate, and signs (p11tool --test-sign)" tree_uses
after_setuid() {
  cat "$work/inside.setuid" "$work/inside.runuser"
  head -n 1 "$work/inside.setuid" | grep -qx "$user" || { echo "setpriv did not switch to $user"; return 1; }
  grep -q 'rc=0' "$work/inside.setuid" && grep -q 'rc=0' "$work/inside.runuser" || { echo "a process of the tree cannot sign after setuid"; return 1; }
}
check "a child that setuid()s to $user (setpriv; runuser, with pam_keyinit) still signs" after_setuid
no_escape() {
  cat "$work/inside.deny"
  [ "$(grep -c 'Permission denied rc=1' "$work/inside.deny")" -eq 5 ] || { echo "a process of the tree could link, re-permit, revoke or unlink"; return 1; }
}
check "inside the tree, no link to @u, setperm, revoke or unlink: the keys cannot outlive the tree" no_escape
outside() {
  local s out rc=0
  for s in "$ring" "$web" "$api"; do
    out=$(keyctl describe "$s" 2>&1) && { echo "root outside the tree can describe $s: $out"; rc=1; }
    grep -q "Permission denied" <<< "$out" || { echo "describe $s: $out (want Permission denied)"; rc=1; }
    out=$(setpriv --reuid="$user" --regid="$user" --clear-groups keyctl describe "$s" 2>&1) && { echo "$user can describe $s"; rc=1; }
    grep -qi "$(printf '%08x' "$s") " /proc/keys && { echo "/proc/keys shows $s"; rc=1; }
  done
  out=$(keyctl pkey_sign "$web" 0 "$work/data.sha256" enc=pkcs1 hash=sha256 2>&1 > /dev/null) && { echo "root outside the tree signed with $web"; rc=1; }
  grep -q "Permission denied" <<< "$out" || { echo "pkey_sign: $out"; rc=1; }
  p11tool --provider "$module" --list-all 'pkcs11:token=session' 2>&1 | grep -E 'object=(web|api)' && { echo "p11tool outside sees a key"; rc=1; }
  "$bin" list --token session 2>&1 | grep -E '^(web|api)$' && { echo "keyring-pkcs11 list outside sees a key"; rc=1; }
  return $rc
}
check "outside the tree (root, and $user): describe and pkey_sign EACCES, not in /proc/keys, p11tool and list see nothing" outside
killed() {
  kill -KILL "${tree[@]}"
  wait "${tree[0]}" 2> /dev/null || true
  local i out
  for i in $(seq 100); do
    out=$(keyctl describe "$web" 2>&1) || true
    grep -q "Required key not available" <<< "$out" && break
    sleep 0.1
  done
  echo "describe $web after SIGKILL: $out (${i}00 ms)"
  grep -q "Required key not available" <<< "$out" || return 1
  settle "$before"
}
check "SIGKILL of the tree: the keys are gone (describe: ENOKEY) and the accounting is back" killed
tree=()

# --- 5. exit status, stdin, --credentials --------------------------------------
status() {
  local rc=0
  "$bin" exec --key web=- -- sh -c 'exit 7' < "$k2" || rc=$?
  [ "$rc" -eq 7 ] || { echo "exit status $rc, want the program's 7"; return 1; }
}
check "a key from stdin; the program's exit status is the tool's" status
credentials() {
  local d=$work/creds before out
  mkdir -m 700 "$d"
  install -m 400 "$k2" "$d/web.key"
  install -m 400 "$work/web.crt" "$d/web.crt"
  install -m 400 "$k3" "$d/api.key"
  install -m 400 "$work/ca.crt" "$d/ca.crt"      # not a key's: left alone
  install -m 400 "$work/pass" "$d/other"          # another credential
  before=$(steady_usage)
  out=$(CREDENTIALS_DIRECTORY=$d "$bin" exec --credentials -- p11tool --provider "$module" --list-all 'pkcs11:token=session' 2>&1) \
    || { echo "$out"; return 1; }
  echo "$out"
  for o in "object=web;type=private" "object=api;type=private" "object=web;type=cert"; do
    grep -qF "$o" <<< "$out" || { echo "no $o"; return 1; }
  done
  grep -q "object=ca" <<< "$out" && { echo "ca.crt was loaded"; return 1; }
  settle "$before"
}
check "--credentials loads web.key (with web.crt) and api.key, leaves ca.crt alone; gone after the program exits" credentials

summary
