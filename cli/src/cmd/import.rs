//! `keyring-pkcs11 import`: a key file into a token, with its certificate.

use crate::app::*;
use crate::args::*;
use crate::fail::{Fail, Res};
use crate::secrets::{read_cert_for, read_key_file};
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
    let app = App::new(&[token]);
    let slot = app.writable_slot(token)?;
    let key = read_key_file(&a.file, a.passphrase_file.as_deref())?;
    let cert = match &a.cert {
        Some(p) => Some(read_cert_for(p, &key)?),
        None => None,
    };
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
    let id = a.id.as_ref().map(|HexId(id)| id.as_slice());
    let created = app.add_key(slot, label.as_deref(), id, &key, cert.as_ref());
    // The module's frames held the key on its way to the kernel.
    crate::secrets::scrub_stack();
    let created = created?;
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
