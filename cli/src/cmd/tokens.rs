//! `keyring-pkcs11 tokens`: the tokens, or a new named keyring.

use crate::app::*;
use crate::args::*;
use crate::fail::{Fail, Res};
use keyring_pkcs11::config::Config;
use keyring_pkcs11::error::Error;
use keyring_pkcs11::kernel::hints::KernelOp;
use keyring_pkcs11::kernel::keyctl;
use std::io::Write;

fn check_keyring_name(name: &str) -> Res<()> {
    if name.is_empty() {
        return Err(Fail::input("give the new keyring a name"));
    }
    if BUILTIN_TOKENS.contains(&name) {
        return Err(Fail::input(format!(
            "\"{name}\" is the label of a built-in token; choose another name"
        )));
    }
    if name.starts_with('.') {
        return Err(Fail::input(
            "names starting with '.' are reserved by the kernel",
        ));
    }
    if name
        .chars()
        .any(|c| c == ',' || c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err(Fail::input(
            "a keyring name for a token may not contain spaces, commas or '#' (they separate names in the configuration)",
        ));
    }
    if name.len() > 32 {
        return Err(Fail::input(
            "a token label has at most 32 bytes (PKCS#11 CK_TOKEN_INFO.label); choose a shorter name",
        ));
    }
    Ok(())
}

pub fn run(a: TokensArgs) -> Res<()> {
    if let Some(name) = a.create {
        check_keyring_name(&name)?;
        let existing = keyctl::search(keyctl::KEY_SPEC_SESSION_KEYRING, "keyring", &name)
            .or_else(|_| keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "keyring", &name));
        let configured = Config::load().named_keyrings.contains(&name);
        match existing {
            Ok(serial) => out!("keyring \"{name}\" already exists (keyring {serial})"),
            Err(_) => {
                let serial = keyctl::add_key("keyring", &name, &[], keyctl::KEY_SPEC_USER_KEYRING)
                    .map_err(|e| {
                        let e = Error::kernel(KernelOp::AddRecord, e, "creating a keyring");
                        Fail::from_error("creating a keyring", "user", &e)
                    })?;
                out!("created keyring \"{name}\" (keyring {serial}) in your user keyring (@u)");
            }
        }
        if configured {
            out!("it is configured: PKCS#11 clients see it as token \"{name}\"");
        } else {
            out!(
                "to make PKCS#11 clients (ssh -I, p11tool, ...) see it as token \"{name}\", configure it:\n  export KEYRING_PKCS11_KEYRINGS={name}\nor add this line to ~/.config/keyring-pkcs11/keyring-pkcs11.conf:\n  keyring = {name}\nThis tool takes --token {name} in any case."
            );
        }
        return Ok(());
    }
    let app = App::new(&[]);
    let mut rows = vec![[
        "TOKEN".to_string(),
        "PRESENT".into(),
        "KEYS".into(),
        "SERIAL".into(),
        "MODEL".into(),
        "KEYRING".into(),
        "DESCRIPTION".into(),
    ]];
    for slot in app.module.slot_list(false) {
        let t = app.token(slot);
        let present = app
            .module
            .slot_info(slot)
            .map(|s| s.present)
            .unwrap_or(false);
        let (keys, ring) = if present {
            (
                app.keys(slot)
                    .map_or("?".to_string(), |k| k.len().to_string()),
                app.kernel_view(slot)
                    .map_or("?".to_string(), |(r, _)| r.to_string()),
            )
        } else {
            ("-".into(), "-".into())
        };
        rows.push([
            t.label.clone(),
            if present { "yes" } else { "no" }.into(),
            keys,
            t.serial.clone(),
            t.model.to_string(),
            ring,
            t.description.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for r in &rows {
        let mut line = String::new();
        for (c, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:w$}  ", r[c]));
        }
        line.push_str(&r[6]);
        let _ = writeln!(out, "{line}");
    }
    for r in rows.iter().skip(1).filter(|r| r[1] == "no") {
        let _ = writeln!(
            out,
            "token \"{0}\" has no keyring yet; create it: keyring-pkcs11 tokens --create {0}",
            r[0]
        );
    }
    let _ = writeln!(
        out,
        "Choose a token with --token LABEL; PKCS#11 clients take URIs like pkcs11:token=LABEL."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_names() {
        assert!(check_keyring_name("work").is_ok());
        for bad in ["", "user", ".x", "a b", "a,b", "a#b"] {
            assert!(check_keyring_name(bad).is_err(), "{bad}");
        }
    }
}
