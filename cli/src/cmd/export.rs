//! `keyring-pkcs11 export-pub`: a key's public key.

use crate::app::*;
use crate::args::*;
use crate::fail::{Fail, Res};
use std::io::Write;

pub fn run(a: ExportArgs) -> Res<()> {
    let (_app, key) = App::with_key(&a.key, a.token.token.as_deref())?;
    match a.format {
        PubFormat::Openssh => out!("{}", openssh_line(&key)?),
        PubFormat::Pem => {
            let pem =
                pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, &key.spki)
                    .map_err(|e| Fail::kernel(format!("cannot encode the public key: {e}")))?;
            let _ = write!(std::io::stdout(), "{pem}");
        }
    }
    Ok(())
}
