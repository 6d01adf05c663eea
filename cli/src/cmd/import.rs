//! `keyring-pkcs11 import`: a key file into a token, with its certificate.

use crate::app::*;
use crate::args::*;
use crate::fail::{Fail, Res};
use crate::keyfile::{self, ImportError};
use crate::secrets::{passphrases, read_input};
use cryptoki_sys::*;
use std::io::Write;
use std::path::Path;

pub fn run(a: ImportArgs) -> Res<()> {
    let token = a.token.token.as_deref().unwrap_or("user");
    if a.file.as_os_str() == "-" && a.passphrase_file.as_deref() == Some(Path::new("-")) {
        return Err(Fail::input(
            "the key and its passphrase cannot both come from standard input",
        ));
    }
    let shown = a.file.display().to_string();
    let data = read_input(&a.file, "key file")?;
    let cert = match &a.cert {
        Some(p) => {
            let raw = read_input(p, "certificate")?;
            Some(
                keyfile::certificate(&raw)
                    .map_err(|e| Fail::input(format!("certificate {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let app = App::new(&[token]);
    let slot = app.writable_slot(token)?;
    let mut source = passphrases(a.passphrase_file.as_deref(), &shown);
    let key = keyfile::decode(&data, &mut source).map_err(|e| {
        let f = Fail::input(format!("{shown}: {e}"));
        match e {
            ImportError::WrongPassphrase => f.hint(if a.passphrase_file.is_some() {
                "the passphrase file's first line is the passphrase (without the newline)"
            } else {
                "the key was not imported"
            }),
            ImportError::NotRsa(_) => f.hint(
                "make an RSA key instead: keyring-pkcs11 generate, or ssh-keygen -t rsa -b 3072",
            ),
            _ => f,
        }
    })?;
    drop(data);
    if let Some(c) = &cert {
        match &c.rsa_public {
            Some((n, e)) if *n == key.modulus && *e == key.exponent => {}
            _ => {
                return Err(Fail::input(
                    "the certificate is not for this key (its public key differs)",
                ));
            }
        }
    }
    let label = a.label.clone().or(key.comment.clone()).or_else(|| {
        (a.file.as_os_str() != "-")
            .then(|| a.file.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten()
    });
    if let Some(l) = &label {
        if l.is_empty() {
            return Err(Fail::input("the label may not be empty"));
        }
        app.check_label_free(slot, l)?;
    }
    if let Some(k) = app
        .keys(slot)?
        .into_iter()
        .find(|k| k.modulus == key.modulus)
    {
        return Err(Fail::input(format!(
            "this key is already in token \"{}\", labelled \"{}\"",
            app.token(slot).label,
            k.label
        ))
        .hint(app.key_uri(&k)));
    }
    let h = app.session(slot)?;
    let mut template: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
        (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
        (CKA_KEY_TYPE, ulong(CKK_RSA)),
        (CKA_TOKEN, vec![CK_TRUE]),
    ];
    if let Some(l) = &label {
        template.push((CKA_LABEL, l.as_bytes().to_vec()));
    }
    if let Some(HexId(id)) = &a.id {
        template.push((CKA_ID, id.clone()));
    }
    let mut refs: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
        template.iter().map(|(t, v)| (*t, v.as_slice())).collect();
    refs.push((CKA_VALUE, &key.pkcs8));
    let handle = app
        .module
        .create_object(h, &refs)
        .map_err(|e| app.write_fail(slot, "adding the key", e))?;
    drop(refs);
    let created = app
        .key(slot, handle)
        .map_err(|e| app.write_fail(slot, "reading the new key", e))?;
    if let Some(c) = &cert {
        let owned: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
            (CKA_TOKEN, vec![CK_TRUE]),
            (CKA_LABEL, created.label.as_bytes().to_vec()),
            (CKA_ID, created.id.clone()),
            (CKA_SUBJECT, c.subject.clone()),
            (CKA_ISSUER, c.issuer.clone()),
            (CKA_SERIAL_NUMBER, c.serial.clone()),
            (CKA_VALUE, c.der.clone()),
        ];
        let tmpl: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
            owned.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        if let Err(e) = app.module.create_object(h, &tmpl) {
            // All or nothing: take the key out again.
            let undo = app.module.destroy_object(h, handle);
            let kept = if undo.is_ok() {
                "nothing was imported"
            } else {
                "the key itself WAS imported; remove it with keyring-pkcs11 remove"
            };
            return Err(if e.rv == CKR_ATTRIBUTE_VALUE_INVALID {
                Fail::input(format!(
                    "certificates are not supported yet by this module, or not this one (C_CreateObject answered CKR_ATTRIBUTE_VALUE_INVALID for it); {kept}"
                ))
                .hint("import the key without --cert")
            } else {
                let mut f = app.write_fail(slot, "adding the certificate", e);
                f.msg.push_str(&format!("; {kept}"));
                f
            });
        }
    }
    let serials = app.serials(slot);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "imported {} ({} key) into token \"{}\"{}:",
        shown,
        key.format,
        app.token(slot).label,
        if cert.is_some() {
            ", with its certificate"
        } else {
            ""
        }
    );
    let certs = app.certs(slot).unwrap_or_default();
    app.print_key(
        &mut out,
        &created,
        serials.get(&created.label).copied(),
        &certs,
    );
    if let Some(m) = module_path() {
        let _ = writeln!(out, "use it:     ssh -I {} USER@HOST", m.display());
    }
    Ok(())
}
