//! `keyring-pkcs11 list`: the keys of a token, as PKCS#11 clients name them.

use crate::app::*;
use crate::args::*;
use crate::fail::Res;
use keyring_pkcs11::hex;
use keyring_pkcs11::kernel::keyctl::Serial;
use std::collections::HashMap;
use std::io::Write;

pub fn run(a: ListArgs) -> Res<()> {
    let token = a.token.token.as_deref();
    let app = App::new(&token.into_iter().collect::<Vec<_>>());
    let slots = if a.all {
        app.module.slot_list(true)
    } else {
        vec![app.slot(token.unwrap_or("user"))?]
    };
    let mut out = std::io::stdout().lock();
    let mut total = 0;
    for slot in slots {
        let keys = match app.keys(slot) {
            Ok(k) => k,
            Err(f) if a.all => {
                eprintln!("keyring-pkcs11: {}", f.msg);
                continue;
            }
            Err(f) => return Err(f),
        };
        let certs = app.certs(slot).unwrap_or_default();
        let view = app.kernel_view(slot);
        let serials: HashMap<&str, Serial> = view
            .as_ref()
            .map(|(_, keys)| {
                keys.iter()
                    .filter(|(_, d)| d.key_type == "asymmetric")
                    .map(|(s, d)| (d.description.as_str(), *s))
                    .collect()
            })
            .unwrap_or_default();
        for k in &keys {
            if total > 0 {
                let _ = writeln!(out);
            }
            app.print_key(&mut out, k, serials.get(k.label.as_str()).copied(), &certs);
            total += 1;
        }
        for c in certs.iter().filter(|c| !keys.iter().any(|k| k.id == c.id)) {
            if total > 0 {
                let _ = writeln!(out);
            }
            let _ = writeln!(out, "{} (a certificate without its key)", c.label);
            let _ = writeln!(out, "  cert:     {}", c.subject_text());
            let _ = writeln!(out, "  id:       {}", hex(&c.id));
            let _ = writeln!(
                out,
                "  keyring:  token \"{}\": {}",
                app.token(slot).label,
                keyring_kind(&app.token(slot).kind)
            );
            total += 1;
        }
        // Asymmetric keys the module does not offer: say so, not silently.
        let unusable: Vec<String> = serials
            .iter()
            .filter(|(d, _)| !keys.iter().any(|k| k.label == **d))
            .map(|(d, s)| format!("\"{d}\" ({s})"))
            .collect();
        if !unusable.is_empty() {
            eprintln!(
                "note: token \"{}\" also holds asymmetric key(s) that are not usable RSA private keys (certificates, public keys, other algorithms, or keys you may not use): {}",
                app.token(slot).label,
                unusable.join(", ")
            );
        }
    }
    if total == 0 {
        eprintln!(
            "no keys{}; add one with keyring-pkcs11 import FILE or keyring-pkcs11 generate",
            if a.all {
                " in any token".to_string()
            } else {
                format!(" in token \"{}\"", token.unwrap_or("user"))
            }
        );
    }
    Ok(())
}
