#!/usr/bin/env bash
# Memory scrape of the keyring-pkcs11 tool: after `keyring-pkcs11 import` of
# a passphrase-protected OpenSSH key and of an encrypted PKCS#8 key (the
# passphrase from a file, and typed on a terminal), the tool's memory at its
# very end (a breakpoint on _exit, after every destructor and atexit handler;
# the image written with gdb's gcore, every writable mapping) holds no piece
# of the private exponent or either prime, in either byte order — no 32-byte
# window of them, so a freed block whose head the allocator reused still
# counts — nor any 12 bytes of the passphrase. The positive controls: the
# same scan finds the whole key in the same process while it is on its way
# to the kernel (a breakpoint on the add_key syscall), and in a python
# process holding the key file.
# Before the fix it found 6 of 7 windows of each prime (little-endian:
# RustCrypto's freed bignum temporaries) and 96 bytes of both primes on the
# stack (an OpenSSH key's decryption).
# Runs as root inside the lab guest. Usage: cli-memory.sh MODULE.so KEYDIR
# The CLI is the keyring-pkcs11 binary next to MODULE.so.
set -uo pipefail
suite=cli-memory
work=$(mktemp -d /tmp/kp11-climem.XXXXXX)
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

module=$(realpath "$1")
bin=$(dirname "$module")/keyring-pkcs11
[ -x "$bin" ] || die "no CLI at $bin (cargo build makes it next to the module)"
command -v gdb > /dev/null || die "gdb is not installed (apt-get install gdb)"
echo "# kernel $(uname -r); cli $bin; $(gdb --version | head -n 1)"

