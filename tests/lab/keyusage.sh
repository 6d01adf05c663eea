# shellcheck shell=bash
# Sourced by exec.sh and servers.sh: what the kernel holds for a user, to
# show that keys are gone. Keys restricted to their possessors are invisible
# in /proc/keys even to root, so the kernel's accounting is the witness.

# usage [UID]: "KEYS BYTES ASYMMETRIC": every key the user owns and the bytes
# charged to its quota (/proc/key-users), and the asymmetric keys /proc/keys
# shows the caller.
usage() {
  local u=${1:-0}
  awk -v u="$u:" '$1 == u { split($3, k, "/"); split($5, b, "/"); printf "%s %s", k[1], b[1]; f = 1 } END { if (!f) printf "0 0" }' /proc/key-users
  echo " $(grep -c ' asymmetri ' /proc/keys || true)"
}

# settle BEFORE [UID]: the number of keys the user owns, and of asymmetric
# keys /proc/keys shows, are back to BEFORE within 10 s (the kernel's garbage
# collector runs asynchronously after a keyring's last holder exits). Every
# key counts there, so a key left behind cannot hide. The bytes are shown,
# not compared: a long-lived keyring's charge can change by a few bytes with
# no key added (seen: +8 after nginx ran).
settle() {
  local i now
  for i in $(seq 100); do
    now=$(usage "${2:-0}")
    [ "$(cut -d' ' -f1,3 <<< "$now")" = "$(cut -d' ' -f1,3 <<< "$1")" ] && return 0
    sleep 0.1
  done
  echo "key usage (keys, bytes, visible asymmetric keys) is '$now', was '$1': a key was left behind"
  return 1
}

# Every process that loads the module creates the user's persistent keyring
# (the module resolves its tokens at C_Initialize); it outlives them by
# design (kernel.keys.persistent_keyring_expiry). Made here, before any
# baseline is taken, so that it does not count as a key left behind.
keyctl get_persistent @p > /dev/null 2>&1 || true
