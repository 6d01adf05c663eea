# shellcheck shell=bash
# The one sshd helper of the project, sourced by the guest test scripts
# (tests/lab/*.sh), the quickstart (lab/lib/demo-ssh) and softhsm-compare
# (functional.sh): a throwaway sshd on loopback that touches nothing of the
# system's or the user's ssh setup, the matching client options, and an
# OpenSSL engine config.
# start_sshd DIR PORT: host key, config and logs live in DIR; keys allowed to
# log in are read from DIR/authorized_keys at every connection.
start_sshd() {
  local dir=$1 port=$2 login=prohibit-password
  [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$dir/hostkey"
  cat > "$dir/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $dir/hostkey
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin $login
StrictModes no
LogLevel DEBUG1
PubkeyAcceptedAlgorithms +ssh-rsa
CFG
  "$(command -v sshd || echo /usr/sbin/sshd)" -f "$dir/sshd_config" -E "$dir/sshd.log" || return 1
  for _ in $(seq 100); do [ -s "$dir/sshd.pid" ] && return 0; sleep 0.1; done
  return 1
}

stop_sshd() {
  [ -f "$1/sshd.pid" ] && kill "$(cat "$1/sshd.pid")" 2>/dev/null || true
}

# Options for an ssh client that reads no config and writes no known_hosts.
ssh_client_opts() {
  printf '%s\n' -F /dev/null -p "$1" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR
}

# write_engine_conf FILE MODULE: an OpenSSL config that loads the libp11
# engine with MODULE, for OPENSSL_CONF=FILE; the system's config is untouched.
# Sets engine_so to the engine's path.
write_engine_conf() {
  engine_so=$(dpkg -L libengine-pkcs11-openssl 2> /dev/null | grep -m1 '/engines-3/pkcs11\.so$') \
    || engine_so=$(ls /usr/lib/*/engines-3/pkcs11.so 2> /dev/null | head -n 1)
  [ -n "$engine_so" ] && [ -f "$engine_so" ] || { echo "libp11 engine (libengine-pkcs11-openssl) not found" >&2; return 1; }
  cat > "$1" <<CNF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine_so
MODULE_PATH = $2
init = 0
CNF
}
