//! `keyring-pkcs11 remove`: a key (and its certificates) out of its token.

use crate::app::*;
use crate::args::*;
use crate::fail::Res;
use std::io::Write;

pub fn run(a: RemoveArgs) -> Res<()> {
    let (app, key) = App::with_key(&a.key, a.token.token.as_deref())?;
    let uri = app.key_uri(&key);
    let h = app.session(key.slot)?;
    // Its certificates (same CKA_ID) go with it: without the key they are
    // of no use in this token.
    let certs: Vec<Cert> = app
        .certs(key.slot)?
        .into_iter()
        .filter(|c| c.id == key.id)
        .collect();
    app.module
        .destroy_object(h, key.handle)
        .map_err(|e| app.write_fail(key.slot, "removing the key", e))?;
    out!(
        "removed \"{}\" from token \"{}\"\n  was: {uri}",
        key.label,
        app.token(key.slot).label
    );
    for c in certs {
        app.module
            .destroy_object(h, c.handle)
            .map_err(|e| app.write_fail(key.slot, "removing the key's certificate", e))?;
        out!("  and its certificate: {}", c.subject_text());
    }
    Ok(())
}
