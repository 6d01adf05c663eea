//! Writing into the kernel: keys created from a template or generated,
//! certificates, `CKA_ID` changes, and destruction. Private key material
//! passes through here once on its way in (see `material`), in buffers that
//! are wiped before the call returns; whatever a failure leaves half-made is
//! taken out again.
//!
//! Templates are honoured exactly (`object::rules`): every attribute given
//! either takes effect and reads back as given, or the call fails and
//! nothing is left behind. `CKA_TOKEN` false (or absent: the PKCS#11
//! default) makes a session object.

use super::discovery::{KeyEntry, Known};
use super::template::Tmpl;
use super::{Module, ObjKey, SessionEntry};
use crate::crypto::pubkey::RsaPublic;
use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::{Errno, KEYCTL_SUPPORTS_SIGN, Serial};
use crate::kernel::store::TokenKind;
use crate::log::esc;
use crate::material::{self, RsaTemplate};
use crate::mechanism::MechParams;
use crate::object::{self, AttrValue, CertInfo, Class, KeyInfo, KeyRecord, rules};
use crate::records::{self, CertRecord};
use cryptoki_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Where a new key goes and what is recorded about it.
struct NewKey<'a> {
    s: &'a SessionEntry,
    h: CK_SESSION_HANDLE,
    keyring: Serial,
    token: bool,
    label: String,
    record: KeyRecord,
}

impl Module {
    /// A kernel refusal to create or change something in a token's keyring.
    fn write_error(&self, slot: usize, op: KernelOp, e: Errno, what: &str) -> Error {
        Error::kernel(
            op,
            e,
            format!("{what} in token \"{}\"", esc(&self.tokens[slot].label)),
        )
    }

    /// Adds a `user` record to a keyring; a session object's record is the
    /// session's too.
    fn add_record(
        &self,
        n: &NewKey<'_>,
        description: &str,
        payload: &[u8],
        what: &str,
    ) -> Result<Serial> {
        let serial = self
            .store
            .add(n.keyring, "user", description, payload)
            .map_err(|e| self.write_error(n.s.slot, KernelOp::AddRecord, e, what))?;
        if !n.token {
            self.note_session_object(serial, n.h);
        }
        Ok(serial)
    }

    /// Writes a key's record as a new key, replacing any earlier one:
    /// records are never changed in place, so a keyring whose links have not
    /// changed holds the same records (`discovery`).
    fn replace_record(&self, n: &NewKey<'_>, key: &KeyInfo, record: &KeyRecord) -> Result<()> {
        let description = records::meta_description(&key.derived_id);
        let payload = records::encode_key_record(record);
        let what = "storing the key's record";
        let Some(old) = self.record_serial(n.keyring, key) else {
            return self.add_record(n, &description, &payload, what).map(|_| ());
        };
        // Unlinking the old record first lost it whenever the new one was
        // then refused (a full key quota), and a record added beside it
        // would update it in place, which other processes' caches do not
        // see. So the new record is made in a scratch keyring, then linked
        // into the token's, which displaces the old one in one step
        // (KEYCTL_LINK): a failure on the way changes no token.
        let fail = |op, e| self.write_error(n.s.slot, op, e, what);
        let process = self
            .store
            .resolve(&TokenKind::Process)
            .map_err(|e| fail(KernelOp::FindKeyring, e))?;
        let scratch = self
            .store
            .new_keyring(process, "keyring-pkcs11:scratch")
            .map_err(|e| fail(KernelOp::AddRecord, e))?;
        let new = self
            .store
            .add(scratch, "user", &description, &payload)
            .map_err(|e| fail(KernelOp::AddRecord, e))
            .and_then(|new| {
                let linked = self
                    .store
                    .link_key(n.keyring, new)
                    .map_err(|e| fail(KernelOp::AddRecord, e));
                let _ = self.store.unlink(scratch, new);
                linked.map(|()| new)
            });
        let _ = self.store.unlink(process, scratch);
        let new = new?;
        self.forget(old);
        if !n.token {
            self.note_session_object(new, n.h);
        }
        Ok(())
    }

