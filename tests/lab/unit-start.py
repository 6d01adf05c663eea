#!/usr/bin/env python3
"""Starts a systemd service the way systemd would, where systemd is not PID 1.

Usage: unit-start.py UNIT-FILE [DROP-IN...] [--reload]

The lab guests have no systemd as PID 1, so this does for one service what
systemd's service manager does, from the unit file and its drop-ins as
committed (later files override earlier ones; an empty `ExecStart=` etc.
resets the list, as in systemd):

- LoadCredentialEncrypted=NAME:PATH: `systemd-creds decrypt --name=NAME`
  into /run/credentials/UNIT/NAME, and LoadCredential=NAME:PATH copied there
  (directory 0500, files 0400, owned by root), $CREDENTIALS_DIRECTORY set;
- the environment: systemd's fixed PATH, LANG, INVOCATION_ID,
  CREDENTIALS_DIRECTORY and Environment= (nothing of this process's);
- every ExecStartPre=, ExecStart=, ExecStartPost= (and with --reload,
  ExecReload=) command: specifiers %d %n %%, $MAINPID, a leading `-`
  (failure ignored), a program name without `/` looked up in that PATH,
  started with stdin /dev/null, in a new session (setsid), in the unit's
  cgroup (/sys/fs/cgroup/kp11-UNIT, made here), and in a fresh anonymous
  session keyring (KEYCTL_JOIN_SESSION_KEYRING, as KeyringMode=private does
  for each command; systemd's invocation_id key is not added to it);
- Type=forking: ExecStart= must exit 0, the main PID is read from PIDFile=
  or, without one, guessed as systemd does (the cgroup's one process whose
  parent is outside it);
  Type=simple or exec: the ExecStart= process is the main PID.

Not done: every other setting (printed, so that the gap is visible), the
stop and kill logic (the caller kills the cgroup with cgroup.kill, as
KillMode= ends with), sandboxing, the journal (output goes to
/run/kp11-units/UNIT.log). Prints `MAINPID=N` and `CGROUP=DIR` on success.
"""
import os
import shlex
import subprocess
import sys
import time
import uuid

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LISTS = {"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop",
         "Environment", "LoadCredential", "LoadCredentialEncrypted"}
DONE = LISTS - {"ExecStop"} | {"Type", "PIDFile"}


def parse(files):
    """The [Service] settings of the unit file and its drop-ins, in order."""
    conf = {}
    for path in files:
        section = None
        with open(path) as f:
            lines = f.read().replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section != "Service":
                continue
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if key in LISTS:
                if value == "":
                    conf[key] = []
                else:
                    conf.setdefault(key, []).append(value)
            else:
                conf[key] = value
    return conf


def specifiers(word, unit, creds, mainpid):
    out, i = "", 0
    while i < len(word):
        c = word[i]
        if c == "%" and i + 1 < len(word):
            n = word[i + 1]
            out += {"d": creds, "n": unit, "%": "%"}.get(n) or sys.exit(
                f"unit-start: specifier %{n} is not emulated")
            i += 2
            continue
        out += c
        i += 1
    return out.replace("$MAINPID", str(mainpid or "")).replace("${MAINPID}", str(mainpid or ""))


def command(line, unit, creds, mainpid):
    ignore = line.startswith("-")
    line = line.lstrip("-")
    if line[:1] in "@+!:|":
        sys.exit(f"unit-start: prefix {line[0]} is not emulated: {line}")
    argv = [specifiers(w, unit, creds, mainpid) for w in shlex.split(line)]
    if "/" not in argv[0]:
        for d in PATH.split(":"):
            if os.access(os.path.join(d, argv[0]), os.X_OK):
                argv[0] = os.path.join(d, argv[0])
                break
        else:
            sys.exit(f"unit-start: {argv[0]} not found in {PATH}")
    return ignore, argv


