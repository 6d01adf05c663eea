//! `keyring-pkcs11 exec`: starts a program (a server) whose private keys exist
//! only in the kernel, for the program's lifetime.
//!
//! The tool joins a new anonymous session keyring, loads each key into it
//! (through the module, as `C_CreateObject` would), makes every key and
//! record in it usable by possessors only, wipes every buffer that held key
//! material, and `execve`s the program in its own place (same PID, so it is a
//! systemd `ExecStart=` like any other). The session keyring is inherited by
//! the program and everything it starts — across `fork`, `execve` and
//! `setuid` — and by nothing else; when the last process of that tree exits,
//! however it dies, the keyring and the keys only it links are destroyed.
//!
//! Everything that can be checked is checked before the kernel is touched
//! (files, formats, passphrases, labels, certificates, the program itself);
//! if the kernel then refuses a key, the new keyring is emptied before the
//! tool exits: a server never starts with some of its keys, and no key is
//! left behind (were the tool killed half-way, the keyring would go with it:
//! this process is its only holder until the `execve`).
//!
//! The permissions left on the keys are use-only (view, read, search), for
//! possessors only: a compromised worker can sign, but cannot link a key
//! into a keyring that outlives the tree, revoke it, or widen its
//! permissions again.
//!
//! What the program inherits is what this tool was given: environment,
//! file descriptors (none of ours: every file the tool opens is
//! close-on-exec, so systemd's socket activation fds pass through
//! untouched), working directory, limits, ignored signals; except that the
//! signal mask is emptied and SIGPIPE is back at its default action, as the
//! Rust runtime (which ignores SIGPIPE for itself) does for every program it
//! starts. systemd's `IgnoreSIGPIPE=yes` therefore does not reach the
//! program; servers that need SIGPIPE ignored ignore it themselves (nginx,
//! Apache httpd, OpenSSH do).

use crate::app::App;
use crate::args::{ExecArgs, Labelled};
use crate::fail::{Fail, Res};
use crate::keyfile::{Certificate, Imported};
use crate::secrets::{read_cert_for, read_key_file};
use keyring_pkcs11::error::Error;
use keyring_pkcs11::kernel::hints::KernelOp;
use keyring_pkcs11::kernel::keyctl::{self, Serial};
use keyring_pkcs11::kernel::store::TokenKind;
use keyring_pkcs11::log::{self, Level};
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// One key to load, with its certificate.
struct Load {
    label: String,
    key: Imported,
    cert: Option<Certificate>,
}

pub fn run(a: ExecArgs) -> Res<()> {
    let (program, args) = a
        .command
        .split_first()
        .ok_or_else(|| Fail::input("give the command to run after --"))?;
    let program_path = find_program(program)?;
    let specs = key_specs(&a)?;
    let stdin_users = specs.iter().filter(|(_, p)| p.as_os_str() == "-").count()
        + usize::from(a.passphrase_file.as_deref() == Some(Path::new("-")));
    if stdin_users > 1 {
        return Err(Fail::input(
            "only one key or passphrase can come from standard input",
        ));
    }
    let mut certs: Vec<(String, PathBuf)> = cert_specs(&a)?;
    let mut loads = Vec::with_capacity(specs.len());
    for (label, path) in &specs {
        let key = read_key_file(path, a.passphrase_file.as_deref())?;
        let cert = match certs.iter().position(|(l, _)| l == label) {
            Some(i) => Some(read_cert_for(&certs.remove(i).1, &key)?),
            None => None,
        };
        loads.push(Load {
            label: label.clone(),
            key,
            cert,
        });
    }
    // Two labels for one key would be two objects with one CKA_ID, which
    // clients that pair keys and certificates by CKA_ID cannot tell apart.
    for (i, l) in loads.iter().enumerate() {
        if let Some(first) = loads[..i].iter().find(|f| f.key.modulus == l.key.modulus) {
            return Err(Fail::input(format!(
                "\"{}\" and \"{}\" are the same key",
                first.label, l.label
            )));
        }
    }
    if let Some((label, _)) = certs.first() {
        return Err(Fail::input(format!(
            "--cert {label}=…: there is no --key {label}=… for it"
        )));
    }

    // From here on the kernel is involved: a failure empties the keyring.
    let ring = keyctl::join_new_session_keyring().map_err(|e| {
        let e = Error::kernel(KernelOp::AddRecord, e, "joining a new session keyring");
        Fail::from_error("starting a session keyring", "session", &e)
    })?;
    let loaded = load(&loads, ring);
    // Nothing secret stays in this process past this point (the buffers are
    // wiped as they are dropped), and nothing of ours goes into the program.
    drop(loads);
    let loaded = match loaded {
        Ok(l) => l,
        Err(f) => {
            let _ = keyctl::clear(ring);
            return Err(f);
        }
    };
    if log::enabled(Level::Info) {
        for (label, bits, serial) in &loaded {
            eprintln!(
                "keyring-pkcs11: key \"{label}\": RSA {bits} bits, kernel key {}, in session keyring {ring} (possessors only)",
                serial.map_or("?".to_string(), |s| s.to_string())
            );
        }
        eprintln!("keyring-pkcs11: running {}", program_path.display());
    }
    let err = std::process::Command::new(&program_path)
        .arg0(program)
        .args(args)
        .exec();
    // The keyring is use-only now, so it cannot be emptied; it needs not
    // be: this process is its only holder, and it ends here.
    let why = match err.raw_os_error() {
        // The file was there a moment ago: what is missing is its loader.
        Some(libc::ENOENT) if program_path.exists() => {
            "its ELF interpreter (dynamic loader) or script interpreter does not exist".to_string()
        }
        _ => err.to_string(),
    };
    Err(Fail::input(format!(
        "cannot run {}: {why}",
        program_path.display()
    )))
}

