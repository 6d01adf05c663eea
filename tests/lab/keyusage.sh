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

# steady_usage [UID]: usage once it has not changed for 1 s (at most 15 s):
# the baseline of a check. Keys of earlier tests are freed asynchronously by
# the kernel's garbage collector, and one freed during a check made its
# count smaller than the baseline (seen on 6.1: exec.sh's first check).
steady_usage() {
  local i same=0 last now
  last=$(usage "$@")
  for i in $(seq 150); do
    sleep 0.1
    now=$(usage "$@")
    if [ "$now" = "$last" ]; then
      same=$((same + 1)); ((same >= 10)) && break
    else
      same=0; last=$now
    fi
  done
  echo "$last"
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
