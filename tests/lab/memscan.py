#!/usr/bin/env python3
"""Scans the memory of running processes for an RSA key's secrets.

Usage: memscan.py KEYFILE PID...

Reads every readable mapping of each PID (/proc/PID/maps, /proc/PID/mem) and
looks for the key's private exponent d, primes p and q, and CRT values dP, dQ
and qInv, each in big-endian (DER, file) and little-endian (bignum limbs)
byte order; and for the modulus n, which every process that uses the key has
(from the certificate or the public key), proving that the scan reads real
memory. Prints one line per process. Exit status: 0 if no secret was found
anywhere and n was found in every process; 1 if a secret was found; 2 if n
was missing somewhere (the scan proves nothing there); 3 on bad usage.
"""
import os
import re
import subprocess
import sys

CHUNK = 16 << 20


def key_numbers(path):
    """n, d, p, q, dP, dQ, qInv of an RSA key file, as openssl prints them."""
    text = subprocess.run(
        ["openssl", "rsa", "-in", path, "-noout", "-text"],
        check=True, capture_output=True, text=True,
    ).stdout
    names = {
        "modulus": "n", "privateExponent": "d", "prime1": "p", "prime2": "q",
        "exponent1": "dP", "exponent2": "dQ", "coefficient": "qInv",
    }
    values, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^(\w+):", line)
        if m:
            current = names.get(m.group(1))
            if current:
                values[current] = ""
            continue
        if current and line.startswith(" "):
            values[current] += line.strip().replace(":", "")
    out = {}
    for name, hexdigits in values.items():
        raw = bytes.fromhex(hexdigits).lstrip(b"\0")
        out[name] = raw
    missing = set(names.values()) - set(out)
    if missing:
        sys.exit(f"memscan: {path}: no {', '.join(sorted(missing))} in openssl's output")
    return out


def patterns(numbers):
    """(name, byte order, bytes) for every value in both byte orders."""
    for name, raw in numbers.items():
        yield name, "BE", raw
        yield name, "LE", raw[::-1]


def readable_mappings(pid):
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5] if len(fields) > 5 else ""
            if fields[1][0] == "r" and path != "[vvar]" and path != "[vsyscall]":
                yield start, end, path


def scan(pid, pats):
    """The set of (name, order) found in the process's memory, and bytes read."""
    found = set()
    longest = max(len(p) for _, _, p in pats)
    read = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, _ in readable_mappings(pid):
            pos, tail = start, b""
            while pos < end:
                size = min(CHUNK, end - pos)
                try:
                    mem.seek(pos)
                    data = mem.read(size)
                except OSError:
                    break  # e.g. a mapping that went away, or device memory
                if not data:
                    break
                read += len(data)
                window = tail + data
                for name, order, pat in pats:
                    if (name, order) not in found and window.find(pat) >= 0:
                        found.add((name, order))
                tail = window[-(longest - 1):]
                pos += len(data)
    return found, read


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 3
    numbers = key_numbers(sys.argv[1])
    pats = list(patterns(numbers))
    leaked = missing_n = False
    for pid in sys.argv[2:]:
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/status") as f:
                uid = next(l.split()[1] for l in f if l.startswith("Uid:"))
            found, read = scan(pid, pats)
        except (FileNotFoundError, ProcessLookupError) as e:
            print(f"memscan: pid {pid}: gone ({e})")
            missing_n = True
            continue
        secrets = sorted(f"{n}({o})" for n, o in found if n != "n")
        has_n = sorted(o for n, o in found if n == "n")
        print(
            f"pid {pid} {comm} uid {uid}: {read >> 20} MiB read; "
            f"modulus {'found (' + ','.join(has_n) + ')' if has_n else 'NOT FOUND'}; "
            f"secrets {'FOUND: ' + ' '.join(secrets) if secrets else 'none'}"
        )
        leaked |= bool(secrets)
        missing_n |= not has_n
    return 1 if leaked else 2 if missing_n else 0


if __name__ == "__main__":
    sys.exit(main())
