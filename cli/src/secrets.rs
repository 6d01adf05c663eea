//! Reading what may be secret — key files, passphrases — into buffers that
//! are wiped when dropped.

use crate::fail::{Fail, Res};
use crate::keyfile::{self, ImportError, Imported};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

/// Reads a file (or standard input for `-`) that may hold a secret, into a
/// buffer that is wiped when dropped. It grows by copying into a new wiped
/// buffer, never by reallocating, so no copy of the secret is left behind.
pub fn read_input(path: &Path, what: &str) -> Res<Zeroizing<Vec<u8>>> {
    fn read_all(mut r: impl Read, hint: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
        let mut data = Zeroizing::new(Vec::with_capacity(hint.max(4096) + 1));
        loop {
            if data.len() == data.capacity() {
                let mut bigger = Zeroizing::new(Vec::with_capacity(data.capacity() * 2));
                bigger.extend_from_slice(&data);
                data = bigger;
            }
            let len = data.len();
            let spare = data.capacity() - len;
            data.resize(len + spare, 0);
            match r.read(&mut data[len..]) {
                Ok(0) => {
                    data.truncate(len);
                    return Ok(data);
                }
                Ok(n) => data.truncate(len + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => data.truncate(len),
                Err(e) => return Err(e),
            }
        }
    }
    let r = if path.as_os_str() == "-" {
        read_all(std::io::stdin().lock(), 0)
    } else {
        std::fs::File::open(path).and_then(|f| {
            let hint = f.metadata().map_or(0, |m| m.len() as usize);
            read_all(f, hint)
        })
    };
    r.map_err(|e| Fail::input(format!("cannot read {what} {}: {e}", path.display())))
}

/// Where passphrases come from: a file (read once), or the terminal (up to
/// three tries).
pub fn passphrases<'a>(
    file: Option<&'a Path>,
    key_name: &'a str,
) -> impl FnMut(u32) -> Result<Zeroizing<String>, ImportError> + 'a {
    move |attempt| match file {
        Some(path) => {
            if attempt > 1 {
                return Err(ImportError::WrongPassphrase);
            }
            let raw = read_input(path, "passphrase file")
                .map_err(|f| ImportError::NoPassphrase(f.msg))?;
            let line = raw.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            std::str::from_utf8(line)
                .map(|s| Zeroizing::new(s.to_string()))
                .map_err(|_| ImportError::NoPassphrase("the passphrase file is not UTF-8".into()))
        }
        None => {
            if attempt > 3 {
                return Err(ImportError::WrongPassphrase);
            }
            if attempt > 1 {
                eprintln!("Wrong passphrase, try again.");
            }
            rpassword::prompt_password(format!("Enter the passphrase for {key_name}: "))
                .map(Zeroizing::new)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::Interrupted => {
                        ImportError::NoPassphrase("no passphrase given; nothing was imported".into())
                    }
                    _ => ImportError::NoPassphrase(
                        "the key is encrypted, and there is no terminal to ask for its passphrase on; give it with --passphrase-file FILE (- reads standard input)".into(),
                    ),
                })
        }
    }
}

/// Reads and decodes a private key file of any form `keyfile` knows, asking
/// for its passphrase (from `passphrase_file`, or the terminal) if it is
/// encrypted. Every failure is the input's: exit status 1, with what to do.
pub fn read_key_file(path: &Path, passphrase_file: Option<&Path>) -> Res<Imported> {
    let shown = path.display().to_string();
    let data = read_input(path, "key file")?;
    let mut source = passphrases(passphrase_file, &shown);
    let decoded = keyfile::decode(&data, &mut source);
    scrub_stack();
    decoded.map_err(|e| {
        let f = Fail::input(format!("{shown}: {e}"));
        match e {
            ImportError::WrongPassphrase => f.hint(if passphrase_file.is_some() {
                "the passphrase file's first line is the passphrase (without the newline)"
            } else {
                "the key was not imported"
            }),
            ImportError::NotRsa(_) => f.hint(
                "make an RSA key instead: keyring-pkcs11 generate, or ssh-keygen -t rsa -b 3072",
            ),
            _ => f,
        }
    })
}

/// Overwrites the stack below the caller's frame. The allocator wipes what
/// is freed on the heap, but the frames of the calls that decoded and
/// decrypted a key stay as they were until something deeper reuses them: the
/// memory scrape (tests/lab/cli-memory.sh) found 96 bytes of an OpenSSH
/// key's primes there, left by its decryption, after the import had
/// finished. Called when those calls have returned, so this frame covers
/// theirs.
#[inline(never)]
pub fn scrub_stack() {
    use zeroize::Zeroize;
    let mut frame = [0xffu8; 256 * 1024];
    frame.zeroize();
    std::hint::black_box(&frame);
}

/// Reads a certificate file (PEM or DER) and checks that it certifies `key`.
pub fn read_cert_for(path: &Path, key: &Imported) -> Res<keyfile::Certificate> {
    let raw = read_input(path, "certificate")?;
    let cert = keyfile::certificate(&raw)
        .map_err(|e| Fail::input(format!("certificate {}: {e}", path.display())))?;
    match &cert.rsa_public {
        Some((n, e)) if *n == key.modulus && *e == key.exponent => Ok(cert),
        _ => Err(Fail::input(format!(
            "the certificate {} is not for this key (its public key differs)",
            path.display()
        ))),
    }
}