    /// Loads a PKCS#8 private key into the session's token (or its session
    /// objects) and makes its objects. The caller's copy of the DER is its
    /// own to wipe.
    fn load_private(&self, n: NewKey<'_>, der: &[u8], public: RsaPublic) -> Result<Arc<KeyInfo>> {
        let label = n.label.as_str();
        // add_key would silently displace a key of the same description:
        // refuse instead of losing it.
        let taken = self.linked_here(n.keyring, "asymmetric", label);
        if taken {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!(
                    "a key labelled \"{}\" is already in token \"{}\"; the kernel would replace it: choose another label",
                    esc(label),
                    esc(&self.tokens[n.s.slot].label)
                ),
            ));
        }
        // Records are named by the key's ID (its public key): a second key of
        // one public key in a keyring would share the first one's record, and
        // each template would change the other key's attributes.
        if let Some(other) = self.key_of(n.s.slot, n.keyring, !n.token, &public)? {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!(
                    "this key is already in token \"{}\", labelled \"{}\"",
                    esc(&self.tokens[n.s.slot].label),
                    esc(&other)
                ),
            ));
        }
        let serial = self
            .store
            .add(n.keyring, "asymmetric", label, der)
            .map_err(|e| self.write_error(n.s.slot, KernelOp::AddKey, e, "adding a key"))?;
        let undo = |e: Error| {
            let _ = self.store.unlink(n.keyring, serial);
            e
        };
        let fail = |op, what| move |e| undo(self.write_error(n.s.slot, op, e, what));
        let q = self
            .store
            .query(serial)
            .map_err(fail(KernelOp::UseKey, "querying a new key"))?;
        let desc = self
            .store
            .describe(serial)
            .map_err(fail(KernelOp::UseKey, "describing a new key"))?;
        let sig_len = usize::from(q.max_sig_size);
        // The kernel reports the size in whole bytes: a 2047-bit key is 2048.
        if q.supported_ops & KEYCTL_SUPPORTS_SIGN == 0
            || sig_len == 0
            || q.key_size.div_ceil(8) != public.bits().div_ceil(8)
        {
            return Err(undo(Error::refused(
                CKR_TEMPLATE_INCONSISTENT,
                format!(
                    "key \"{}\": the kernel's key is not the size of the public key given",
                    esc(label)
                ),
            )));
        }
        let info = KeyInfo::new(serial, label.to_string(), desc.uid, public, sig_len);
        // The public half we report must be the kernel key's: check a raw
        // private operation against the public one.
        if !self.pair_matches(&info) {
            return Err(undo(Error::refused(
                CKR_TEMPLATE_INCONSISTENT,
                format!(
                    "key \"{}\": the private key does not match the public key given; not stored",
                    esc(label)
                ),
            )));
        }
        if !n.token {
            self.note_session_object(serial, n.h);
        }
        let stored = with_cache(n.record.clone(), &info);
        if stored != KeyRecord::default() {
            self.replace_record(&n, &info, &stored).map_err(undo)?;
        }
        let info = Arc::new(info);
        self.keys.lock().insert(
            serial,
            Known::Key(Arc::new(KeyEntry::known(info.clone(), q.key_size))),
        );
        self.records.lock().insert(
            (n.s.slot, serial),
            Arc::new(KeyRecord {
                session: !n.token,
                ..stored
            }),
        );
        Ok(info)
    }

    /// The label of a key with this public key already in `keyring` (its
    /// records are named after the key's ID, so two such keys would share
    /// them). Root's records name their key: a record for this ID and its
    /// labelled key, checked with a private operation, settle it in a few
    /// calls. Otherwise every key of the token is looked at — what the
    /// module has learned of them, or their public keys, once per process: a
    /// twin loaded with `keyctl padd` has no record to find it by. That
    /// makes a creation cost a look at the whole token (README, Objects).
    fn key_of(
        &self,
        slot: usize,
        keyring: Serial,
        session: bool,
        public: &RsaPublic,
    ) -> Result<Option<String>> {
        let description = records::meta_description(&public.key_id());
        let cached = self
            .store
            .search(keyring, "user", &description)
            .ok()
            .and_then(|record| self.store.read(record).ok())
            .and_then(|b| records::decode_key_record(&b))
            .and_then(|r| r.label);
        if let Some(label) = cached {
            let same = self
                .store
                .search(keyring, "asymmetric", &label)
                .ok()
                .and_then(|serial| {
                    let q = self.store.query(serial).ok()?;
                    let info = KeyInfo::new(
                        serial,
                        label.clone(),
                        0,
                        public.clone(),
                        usize::from(q.max_sig_size),
                    );
                    Some(self.pair_matches(&info))
                });
            if same == Some(true) {
                return Ok(Some(label));
            }
        }
        let views = self.scan(slot)?;
        // A key whose public key this process knows is compared as it is;
        // only the others are resolved (records, checks, recoveries): at
        // 10,000 keys resolving every key again at each creation made
        // filling a token quadratic.
        Ok(views
            .iter()
            .filter(|v| v.session == session)
            .flat_map(|v| v.keys.iter().map(move |k| (v, k)))
            .filter_map(|(v, k)| match k.public_key() {
                Some(info) => Some(info),
                None => self
                    .resolve(slot, k, v.session, Some(v))
                    .ok()
                    .map(|(i, _)| i),
            })
            .find(|k| k.public.modulus == public.modulus && k.public.exponent == public.exponent)
            .map(|k| k.label.clone()))
    }

    fn pair_matches(&self, info: &KeyInfo) -> bool {
        let k = info.sig_len;
        let mut x = vec![0u8; k];
        if crate::random::fill(&mut x[1..]).is_err() {
            return false;
        }
        let mut y = vec![0u8; k];
        let mut z = vec![0u8; k];
        self.store.private_raw(info.serial, &x, &mut y).is_ok()
            && self.store.public_raw(info.serial, &y, &mut z).is_ok()
            && {
                let v = num_bigint::BigUint::from_bytes_be(&y).modpow(
                    &num_bigint::BigUint::from_bytes_be(&info.public.exponent),
                    &info.n,
                );
                num_bigint::BigUint::from_bytes_be(&x) == v && z == x
            }
    }

    /// `C_CreateObject`: an RSA private key from a full PKCS#11 template (or
    /// PKCS#8 in `CKA_VALUE`) goes to the kernel; a public key is accepted
    /// when its private key is already in the token (it is that key's public
    /// object, and the template must describe it as it is); an X.509
    /// certificate is kept beside the keys. `template` borrows the caller's
    /// memory: nothing secret is copied except into the wiped PKCS#8 buffer.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<CK_OBJECT_HANDLE> {
        let t = Tmpl(template);
        crate::log::debug(format_args!("C_CreateObject template: {}", t.describe()));
        let class = t
            .ulong(CKA_CLASS)?
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        let class = match class {
            CKO_PRIVATE_KEY => Class::Private,
            CKO_PUBLIC_KEY => Class::Public,
            CKO_CERTIFICATE => Class::Certificate,
            _ => {
                return Err(Error::refused(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    format!(
                        "only RSA keys and X.509 certificates can be created (class {class:#x})"
                    ),
                ));
            }
        };
        let checked = t.check(class)?;
        if class == Class::Public {
            // No kernel write: the public object exists with its key.
            let s = self.state.lock().session(h)?;
            let public = RsaTemplate {
                modulus: t.get(CKA_MODULUS),
                public_exponent: t.get(CKA_PUBLIC_EXPONENT),
                ..RsaTemplate::default()
            }
            .public()?;
            return self.create_public(&s, &t, &public, t.bool(CKA_TOKEN)?);
        }
        let (s, keyring) = self.writable(h, checked.token)?;
        if class == Class::Certificate {
            return self.create_certificate(&s, h, keyring, &t, checked.token);
        }
        if t.ulong(CKA_KEY_TYPE)?.is_some_and(|k| k != CKK_RSA) {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "only RSA keys can be created (CKA_KEY_TYPE)",
            ));
        }
        let rsa = RsaTemplate {
            modulus: t.get(CKA_MODULUS),
            public_exponent: t.get(CKA_PUBLIC_EXPONENT),
            private_exponent: t.get(CKA_PRIVATE_EXPONENT),
            prime1: t.get(CKA_PRIME_1),
            prime2: t.get(CKA_PRIME_2),
            exponent1: t.get(CKA_EXPONENT_1),
            exponent2: t.get(CKA_EXPONENT_2),
            coefficient: t.get(CKA_COEFFICIENT),
        };
        let (der, public) = match t.get(CKA_VALUE) {
            Some(pkcs8) => {
                use rsa::pkcs8::DecodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let k = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(|_| {
                    Error::refused(
                        CKR_ATTRIBUTE_VALUE_INVALID,
                        "CKA_VALUE is not an unencrypted PKCS#8 RSA private key",
                    )
                })?;
                rsa.agree(&k)?;
                (
                    Zeroizing::new(pkcs8.to_vec()),
                    RsaPublic {
                        modulus: k.n().to_bytes_be(),
                        exponent: k.e().to_bytes_be(),
                    },
                )
            }
            None => (rsa.pkcs8()?, rsa.public()?),
        };
        t.check_public_key_info(&public)?;
        let label = t.label(&public)?;
        let derived = public.key_id();
        let token = checked.token;
        let record = checked.into_record(
            Class::Private,
            t.get(CKA_ID).map(<[u8]>::to_vec).filter(|i| *i != derived),
            false,
        );
        let new = NewKey {
            s: &s,
            h,
            keyring,
            token,
            label,
            record,
        };
        let info = self.load_private(new, &der, public)?;
        drop(der);
        Ok(self.handles(s.slot, info.serial)?.1)
    }

    /// A public key's template names the public object of a key already in
    /// the token; every attribute it gives must be what that object is.
    fn create_public(
        &self,
        s: &SessionEntry,
        t: &Tmpl<'_>,
        public: &RsaPublic,
        token: Option<bool>,
    ) -> Result<CK_OBJECT_HANDLE> {
        let views = self.scan(s.slot)?;
        let (key, rec) = views
            .iter()
            .filter(|v| token.is_none_or(|t| v.session != t))
            .flat_map(|v| v.keys.iter().map(move |k| (v, k)))
            .filter_map(|(v, k)| self.resolve(s.slot, k, v.session, Some(v)).ok())
            .find(|(k, _)| k.public.modulus == public.modulus)
            .ok_or_else(|| {
                Error::refused(
                    CKR_TEMPLATE_INCONSISTENT,
                    "a public key is stored only with its private key, which is not in this token",
                )
            })?;
        for (ty, v) in t.0 {
            if *ty == CKA_TOKEN {
                continue;
            }
            let same = match object::attribute(&key, &rec, Class::Public, *ty) {
                AttrValue::Value(cur) => cur == *v,
                _ => false,
            };
            if !same {
                return Err(Error::refused(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!(
                        "the public key of \"{}\" is already in the token, and its attribute {ty:#x} is not what the template says",
                        esc(&key.label)
                    ),
                ));
            }
        }
        Ok(self.handles(s.slot, key.serial)?.0)
    }

    /// An X.509 certificate (`CKC_X_509`, DER in `CKA_VALUE`), kept in a
    /// `user` key of the token's keyring. Its `CKA_ID` defaults to its RSA
    /// key's, so it pairs with that key with no help from the caller.
    fn create_certificate(
        &self,
        s: &SessionEntry,
        h: CK_SESSION_HANDLE,
        keyring: Serial,
        t: &Tmpl<'_>,
        token: bool,
    ) -> Result<CK_OBJECT_HANDLE> {
        let der = t
            .get(CKA_VALUE)
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?
            .to_vec();
        let id = match t.get(CKA_ID) {
            Some(id) => id.to_vec(),
            None => CertInfo::default_id(&der).ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
        };
        let label = match t.get(CKA_LABEL) {
            Some(l) => t.text(CKA_LABEL, l)?,
            None => String::new(),
        };
        let Some(parsed) = CertInfo::parse(0, label.clone(), id.clone(), der.clone()) else {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_VALUE is not a DER X.509 certificate",
            ));
        };
        // Everything else the template says must be what the certificate is.
        let parsed = CertInfo {
            session: !token,
            ..parsed
        };
        t.check_certificate(&parsed)?;
        let record = CertRecord { label, id, der };
        let n = NewKey {
            s,
            h,
            keyring,
            token,
            label: String::new(),
            record: KeyRecord::default(),
        };
        let serial = self.add_record(
            &n,
            &record.description(),
            &record.encode(),
            "storing a certificate",
        )?;
        let info = Arc::new(CertInfo { serial, ..parsed });
        self.keys
            .lock()
            .insert(serial, Known::Cert(info, crate::kernel::keyctl::uid()));
        Ok(self.state.lock().handle_for(ObjKey {
            slot: s.slot,
            serial,
            class: Class::Certificate,
        }))
    }

    /// `C_GenerateKeyPair` with `CKM_RSA_PKCS_KEY_PAIR_GEN`. The kernel cannot
    /// generate keys; RustCrypto does, and the key goes straight in. The two
    /// templates describe one kernel key: where both give its label, `CKA_ID`
    /// or `CKA_TOKEN`, they must agree.
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
        public_template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
        private_template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let (pt, st) = (Tmpl(public_template), Tmpl(private_template));
        crate::log::debug(format_args!(
            "C_GenerateKeyPair templates: public {}; private {}",
            pt.describe(),
            st.describe()
        ));
        if mech != CKM_RSA_PKCS_KEY_PAIR_GEN {
            return Err(Error::new(CKR_MECHANISM_INVALID));
        }
        if *params != MechParams::None {
            return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
        }
        for (t, class) in [(&pt, CKO_PUBLIC_KEY), (&st, CKO_PRIVATE_KEY)] {
            if t.ulong(CKA_CLASS)?.is_some_and(|c| c != class)
                || t.ulong(CKA_KEY_TYPE)?.is_some_and(|k| k != CKK_RSA)
            {
                return Err(Error::new(CKR_TEMPLATE_INCONSISTENT));
            }
        }
        let (pc, sc) = (pt.check(Class::Public)?, st.check(Class::Private)?);
        for t in [&pt, &st] {
            if let Some((ty, _)) = t.0.iter().find(|(ty, _)| rules::generated(*ty)) {
                return Err(Error::refused(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!("attribute {ty:#x} is what the generation makes, not a template"),
                ));
            }
        }
        for ty in [CKA_LABEL, CKA_ID, CKA_TOKEN] {
            if let (Some(a), Some(b)) = (pt.get(ty), st.get(ty)) {
                if a != b {
                    return Err(Error::refused(
                        CKR_TEMPLATE_INCONSISTENT,
                        format!(
                            "the public and private templates disagree on attribute {ty:#x}, which the two objects of one kernel key share"
                        ),
                    ));
                }
            }
        }
        // One kernel key: a token object if either template says so.
        let token = st.bool(CKA_TOKEN)?.or(pt.bool(CKA_TOKEN)?).unwrap_or(false);
        let (s, keyring) = self.writable(h, token)?;
        let bits = pt
            .ulong(CKA_MODULUS_BITS)?
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        let bits = u32::try_from(bits).map_err(|_| Error::new(CKR_KEY_SIZE_RANGE))?;
        // The public template asks for the exponent (65537 if it does not);
        // the private object has it too, so its template may repeat it.
        let exponent = |t: &Tmpl<'_>| match t.get(CKA_PUBLIC_EXPONENT) {
            Some(e) if e.len() <= 8 => {
                Ok(Some(e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))))
            }
            Some(_) => Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
            None => Ok(None),
        };
        let e = exponent(&pt)?.unwrap_or(65537);
        if exponent(&st)?.is_some_and(|private| private != e) {
            return Err(Error::refused(
                CKR_TEMPLATE_INCONSISTENT,
                "the private template's public exponent is not the one asked for",
            ));
        }
        let exponent = e;
        let (der, public) = material::generate(bits, exponent)?;
        let label = if st.get(CKA_LABEL).is_some() {
            st.label(&public)?
        } else {
            pt.label(&public)?
        };
        let derived = public.key_id();
        let id = st
            .get(CKA_ID)
            .or(pt.get(CKA_ID))
            .map(<[u8]>::to_vec)
            .filter(|i| *i != derived);
        let mut record = sc.into_record(Class::Private, id, true);
        record
            .set
            .extend(pc.into_record(Class::Public, None, true).set);
        let new = NewKey {
            s: &s,
            h,
            keyring,
            token,
            label,
            record,
        };
        let info = self.load_private(new, &der, public)?;
        drop(der);
        self.handles(s.slot, info.serial)
    }

    /// `C_DestroyObject`: unlinks the kernel key (and its record) from its
    /// keyring. The public object is the key's own view and cannot be
    /// destroyed alone; a key created with `CKA_DESTROYABLE` false cannot be
    /// destroyed through PKCS#11 at all.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<()> {
        if let Some(c) = self.cert(h, obj)? {
            let (s, keyring) = self.writable(h, !c.session)?;
            self.store.unlink(keyring, c.serial).map_err(|e| {
                self.write_error(s.slot, KernelOp::Unlink, e, "removing a certificate")
            })?;
            self.forget(c.serial);
            self.session_objects.lock().remove(&c.serial);
            self.state.lock().drop_handle(ObjKey {
                slot: s.slot,
                serial: c.serial,
                class: Class::Certificate,
            });
            return Ok(());
        }
        let (_, key, rec, class) = self.object(h, obj)?;
        if class == Class::Public || !rec.flag(&key, Class::Private, CKA_DESTROYABLE) {
            return Err(Error::new(CKR_ACTION_PROHIBITED));
        }
        let (s, keyring) = self.writable(h, !rec.session)?;
        self.store
            .unlink(keyring, key.serial)
            .map_err(|e| self.write_error(s.slot, KernelOp::Unlink, e, "removing a key"))?;
        self.forget(key.serial);
        if let Some(record) = self.record_serial(keyring, &key) {
            let _ = self.store.unlink(keyring, record);
            self.session_objects.lock().remove(&record);
        }
        self.session_objects.lock().remove(&key.serial);
        self.records.lock().remove(&(s.slot, key.serial));
        let mut st = self.state.lock();
        for class in [Class::Private, Class::Public] {
            st.drop_handle(ObjKey {
                slot: s.slot,
                serial: key.serial,
                class,
            });
        }
        Ok(())
    }

    /// The serial of a key's record in a keyring, if it has one.
    /// Whether a key of this type and description is linked directly in
    /// the keyring. The kernel's search looks it up by its index (type and
    /// description) in the keyring itself before any keyring nested in it,
    /// and answers ENOKEY only when no key of that type and description is
    /// there at all — one it may not search, or a revoked or expired one,
    /// gives another error. So ENOKEY settles it in one call, where
    /// describing every link would make filling a token of n keys cost n²
    /// calls; anything else is settled by looking at every link.
    fn linked_here(&self, keyring: Serial, key_type: &str, description: &str) -> bool {
        match self.store.search(keyring, key_type, description) {
            Err(e) if e.0 == libc::ENOKEY => return false,
            Ok(s) if self.store.links(keyring).is_ok_and(|l| l.contains(&s)) => return true,
            _ => {}
        }
        self.store
            .links(keyring)
            .unwrap_or_default()
            .into_iter()
            .any(|k| {
                self.store
                    .describe(k)
                    .is_ok_and(|d| d.key_type == key_type && d.description == description)
            })
    }

    fn record_serial(&self, keyring: Serial, key: &KeyInfo) -> Option<Serial> {
        let want = records::meta_description(&key.derived_id);
        // No record of this key anywhere in the keyring: one call (see
        // `linked_here`).
        if let Err(e) = self.store.search(keyring, "user", &want) {
            if e.0 == libc::ENOKEY {
                return None;
            }
        }
        let links = self.store.links(keyring).ok()?;
        links.into_iter().find(|s| {
            let cached = match self.keys.lock().get(s) {
                Some(Known::Record(r)) => Some(r.derived_id == key.derived_id),
                Some(_) => Some(false),
                None => None,
            };
            // A record not scanned yet (this process may have just written
            // it) is recognised by its description.
            cached.unwrap_or_else(|| {
                self.store
                    .describe(*s)
                    .is_ok_and(|d| d.key_type == "user" && d.description == want)
            })
        })
    }

    /// Changes a key's `CKA_ID` in its record, keeping the rest of it.
    fn set_id(
        &self,
        s: &SessionEntry,
        h: CK_SESSION_HANDLE,
        key: &KeyInfo,
        rec: &KeyRecord,
        id: Vec<u8>,
    ) -> Result<()> {
        let (_, keyring) = self.writable(h, !rec.session)?;
        let updated = KeyRecord {
            id: Some(id).filter(|i| *i != key.derived_id),
            ..rec.clone()
        };
        let stored = with_cache(
            KeyRecord {
                session: false,
                ..updated.clone()
            },
            key,
        );
        let n = NewKey {
            s,
            h,
            keyring,
            token: !rec.session,
            label: String::new(),
            record: KeyRecord::default(),
        };
        if stored == KeyRecord::default() {
            if let Some(old) = self.record_serial(keyring, key) {
                let _ = self.store.unlink(keyring, old);
                self.forget(old);
            }
        } else {
            self.replace_record(&n, key, &stored)?;
        }
        self.records
            .lock()
            .insert((s.slot, key.serial), Arc::new(updated));
        Ok(())
    }

    /// `C_SetAttributeValue`: `CKA_ID` is kept in the key's record (unless
    /// the key was made with `CKA_MODIFIABLE` false); a kernel key's
    /// description (`CKA_LABEL`) cannot change, nor can anything else, except
    /// to the value it already has.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<()> {
        // One attribute given twice with two values: which one wins would be
        // this code's order, not the caller's (found by the fuzzer: the
        // first was kept, the caller read the last back).
        for (i, (t, v)) in template.iter().enumerate() {
            if template[..i].iter().any(|(t2, v2)| t2 == t && v2 != v) {
                return Err(Error::refused(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!("attribute {t:#x} is given twice with different values"),
                ));
            }
        }
        if let Some(c) = self.cert(h, obj)? {
            // Stored certificates are immutable; setting a value they already have is fine.
            let same = template.iter().all(|(t, v)| matches!(object::cert_attribute(&c, *t), AttrValue::Value(cur) if cur == *v));
            return if same {
                Ok(())
            } else {
                Err(Error::new(CKR_ATTRIBUTE_READ_ONLY))
            };
        }
        let (s, key, rec, class) = self.object(h, obj)?;
        let mut new_id = None;
        for (t, v) in template {
            match (*t, object::attribute(&key, &rec, class, *t)) {
                (_, AttrValue::Value(cur)) if cur == *v => {}
                (CKA_ID, _) => new_id = Some(v.to_vec()),
                (CKA_LABEL, _) => {
                    return Err(Error::refused(
                        CKR_ATTRIBUTE_READ_ONLY,
                        "CKA_LABEL is the kernel key's description, which cannot change",
                    ));
                }
                (_, AttrValue::Invalid) => return Err(Error::new(CKR_ATTRIBUTE_TYPE_INVALID)),
                _ => return Err(Error::new(CKR_ATTRIBUTE_READ_ONLY)),
            }
        }
        if let Some(id) = new_id {
            if !rec.flag(&key, class, CKA_MODIFIABLE) {
                return Err(Error::new(CKR_ACTION_PROHIBITED));
            }
            self.set_id(&s, h, &key, &rec, id)?;
        }
        Ok(())
    }
}

/// A key's record as stored: for a key root owns, it also caches the key's
/// label and public key, so that another process takes the public key from
/// here (checking it against the kernel) instead of recovering it — what a
/// server with thousands of keys needs. Root's key quota (25 MB by default)
/// does not notice the ~620 bytes (2048 bits, measured on 6.12); another
/// user's default quota (20,000 bytes) would hold a sixth as many keys, so
/// theirs get a record only when there is something else to keep, and
/// recover public keys instead.
fn with_cache(rec: KeyRecord, key: &KeyInfo) -> KeyRecord {
    if key.owner != 0 {
        return KeyRecord {
            label: None,
            public: None,
            ..rec
        };
    }
    KeyRecord {
        label: Some(key.label.clone()),
        public: Some(key.public.clone()),
        ..rec
    }
}