/// Loads every key into the session keyring `ring` and restricts them.
/// Returns each key's label, size and kernel serial.
fn load(loads: &[Load], ring: Serial) -> Res<Vec<(String, usize, Option<Serial>)>> {
    let app = App::for_tokens(vec![TokenKind::Session]);
    let slot = app.slot("session")?;
    let mut loaded = Vec::with_capacity(loads.len());
    for l in loads {
        let key = app.add_key(slot, Some(&l.label), None, &l.key, l.cert.as_ref())?;
        loaded.push((key.label.clone(), key.bits(), None));
    }
    let serials = app.serials(slot);
    for (label, _, serial) in &mut loaded {
        *serial = serials.get(label.as_str()).copied();
    }
    drop(app);
    restrict(ring)?;
    Ok(loaded)
}

/// Makes everything linked in the keyring, and then the keyring itself,
/// use-only and for possessors only: another process of the same user that
/// does not descend from this one can neither use nor see the keys, and no
/// process of the tree can make them outlive it.
fn restrict(ring: Serial) -> Res<()> {
    let fail = |e| {
        let e = Error::kernel(KernelOp::AddRecord, e, "restricting permissions");
        Fail::from_error("restricting the keys to this process tree", "session", &e)
    };
    for key in keyctl::keyring_links(ring).map_err(fail)? {
        keyctl::setperm(key, keyctl::PERM_POSSESSOR_USE).map_err(fail)?;
    }
    keyctl::setperm(ring, keyctl::PERM_POSSESSOR_USE).map_err(fail)
}

/// The `--key` arguments and, with `--credentials`, every `*.key` of the
/// systemd credentials directory, labelled by file stem; labels unique.
fn key_specs(a: &ExecArgs) -> Res<Vec<(String, PathBuf)>> {
    let mut specs: Vec<(String, PathBuf)> = a
        .keys
        .iter()
        .map(|Labelled(l, p)| (l.clone(), p.clone()))
        .collect();
    if a.credentials {
        let found = credentials("key")?;
        if found.is_empty() {
            return Err(Fail::input(format!(
                "--credentials: no *.key file in $CREDENTIALS_DIRECTORY ({})",
                credentials_dir()?.display()
            ))
            .hint("name the credential LABEL.key, e.g. LoadCredentialEncrypted=web.key:/etc/credstore.encrypted/web.key"));
        }
        specs.extend(found);
    }
    if specs.is_empty() {
        return Err(Fail::input(
            "no key to load: give --key LABEL=FILE or --credentials",
        ));
    }
    let mut seen = HashSet::new();
    for (label, _) in &specs {
        if !seen.insert(label.as_str()) {
            return Err(Fail::input(format!("two keys are labelled \"{label}\"")));
        }
    }
    Ok(specs)
}

/// The `--cert` arguments and, with `--credentials`, `LABEL.crt` of every
/// `LABEL.key` loaded from the credentials directory. Other `*.crt` files
/// there are not ours (a CA bundle for client certificates, say) and are
/// left alone.
fn cert_specs(a: &ExecArgs) -> Res<Vec<(String, PathBuf)>> {
    let mut specs: Vec<(String, PathBuf)> = a
        .certs
        .iter()
        .map(|Labelled(l, p)| (l.clone(), p.clone()))
        .collect();
    if a.credentials {
        let keys = credentials("key")?;
        for (label, path) in credentials("crt")? {
            let has_key = keys.iter().any(|(l, _)| *l == label);
            if has_key && !specs.iter().any(|(l, _)| *l == label) {
                specs.push((label, path));
            }
        }
    }
    Ok(specs)
}

fn credentials_dir() -> Res<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Fail::input("--credentials: $CREDENTIALS_DIRECTORY is not set").hint(
                "systemd sets it for a service with LoadCredential= or LoadCredentialEncrypted=",
            )
        })
}

/// `$CREDENTIALS_DIRECTORY/*.EXT` as (stem, path), sorted.
fn credentials(ext: &str) -> Res<Vec<(String, PathBuf)>> {
    let dir = credentials_dir()?;
    let unreadable = |e: std::io::Error| {
        Fail::input(format!("--credentials: cannot read {}: {e}", dir.display()))
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_some_and(|x| x == ext) {
            let stem = path.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
                Fail::input(format!(
                    "--credentials: {}: a label must be UTF-8",
                    path.display()
                ))
            })?;
            found.push((stem.to_string(), path.clone()));
        }
    }
    found.sort();
    Ok(found)
}

/// The program as `execvp` would find it, checked before any key is loaded.
fn find_program(program: &OsString) -> Res<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let given = Path::new(program);
    if given.as_os_str().as_encoded_bytes().contains(&b'/') {
        return if executable(given) {
            Ok(given.to_path_buf())
        } else {
            Err(Fail::input(format!(
                "command not found or not executable: {}",
                given.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(given))
        .find(|p| executable(p))
        .ok_or_else(|| Fail::input(format!("command not found: {}", given.display())))
}