def guess_main_pid(cgroup):
    """What systemd's GuessMainPID= does for Type=forking without PIDFile=:
    the one process of the cgroup whose parent is not in it."""
    with open(os.path.join(cgroup, "cgroup.procs")) as f:
        procs = {int(p) for p in f.read().split()}
    roots = []
    for p in procs:
        with open(f"/proc/{p}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        if ppid not in procs:
            roots.append(p)
    if len(roots) != 1:
        raise ValueError(f"cannot guess the main PID among {sorted(procs)}")
    return roots[0]


def main():
    args = [a for a in sys.argv[1:] if a != "--reload"]
    reload = "--reload" in sys.argv
    if not args:
        sys.exit(__doc__)
    unit = os.path.basename(args[0])
    conf = parse(args)
    kind = conf.get("Type", "simple")
    if kind not in ("simple", "exec", "forking"):
        sys.exit(f"unit-start: Type={kind} is not emulated")
    ignored = sorted(k for k in conf if k not in DONE)
    print(f"unit-start: {unit}: Type={kind}; not emulated: {', '.join(ignored) or 'nothing'}",
          file=sys.stderr)

    cgroup = f"/sys/fs/cgroup/kp11-{unit}"
    creds = f"/run/credentials/{unit}"
    state = f"/run/kp11-units/{unit}"
    os.makedirs("/run/kp11-units", exist_ok=True)
    log = open(f"/run/kp11-units/{unit}.log", "a")
    mainpid = None
    if reload:
        with open(state) as f:
            mainpid = int(f.read())
    else:
        if not os.path.ismount("/sys/fs/cgroup"):
            subprocess.run(["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"], check=True)
        os.makedirs(cgroup, exist_ok=True)
        os.makedirs(creds, mode=0o700, exist_ok=True)
        for spec in conf.get("LoadCredentialEncrypted", []):
            name, _, path = spec.partition(":")
            subprocess.run(["systemd-creds", "decrypt", f"--name={name}", path,
                            os.path.join(creds, name)], check=True)
        for spec in conf.get("LoadCredential", []):
            name, _, path = spec.partition(":")
            with open(path, "rb") as src, open(os.path.join(creds, name), "wb") as dst:
                dst.write(src.read())
        for name in os.listdir(creds):
            os.chmod(os.path.join(creds, name), 0o400)
        os.chmod(creds, 0o500)

    env = {"PATH": PATH, "LANG": "C.UTF-8", "INVOCATION_ID": uuid.uuid4().hex}
    if conf.get("LoadCredential") or conf.get("LoadCredentialEncrypted"):
        env["CREDENTIALS_DIRECTORY"] = creds
    for assignment in conf.get("Environment", []):
        for word in shlex.split(assignment):
            k, _, v = word.partition("=")
            env[k] = v

    def run(line, wait=True):
        ignore, argv = command(line, unit, creds, mainpid)
        print(f"unit-start: {unit}: {shlex.join(argv)}", file=sys.stderr)

        def child():
            os.setsid()
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        # `keyctl session -` joins a fresh anonymous session keyring, then
        # execs the command: what KeyringMode=private gives each command.
        p = subprocess.Popen(["keyctl", "session", "-", *argv], env=env, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, preexec_fn=child, close_fds=True)
        if not wait:
            return p
        rc = p.wait(timeout=300)
        if rc != 0 and not ignore:
            log.flush()
            sys.exit(f"unit-start: {unit}: {argv[0]} exited {rc} (see /run/kp11-units/{unit}.log)")
        return p

    if reload:
        for line in conf.get("ExecReload", []):
            run(line)
        print(f"MAINPID={mainpid}")
        return
    for line in conf.get("ExecStartPre", []):
        run(line)
    starts = conf.get("ExecStart", [])
    if len(starts) != 1:
        sys.exit(f"unit-start: {unit}: {len(starts)} ExecStart= lines")
    if kind == "forking":
        run(starts[0])
        pidfile = conf.get("PIDFile")
        for _ in range(300):
            try:
                if pidfile:
                    with open(pidfile) as f:
                        mainpid = int(f.read().split()[0])
                else:
                    mainpid = guess_main_pid(cgroup)
                os.kill(mainpid, 0)
                break
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        else:
            sys.exit(f"unit-start: {unit}: no live main PID ({pidfile or 'guessed from the cgroup'})")
    else:
        mainpid = run(starts[0], wait=False).pid
    with open(state, "w") as f:
        f.write(str(mainpid))
    for line in conf.get("ExecStartPost", []):
        run(line)
    print(f"MAINPID={mainpid}")
    print(f"CGROUP={cgroup}")


if __name__ == "__main__":
    main()
