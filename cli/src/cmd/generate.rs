//! `keyring-pkcs11 generate`: a new key pair straight into a token.

use crate::app::*;
use crate::args::*;
use crate::fail::{Fail, Res};
use cryptoki_sys::*;
use keyring_pkcs11::MechParams;
use std::io::Write;

pub fn run(a: GenerateArgs) -> Res<()> {
    let token = a.token.token.as_deref().unwrap_or("user");
    let app = App::new(&[token]);
    let slot = app.writable_slot(token)?;
    if let Some(l) = &a.label {
        if l.is_empty() {
            return Err(Fail::input("the label may not be empty"));
        }
        app.check_label_free(slot, l)?;
    }
    let h = app.session(slot)?;
    let bits = ulong(CK_ULONG::from(a.bits));
    let mut public: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![
        (CKA_MODULUS_BITS, &bits),
        (CKA_PUBLIC_EXPONENT, &[1, 0, 1]),
        (CKA_TOKEN, &[CK_TRUE]),
    ];
    let mut private: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
        vec![(CKA_TOKEN, &[CK_TRUE]), (CKA_SENSITIVE, &[CK_TRUE])];
    if let Some(l) = &a.label {
        private.push((CKA_LABEL, l.as_bytes()));
        public.push((CKA_LABEL, l.as_bytes()));
    }
    if let Some(HexId(id)) = &a.id {
        private.push((CKA_ID, id));
        public.push((CKA_ID, id));
    }
    let (_, handle) = app
        .module
        .generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &public,
            &private,
        )
        .map_err(|e| app.write_fail(slot, "generating a key", e))?;
    let key = app
        .key(slot, handle)
        .map_err(|e| app.write_fail(slot, "reading the new key", e))?;
    let serials = app.serials(slot);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "generated an RSA {}-bit key in token \"{}\":",
        a.bits,
        app.token(slot).label
    );
    app.print_key(&mut out, &key, serials.get(&key.label).copied(), &[]);
    let _ = writeln!(
        out,
        "OpenSSH public key, for ~/.ssh/authorized_keys on a server:"
    );
    let _ = writeln!(out, "{}", openssh_line(&key)?);
    Ok(())
}
