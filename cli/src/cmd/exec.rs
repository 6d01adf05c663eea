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
//! left behind.

use crate::app::App;
use crate::args::{ExecArgs, Labelled};
use crate::fail::{Fail, Res};
use crate::keyfile::{Certificate, Imported};
use crate::secrets::{read_cert_for, read_key_file};
use keyring_pkcs11::error::Error;
use keyring_pkcs11::kernel::hints::KernelOp;
use keyring_pkcs11::kernel::keyctl::{self, Serial};
use keyring_pkcs11::kernel::store::TokenKind;
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
    if let Err(f) = loaded {
        let _ = keyctl::clear(ring);
        return Err(f);
    }
    let err = std::process::Command::new(&program_path)
        .arg0(program)
        .args(args)
        .exec();
    let _ = keyctl::clear(ring);
    Err(Fail::input(format!(
        "cannot run {}: {err}",
        program_path.display()
    )))
}

/// Loads every key into the session keyring `ring` and restricts them.
fn load(loads: &[Load], ring: Serial) -> Res<()> {
    let app = App::for_tokens(vec![TokenKind::Session]);
    let slot = app.slot("session")?;
    for l in loads {
        app.add_key(slot, Some(&l.label), None, &l.key, l.cert.as_ref())?;
    }
    drop(app);
    restrict(ring)
}

/// Makes the keyring and everything linked in it usable by possessors only:
/// another process of the same user that does not descend from this one can
/// neither use nor see the keys.
fn restrict(ring: Serial) -> Res<()> {
    let fail = |e| {
        let e = Error::kernel(KernelOp::AddRecord, e, "restricting permissions");
        Fail::from_error("restricting the keys to this process tree", "session", &e)
    };
    for key in keyctl::keyring_links(ring).map_err(fail)? {
        keyctl::setperm(key, keyctl::PERM_POSSESSOR_ONLY).map_err(fail)?;
    }
    keyctl::setperm(ring, keyctl::PERM_POSSESSOR_ONLY).map_err(fail)
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
        specs.extend(credentials("key")?);
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

/// The `--cert` arguments and, with `--credentials`, every `*.crt`.
fn cert_specs(a: &ExecArgs) -> Res<Vec<(String, PathBuf)>> {
    let mut specs: Vec<(String, PathBuf)> = a
        .certs
        .iter()
        .map(|Labelled(l, p)| (l.clone(), p.clone()))
        .collect();
    if a.credentials {
        for (label, path) in credentials("crt")? {
            if !specs.iter().any(|(l, _)| *l == label) {
                specs.push((label, path));
            }
        }
    }
    Ok(specs)
}

/// `$CREDENTIALS_DIRECTORY/*.EXT` as (stem, path), sorted.
fn credentials(ext: &str) -> Res<Vec<(String, PathBuf)>> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        Fail::input("--credentials: $CREDENTIALS_DIRECTORY is not set")
            .hint("systemd sets it for a service with LoadCredential= or LoadCredentialEncrypted=")
    })?;
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        Fail::input(format!(
            "--credentials: cannot read {}: {e}",
            Path::new(&dir).display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == ext) {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                found.push((stem.to_string(), path.clone()));
            }
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
