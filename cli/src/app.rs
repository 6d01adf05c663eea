//! The module as the tool uses it: tokens, sessions, keys and certificates,
//! found and named the way PKCS#11 clients name them.

use crate::fail::{Fail, Res};
use crate::keyfile::{Certificate, Imported};
use crate::uri::{Selector, pct};
use cryptoki_sys::*;
use keyring_pkcs11::AttrValue;
use keyring_pkcs11::config::Config;
use keyring_pkcs11::error::Error as CkError;
use keyring_pkcs11::hex;
use keyring_pkcs11::kernel::keyctl::{Errno, Serial};
use keyring_pkcs11::kernel::store::{KernelStore, KeyDesc, KeyStore, TokenKind};
use keyring_pkcs11::module::{Module, Token};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `CK_TOKEN_INFO.manufacturerID` of every token (the module's C ABI sets it).
pub const TOKEN_MANUFACTURER: &str = "Linux kernel keyrings";
pub const BUILTIN_TOKENS: [&str; 4] = ["session", "user", "persistent", "process"];

/// One RSA private key as the module shows it.
pub struct Key {
    pub slot: CK_SLOT_ID,
    pub handle: CK_OBJECT_HANDLE,
    pub label: String,
    pub id: Vec<u8>,
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
    pub local: bool,
    pub spki: Vec<u8>,
}

impl Key {
    pub fn bits(&self) -> usize {
        match self.modulus.iter().position(|b| *b != 0) {
            Some(i) => (self.modulus.len() - i) * 8 - self.modulus[i].leading_zeros() as usize,
            None => 0,
        }
    }
}

/// A certificate as the module shows it.
pub struct Cert {
    pub handle: CK_OBJECT_HANDLE,
    pub label: String,
    pub id: Vec<u8>,
    pub subject: Vec<u8>,
}

impl Cert {
    /// The subject as RFC 4514 text, e.g. `CN=www.example.org`.
    pub fn subject_text(&self) -> String {
        use pkcs8::der::Decode;
        x509_cert::name::Name::from_der(&self.subject)
            .map_or_else(|_| "(unreadable subject)".into(), |n| n.to_string())
    }
}

pub struct App {
    /// The kernel, asked directly only for what the module does not say:
    /// why a token is absent, and the serials of a token's keys.
    pub store: KernelStore,
    pub module: Module,
    pub sessions: Mutex<HashMap<CK_SLOT_ID, CK_SESSION_HANDLE>>,
}

impl App {
    /// The module with the configured tokens, plus `extra` named keyrings.
    pub fn new(extra: &[&str]) -> App {
        let mut config = Config::load();
        for name in extra {
            if !BUILTIN_TOKENS.contains(name) && !config.named_keyrings.iter().any(|n| n == name) {
                config.named_keyrings.push((*name).to_string());
            }
        }
        App::over(Module::new(Arc::new(KernelStore), &config))
    }

    /// The module with only these tokens.
    pub fn for_tokens(kinds: Vec<TokenKind>) -> App {
        App::over(Module::with_tokens(Arc::new(KernelStore), kinds))
    }

    fn over(module: Module) -> App {
        App {
            store: KernelStore,
            module,
            sessions: Mutex::default(),
        }
    }

    pub fn token(&self, slot: CK_SLOT_ID) -> &Token {
        &self.module.tokens()[slot as usize]
    }

    pub fn slot(&self, label: &str) -> Res<CK_SLOT_ID> {
        self.module
            .tokens()
            .iter()
            .position(|t| t.label == label)
            .map(|i| i as CK_SLOT_ID)
            .ok_or_else(|| Fail::input(format!("no token \"{label}\"")))
    }

    /// A read-write session on a present token, or why the token is absent.
    pub fn session(&self, slot: CK_SLOT_ID) -> Res<CK_SESSION_HANDLE> {
        if let Some(h) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
        {
            return Ok(*h);
        }
        let h = self
            .module
            .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .map_err(|e| self.absent(slot, e))?;
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, h);
        Ok(h)
    }

    pub fn absent(&self, slot: CK_SLOT_ID, e: CkError) -> Fail {
        let t = self.token(slot);
        // Ask the kernel again, for the reason.
        let why = self.store.resolve(&t.kind).err();
        if e.rv != CKR_TOKEN_NOT_PRESENT {
            return Fail::kernel(format!("cannot open token \"{}\": {}", t.label, e));
        }
        match (&t.kind, why) {
            (TokenKind::Named(n), None | Some(Errno(libc::ENOKEY))) => {
                Fail::input(format!("token \"{n}\": there is no keyring named \"{n}\""))
                    .hint(format!("create it: keyring-pkcs11 tokens --create {n}"))
            }
            (TokenKind::Persistent, Some(Errno(libc::EOPNOTSUPP))) => Fail::kernel(
                "token \"persistent\": this kernel has no persistent keyrings (CONFIG_PERSISTENT_KEYRINGS)",
            )
            .hint("use the user or session token instead"),
            (_, Some(e)) => Fail::kernel(format!(
                "token \"{}\": the kernel will not give its keyring: {e}",
                t.label
            )),
            (_, None) => Fail::kernel(format!("token \"{}\" is not present", t.label)),
        }
    }

    /// The handles of a token's objects of one class.
    pub fn objects(&self, slot: CK_SLOT_ID, class: CK_OBJECT_CLASS) -> Res<Vec<CK_OBJECT_HANDLE>> {
        let h = self.session(slot)?;
        let fail =
            |e: CkError| Fail::from_error("reading the keyring", &self.token(slot).label, &e);
        self.module
            .find_init(h, &[(CKA_CLASS, ulong(class))])
            .map_err(fail)?;
        let mut handles = Vec::new();
        loop {
            let batch = self.module.find_next(h, 64).map_err(fail)?;
            if batch.is_empty() {
                break;
            }
            handles.extend(batch);
        }
        self.module.find_final(h).map_err(fail)?;
        Ok(handles)
    }

    /// The certificates of a token.
    pub fn certs(&self, slot: CK_SLOT_ID) -> Res<Vec<Cert>> {
        let h = self.session(slot)?;
        let mut certs = Vec::new();
        for handle in self.objects(slot, CKO_CERTIFICATE)? {
            let Ok(v) = self
                .module
                .attributes(h, handle, &[CKA_LABEL, CKA_ID, CKA_SUBJECT])
            else {
                continue;
            };
            let get = |i: usize| match &v[i] {
                AttrValue::Value(b) => b.clone(),
                _ => Vec::new(),
            };
            certs.push(Cert {
                handle,
                label: String::from_utf8_lossy(&get(0)).into_owned(),
                id: get(1),
                subject: get(2),
            });
        }
        Ok(certs)
    }

    /// The RSA private keys of a token.
    pub fn keys(&self, slot: CK_SLOT_ID) -> Res<Vec<Key>> {
        let handles = self.objects(slot, CKO_PRIVATE_KEY)?;
        let mut keys = Vec::new();
        for handle in handles {
            // A key may vanish between the search and now: skip it.
            if let Ok(k) = self.key(slot, handle) {
                keys.push(k);
            }
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    pub fn key(&self, slot: CK_SLOT_ID, handle: CK_OBJECT_HANDLE) -> Result<Key, CkError> {
        let h = self
            .session(slot)
            .map_err(|_| CkError::new(CKR_TOKEN_NOT_PRESENT))?;
        let v = self.module.attributes(
            h,
            handle,
            &[
                CKA_LABEL,
                CKA_ID,
                CKA_MODULUS,
                CKA_PUBLIC_EXPONENT,
                CKA_LOCAL,
                CKA_PUBLIC_KEY_INFO,
            ],
        )?;
        let get = |i: usize| match &v[i] {
            AttrValue::Value(b) => b.clone(),
            _ => Vec::new(),
        };
        Ok(Key {
            slot,
            handle,
            label: String::from_utf8_lossy(&get(0)).into_owned(),
            id: get(1),
            modulus: get(2),
            exponent: get(3),
            local: get(4) == [1],
            spki: get(5),
        })
    }

    /// The kernel's own view of a token's keyring: every key linked in it.
    pub fn kernel_view(&self, slot: CK_SLOT_ID) -> Option<(Serial, Vec<(Serial, KeyDesc)>)> {
        let kind = &self.token(slot).kind;
        let ring = self.store.resolve(kind).ok()?;
        let links = self.store.links(ring).ok()?;
        let keys = links
            .into_iter()
            .filter_map(|s| self.store.describe(s).ok().map(|d| (s, d)))
            .collect();
        Some((ring, keys))
    }

    /// A URI's token part, as p11tool prints it.
    pub fn token_uri(&self, slot: CK_SLOT_ID) -> String {
        let t = self.token(slot);
        format!(
            "pkcs11:model={};manufacturer={};serial={};token={}",
            pct(t.model.as_bytes(), false),
            pct(TOKEN_MANUFACTURER.as_bytes(), false),
            pct(t.serial.as_bytes(), false),
            pct(t.label.as_bytes(), false)
        )
    }

    pub fn key_uri(&self, k: &Key) -> String {
        format!(
            "{};id={};object={};type=private",
            self.token_uri(k.slot),
            pct(&k.id, true),
            pct(k.label.as_bytes(), false)
        )
    }

    /// The module with the token a key selector (and `--token`) names,
    /// and the one key it selects.
    pub fn with_key(selector: &str, token: Option<&str>) -> Res<(App, Key)> {
        let sel = Selector::parse(selector)?;
        let extra: Vec<&str> = token.into_iter().chain(sel.token_label()).collect();
        let app = App::new(&extra);
        let key = app.find(&sel, token)?;
        Ok((app, key))
    }

    /// Resolves a key selector to exactly one key.
    pub fn find(&self, sel: &Selector, token: Option<&str>) -> Res<Key> {
        let tokens = self.module.tokens();
        let slots: Vec<CK_SLOT_ID> = match (sel, token) {
            (Selector::Uri(u), t) if u.names_token() => {
                let slots: Vec<_> = (0..tokens.len())
                    .filter(|&i| u.token_matches(&tokens[i]))
                    .map(|i| i as CK_SLOT_ID)
                    .collect();
                if let Some(t) = t {
                    if !slots.iter().any(|&s| self.token(s).label == t) {
                        return Err(Fail::input(format!(
                            "the URI names another token than --token {t}"
                        )));
                    }
                }
                slots
            }
            (Selector::Uri(_), None) => self.module.slot_list(true),
            (_, t) => vec![self.slot(t.unwrap_or("user"))?],
        };
        let mut found = Vec::new();
        let mut searched = Vec::new();
        for &slot in &slots {
            searched.push(self.token(slot).label.clone());
            // With a URI over several tokens, skip the absent ones.
            let keys = match self.keys(slot) {
                Ok(k) => k,
                Err(f) if slots.len() == 1 => return Err(f),
                Err(_) => continue,
            };
            found.extend(keys.into_iter().filter(|k| sel.matches(k)));
        }
        match found.len() {
            1 => Ok(found.pop().expect("one")),
            0 => Err(Fail::input(format!(
                "no key {} in token{} {}",
                sel.describe(),
                if searched.len() == 1 { "" } else { "s" },
                searched.join(", ")
            ))
            .hint(match (sel, token) {
                (Selector::Uri(_), _) => "see the keys and their URIs: keyring-pkcs11 list --all".to_string(),
                (_, Some(t)) => format!("see the keys: keyring-pkcs11 list --token {t}"),
                (_, None) => "see the keys: keyring-pkcs11 list (--all for every token; choose one with --token)".to_string(),
            })),
            _ => {
                let mut f = Fail::input(format!(
                    "{} keys {}; name one by its URI:",
                    found.len(),
                    sel.describe()
                ));
                for k in &found {
                    f = f.hint(self.key_uri(k));
                }
                Err(f)
            }
        }
    }

    /// A token that keys can be written to.
    pub fn writable_slot(&self, label: &str) -> Res<CK_SLOT_ID> {
        let slot = self.slot(label)?;
        if self.token(slot).kind == TokenKind::Process {
            return Err(Fail::input(
                "the process token's keyring dies with the process using it, here this command: a key put there would be gone at once",
            )
            .hint("use --token user (the default), session, persistent or a named keyring"));
        }
        self.session(slot)?;
        Ok(slot)
    }

    /// Puts a decoded key, and its certificate if given, into a token
    /// through the module (`C_CreateObject`), all or nothing.
    pub fn add_key(
        &self,
        slot: CK_SLOT_ID,
        label: Option<&str>,
        id: Option<&[u8]>,
        key: &Imported,
        cert: Option<&Certificate>,
    ) -> Res<Key> {
        let h = self.session(slot)?;
        let (class, key_type) = (ulong(CKO_PRIVATE_KEY), ulong(CKK_RSA));
        let mut template: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![
            (CKA_CLASS, &class),
            (CKA_KEY_TYPE, &key_type),
            (CKA_TOKEN, &[CK_TRUE]),
            (CKA_VALUE, &key.pkcs8),
        ];
        if let Some(l) = label {
            template.push((CKA_LABEL, l.as_bytes()));
        }
        if let Some(id) = id {
            template.push((CKA_ID, id));
        }
        let handle = self
            .module
            .create_object(h, &template)
            .map_err(|e| self.write_fail(slot, "adding the key", e))?;
        let created = self
            .key(slot, handle)
            .map_err(|e| self.write_fail(slot, "reading the new key", e))?;
        let Some(c) = cert else {
            return Ok(created);
        };
        let (class, cert_type) = (ulong(CKO_CERTIFICATE), ulong(CKC_X_509));
        let template: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![
            (CKA_CLASS, &class),
            (CKA_CERTIFICATE_TYPE, &cert_type),
            (CKA_TOKEN, &[CK_TRUE]),
            (CKA_LABEL, created.label.as_bytes()),
            (CKA_ID, &created.id),
            (CKA_SUBJECT, &c.subject),
            (CKA_ISSUER, &c.issuer),
            (CKA_SERIAL_NUMBER, &c.serial),
            (CKA_VALUE, &c.der),
        ];
        if let Err(e) = self.module.create_object(h, &template) {
            // All or nothing: take the key out again.
            let kept = match self.module.destroy_object(h, handle) {
                Ok(()) => "nothing was added",
                Err(_) => "the key itself WAS added; remove it with keyring-pkcs11 remove",
            };
            let mut f = self.write_fail(slot, "adding the certificate", e);
            f.msg.push_str(&format!("; {kept}"));
            return Err(f);
        }
        Ok(created)
    }

    /// Refuses a label that is taken: the kernel would silently replace the
    /// key of the same description in the keyring.
    pub fn check_label_free(&self, slot: CK_SLOT_ID, label: &str) -> Res<()> {
        let taken = self.keys(slot)?.into_iter().find(|k| k.label == label);
        let kernel_taken = self.kernel_view(slot).is_some_and(|(_, keys)| {
            keys.iter()
                .any(|(_, d)| d.key_type == "asymmetric" && d.description == label)
        });
        if taken.is_some() || kernel_taken {
            let t = &self.token(slot).label;
            let mut f = Fail::input(format!(
                "token \"{t}\" already has a key labelled \"{label}\"; adding another would replace it"
            ));
            if let Some(k) = taken {
                f = f.hint(self.key_uri(&k));
            }
            return Err(f.hint(
                "choose another --label, or remove the old key first: keyring-pkcs11 remove LABEL",
            ));
        }
        Ok(())
    }

    /// Maps a failed create/generate/destroy to its cause.
    pub fn write_fail(&self, slot: CK_SLOT_ID, what: &str, e: CkError) -> Fail {
        let token = &self.token(slot).label;
        if let Some(f) = Fail::from_kernel(what, token, &e) {
            return f;
        }
        match e.rv {
            CKR_TEMPLATE_INCONSISTENT if e.doing().is_none() => Fail::kernel(format!(
                "{what} (token \"{token}\") failed: the kernel's key did not check out against the public key (size, capabilities or a test operation)"
            ))
            .hint("run again with -v to see the module's diagnostics"),
            CKR_KEY_SIZE_RANGE => Fail::input(format!("{what}: unsupported key size")),
            _ => Fail::from_error(what, token, &e),
        }
    }

    /// Prints a key as `list` shows it.
    pub fn print_key(&self, out: &mut impl Write, k: &Key, serial: Option<Serial>, certs: &[Cert]) {
        let t = self.token(k.slot);
        let _ = writeln!(out, "{}", k.label);
        let _ = writeln!(out, "  uri:      {}", self.key_uri(k));
        let _ = writeln!(
            out,
            "  key:      RSA {} bits{}",
            k.bits(),
            serial.map_or(String::new(), |s| format!(", kernel key {s}"))
        );
        let _ = writeln!(out, "  id:       {}", hex(&k.id));
        let _ = writeln!(
            out,
            "  keyring:  token \"{}\": {}",
            t.label,
            keyring_kind(&t.kind)
        );
        let _ = writeln!(
            out,
            "  origin:   {}",
            if k.local {
                "generated in the kernel's keyring (never left it)"
            } else {
                "imported"
            }
        );
        for c in certs.iter().filter(|c| c.id == k.id) {
            let _ = writeln!(out, "  cert:     {}", c.subject_text());
        }
    }

    /// Kernel key serials by label, for the keys of a token.
    pub fn serials(&self, slot: CK_SLOT_ID) -> HashMap<String, Serial> {
        self.kernel_view(slot)
            .map(|(_, keys)| {
                keys.into_iter()
                    .filter(|(_, d)| d.key_type == "asymmetric")
                    .map(|(s, d)| (d.description, s))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn keyring_kind(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Session => "session keyring (@s)".into(),
        TokenKind::User => "user keyring (@u)".into(),
        TokenKind::Persistent => "persistent keyring".into(),
        TokenKind::Process => "process keyring (@p)".into(),
        TokenKind::Named(n) => format!("named keyring \"{n}\""),
    }
}

/// The OpenSSH `authorized_keys` line of a key.
pub fn openssh_line(k: &Key) -> Res<String> {
    let mpint = |b: &[u8]| {
        ssh_key::Mpint::from_positive_bytes(b)
            .map_err(|e| Fail::kernel(format!("bad public key from the module: {e}")))
    };
    let public = ssh_key::public::RsaPublicKey {
        e: mpint(&k.exponent)?,
        n: mpint(&k.modulus)?,
    };
    ssh_key::PublicKey::new(ssh_key::public::KeyData::Rsa(public), k.label.as_str())
        .to_openssh()
        .map_err(|e| Fail::kernel(format!("cannot encode the OpenSSH public key: {e}")))
}

/// The module next to this program, for the `ssh -I` hint.
pub fn module_path() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()?
        .parent()?
        .join("libkeyring_pkcs11.so");
    p.exists().then_some(p)
}

/// A `CK_ULONG` attribute value.
pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