# A key of its own (no other test's key in @u to confuse the scan), and a
# passphrase long enough that no chance match is possible.
key=$work/key.pem
(umask 077; openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key") || die "openssl genpkey"
phrase=kp11-mem-$(openssl rand -hex 16)
printf '%s\n' "$phrase" > "$work/pass"
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout "pass:$phrase" -in "$key" -out "$work/enc.p8" || die "openssl pkcs8"
openssl rsa -traditional -in "$key" -out "$work/id_rsa" 2> /dev/null && chmod 600 "$work/id_rsa" || die "openssl rsa"
ssh-keygen -q -p -P '' -N "$phrase" -f "$work/id_rsa" > /dev/null || die "ssh-keygen -p"
head -n 1 "$work/id_rsa" | grep -qx -- "-----BEGIN OPENSSH PRIVATE KEY-----" || die "ssh-keygen did not write OpenSSH format"

# The needles, as hex (this script never holds them as bytes; the scanner
# keeps them XOR-masked, so its own memory could not match either).
field() { # NAME: a field of `openssl rsa -text`, as hex without leading zero bytes
  openssl rsa -in "$key" -noout -text 2> /dev/null | awk -v f="$1:" '
    $1 == f { on = 1; next }
    on && /^[a-zA-Z]/ { on = 0 }
    on { gsub(/[ :]/, ""); printf "%s", $0 }' | sed -E 's/^(00)+//'
}
for f in modulus privateExponent prime1 prime2; do
  field "$f" > "$work/$f.hex"
  [ "$(wc -c < "$work/$f.hex")" -ge 200 ] || die "could not read $f from the key"
done
printf '%s' "$phrase" | od -An -tx1 | tr -d ' \n' > "$work/passphrase.hex"

# gdb runs the tool to its _exit and writes its memory image (every writable
# mapping, file-backed ones included).
# gdb stops the tool twice: at the first add_key(2), when the key is on its
# way to the kernel (CORE.during: the positive control, where the key must be
# found; a temporary breakpoint, as root's import adds the key's record
# after it), and at _exit (CORE: where nothing of it may be left).
gdb_script() { # CORE
  printf '%s\n' 'set confirm off' 'set breakpoint pending on' \
    'set use-coredump-filter off' 'set pagination off' \
    'tbreak syscall if $rdi == 248' 'break _exit' run \
    "gcore $1.during" continue 'print (int) $rdi' 'info proc mappings' \
    "gcore $1" kill > "$1.gdb"
}
core_of() { # CORE CMD...: runs CMD under gdb, leaves its images in CORE(.during)
  local core=$1; shift
  gdb_script "$core"
  gdb -q -nx -batch -x "$core.gdb" --args "$@"
}

# scan CORE: for each secret and byte order, how many of its 32-byte windows
# (every 16 bytes; the passphrase's 12-byte windows, every byte) occur in
# CORE, and of how many. Windows, not whole values: a freed buffer whose head
# the allocator has overwritten with its own pointers still leaks the rest.
scan() {
  python3 - "$1" "$work" ${2:+"$2"} << 'PY'
import mmap, os, sys
core, work = sys.argv[1], sys.argv[2]
MASK = 0x5a
names = ["modulus", "privateExponent", "prime1", "prime2", "passphrase"]
secrets = []
for n in names:
    b = bytes.fromhex(open(os.path.join(work, n + ".hex")).read().strip())
    orders = [("big-endian", b)] if n == "passphrase" else [("big-endian", b), ("little-endian", b[::-1])]
    for order, v in orders:
        size, step = (12, 1) if n == "passphrase" else (32, 16)
        windows = [bytes(x ^ MASK for x in v[i:i + size]) for i in range(0, len(v) - size + 1, step)]
        secrets.append((n, order, windows))
import struct
maps = []  # (start, end, name) from gdb's "info proc mappings", if given
if len(sys.argv) > 3:
    for line in open(sys.argv[3], errors="replace"):
        f = line.split()
        if len(f) >= 4 and f[0].startswith("0x") and f[1].startswith("0x"):
            maps.append((int(f[0], 16), int(f[1], 16), f[-1] if len(f) > 5 or not f[-1].startswith("0x") else "[anon]"))
def where(m, off):
    # The core's PT_LOAD segments map file offsets to addresses.
    phoff, = struct.unpack_from("<Q", m, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", m, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", m, phoff + i * phentsize)
        if p_type == 1 and p_offset <= off < p_offset + p_filesz:
            addr = p_vaddr + off - p_offset
            names = [n for a, b, n in maps if a <= addr < b]
            return f"{addr:#x} {names[0] if names else ''}".strip()
    return f"file offset {off:#x}"
with open(core, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
    for name, order, windows in secrets:
        at = [m.find(bytes(x ^ MASK for x in w)) for w in windows]
        found = [a for a in at if a >= 0]
        print(f"{name} {order} {len(found)} {len(windows)}")
        if name not in ("modulus",) and found:
            print(f"where: {name} {order} at " + ", ".join(sorted({where(m, a) for a in found})), file=sys.stderr)
PY
}

# verdict CORE RUN-OUTPUT: the checks on one import.
verdict() {
  local core=$1 out=$2 bad=0
  grep -q 'origin:   imported' "$out" || { cat "$out"; echo "the import did not happen"; return 1; }
  grep -qE '^\$1 = 0$' "$out" || { cat "$out"; echo "the tool did not exit 0"; return 1; }
  [ -s "$core" ] && [ -s "$core.during" ] || { cat "$out"; echo "gdb wrote no memory image"; return 1; }
  # While the key goes to the kernel, the scan finds it whole (big-endian,
  # as PKCS#8 holds it): it looks where the key is.
  scan "$core.during" > "$work/hits" 2> /dev/null || return 1
  sed "s/^/# $(basename "$out") at add_key: /" "$work/hits" >> "$work/all-hits"
  awk '$2 == "big-endian" && $1 != "passphrase" && $3 != $4 { bad = 1 } END { exit bad }' "$work/hits" \
    || { cat "$work/hits"; echo "the key was not found while it was being added: the scan proves nothing"; bad=1; }
  # At the end: nothing of it, in any byte order.
  scan "$core" "$out" > "$work/hits" || return 1
  cat "$work/hits"
  sed "s/^/# $(basename "$out") at _exit: /" "$work/hits" >> "$work/all-hits"
  while read -r name order found of; do
    [ "$name" = modulus ] || [ "$found" -eq 0 ] || { echo "LEAK: $name ($order): $found of its $of windows"; bad=1; }
  done < "$work/hits"
  return "$bad"
}

# The scanner itself: in a process that holds the key (python with the DER
# key file read into memory), it finds d, p and q in full.
scanner_finds_secrets() {
  local core=$work/core.python
  openssl rsa -in "$key" -outform DER -out "$work/key.der" 2> /dev/null || return 1
  gdb -q -nx -batch -ex 'set confirm off' -ex 'set use-coredump-filter off' \
    -ex 'break _exit' -ex run -ex "gcore $core" -ex kill \
    --args python3 -c 'import sys; k = open(sys.argv[1], "rb").read(); k2 = k[::-1]; sys.exit(0)' "$work/key.der" \
    > "$work/run.python" 2>&1
  scan "$core" > "$work/hits" || return 1
  rm -f "$core" "$work/key.der"
  cat "$work/hits"
  awk '$1 != "passphrase" && $3 != $4 { bad = 1 } END { exit bad }' "$work/hits"
}

remove_imported() {
  local id
  for id in $(keyctl rlist @u 2> /dev/null); do
    case "$(keyctl rdescribe "$id" 2> /dev/null)" in
      *";kp11-mem"*|*";keyring-pkcs11:"*) keyctl unlink "$id" @u > /dev/null 2>&1 || true ;;
    esac
  done
}

import_scan() { # LABEL FILE [IMPORT-OPTIONS...]
  local label=$1 file=$2 core=$work/core.$1
  shift 2
  remove_imported
  core_of "$core" "$bin" import "$file" --label "$label" "$@" > "$work/run.$label" 2>&1
  verdict "$core" "$work/run.$label"
  local rc=$?
  rm -f "$core" "$core.during"
  remove_imported
  return $rc
}

# The same, the passphrase typed on a terminal (gdb and the tool on a
# pseudo-terminal; the answer typed when the tool asks).
import_scan_tty() { # LABEL FILE
  local label=$1 file=$2 core=$work/core.$1
  remove_imported
  gdb_script "$core"
  python3 - "$phrase" -- gdb -q -nx -batch -x "$core.gdb" \
    --args "$bin" import "$file" --label "$label" > "$work/run.$label" 2>&1 << 'PY'
import os, pty, sys, termios, time
args = sys.argv[1:]
cut = args.index("--")
answers, cmd = args[:cut], args[cut + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
seen = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    sys.stdout.buffer.write(chunk.replace(b"\r\n", b"\n"))
    sys.stdout.flush()
    seen += chunk
    if seen.rstrip().endswith(b":") and b"passphrase" in seen.splitlines()[-1].lower():
        seen = b""
        # The tool prints its prompt before it turns echo off: wait for the
        # terminal to stop echoing (or 10 s), or a busy machine types the
        # answer into a terminal that still shows it.
        deadline = time.monotonic() + 10
        while termios.tcgetattr(fd)[3] & termios.ECHO and time.monotonic() < deadline:
            time.sleep(0.01)
        if answers:
            os.write(fd, answers.pop(0).encode() + b"\n")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
PY
  verdict "$core" "$work/run.$label"
  local rc=$?
  rm -f "$core" "$core.during"
  remove_imported
  return $rc
}

check "the scan finds d, p, q (both byte orders) and the modulus in a process that holds the key" \
  scanner_finds_secrets
check "import of a passphrase-protected OpenSSH key (passphrase file): no piece of d, p, q or the passphrase left in the tool's memory" \
  import_scan kp11-mem-ssh "$work/id_rsa" --passphrase-file "$work/pass"
check "import of an encrypted PKCS#8 key (passphrase file): no piece of d, p, q or the passphrase left in the tool's memory" \
  import_scan kp11-mem-p8 "$work/enc.p8" --passphrase-file "$work/pass"
check "import of a passphrase-protected OpenSSH key (passphrase typed on a terminal): nothing left" \
  import_scan_tty kp11-mem-sshtty "$work/id_rsa"
check "import of an encrypted PKCS#8 key (passphrase typed on a terminal): nothing left" \
  import_scan_tty kp11-mem-p8tty "$work/enc.p8"
cat "$work/all-hits" 2> /dev/null
summary
