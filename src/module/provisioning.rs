//! Writing into the kernel: keys created from a template or generated,
//! certificates, `CKA_ID` changes, and destruction. Private key material
//! passes through here once on its way in (see `material`), in buffers that
//! are wiped before the call returns; whatever a failure leaves half-made is
//! taken out again.

use super::discovery::Known;
use super::template::Tmpl;
use super::{Module, ObjKey, SessionEntry};
use crate::crypto::pubkey::RsaPublic;
use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::{Errno, KEYCTL_SUPPORTS_SIGN, Serial};
use crate::material::{self, RsaTemplate};
use crate::mechanism::MechParams;
use crate::object::{self, AttrValue, CertInfo, Class, KeyInfo};
use crate::records::{self, CertRecord, Meta};
use cryptoki_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

impl Module {
    /// A kernel refusal to create or change something in a token's keyring.
    fn write_error(&self, slot: usize, op: KernelOp, e: Errno, what: &str) -> Error {
        Error::kernel(
            op,
            e,
            format!("{what} in token \"{}\"", self.tokens[slot].label),
        )
    }

    /// Loads a PKCS#8 private key into the session's token and makes its
    /// objects. The caller's copy of the DER is its own to wipe.
    fn load_private(
        &self,
        s: &SessionEntry,
        keyring: Serial,
        label: &str,
        der: &[u8],
        public: RsaPublic,
        meta: Meta,
    ) -> Result<Arc<KeyInfo>> {
        // add_key would silently displace a key of the same description:
        // refuse instead of losing it.
        let taken = self
            .store
            .links(keyring)
            .unwrap_or_default()
            .into_iter()
            .any(|k| {
                self.store
                    .describe(k)
                    .is_ok_and(|d| d.key_type == "asymmetric" && d.description == label)
            });
        if taken {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!(
                    "a key labelled \"{label}\" is already in token \"{}\"; the kernel would replace it: choose another label",
                    self.tokens[s.slot].label
                ),
            ));
        }
        let serial = self
            .store
            .add(keyring, "asymmetric", label, der)
            .map_err(|e| self.write_error(s.slot, KernelOp::AddKey, e, "adding a key"))?;
        let undo = |e: Error| {
            let _ = self.store.unlink(keyring, serial);
            e
        };
        let q = self.store.query(serial).map_err(|e| {
            undo(self.write_error(s.slot, KernelOp::UseKey, e, "querying a new key"))
        })?;
        let sig_len = usize::from(q.max_sig_size);
        if q.supported_ops & KEYCTL_SUPPORTS_SIGN == 0
            || sig_len == 0
            || u64::from(q.key_size) != u64::from(public.bits())
        {
            return Err(undo(Error::new(CKR_TEMPLATE_INCONSISTENT)));
        }
        let mut info = KeyInfo::new(serial, label.to_string(), public, sig_len);
        // The public half we report must be the kernel key's: check a raw
        // private operation against the public one.
        if !self.pair_matches(&info) {
            return Err(undo(Error::refused(
                CKR_TEMPLATE_INCONSISTENT,
                format!(
                    "key \"{label}\": the private key does not match the public key given; not stored"
                ),
            )));
        }
        if meta != Meta::default() {
            let record = meta.encode();
            self.store
                .add(
                    keyring,
                    "user",
                    &records::meta_description(&info.derived_id),
                    &record,
                )
                .map_err(|e| {
                    undo(self.write_error(s.slot, KernelOp::AddRecord, e, "storing key metadata"))
                })?;
        }
        if let Some(id) = meta.id {
            info.id = id;
        }
        info.local = meta.local;
        let info = Arc::new(info);
        self.keys.lock().insert(serial, Known::Key(info.clone()));
        Ok(info)
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
    /// object). `template` borrows the caller's memory: nothing secret is
    /// copied except into the wiped PKCS#8 buffer.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<CK_OBJECT_HANDLE> {
        let (s, keyring) = self.writable(h)?;
        let t = Tmpl(template);
        let class = t
            .ulong(CKA_CLASS)?
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        if class == CKO_CERTIFICATE {
            return self.create_certificate(&s, keyring, &t);
        }
        if class != CKO_PRIVATE_KEY && class != CKO_PUBLIC_KEY {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!("only RSA keys and X.509 certificates can be created (class {class:#x})"),
            ));
        }
        if t.ulong(CKA_KEY_TYPE)?.is_some_and(|k| k != CKK_RSA) {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        t.check_storable()?;
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
        let id = t.get(CKA_ID).map(<[u8]>::to_vec);
        if class == CKO_PUBLIC_KEY {
            let public = rsa.public()?;
            let key = self.scan(s.slot)?.keys.into_iter().find(|k| k.public.modulus == public.modulus).ok_or_else(|| {
                Error::refused(
                    CKR_TEMPLATE_INCONSISTENT,
                    "a public key is stored only with its private key, which is not in this token",
                )
            })?;
            if let Some(id) = id {
                self.set_id(s.slot, keyring, &key, id)?;
            }
            return Ok(self.handles(s.slot, key.serial)?.0);
        }
        let (der, public) = match t.get(CKA_VALUE) {
            Some(pkcs8) => {
                use rsa::pkcs8::DecodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let k = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
                    .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
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
        let label = t.label(&public)?;
        let derived = public.key_id();
        let meta = Meta {
            id: id.filter(|i| *i != derived),
            local: false,
        };
        let info = self.load_private(&s, keyring, &label, &der, public, meta)?;
        drop(der);
        Ok(self.handles(s.slot, info.serial)?.1)
    }

    /// An X.509 certificate (`CKC_X_509`, DER in `CKA_VALUE`), kept in a
    /// `user` key of the token's keyring. Its `CKA_ID` defaults to its RSA
    /// key's, so it pairs with that key with no help from the caller.
    fn create_certificate(
        &self,
        s: &SessionEntry,
        keyring: Serial,
        t: &Tmpl<'_>,
    ) -> Result<CK_OBJECT_HANDLE> {
        if t.ulong(CKA_CERTIFICATE_TYPE)?
            .is_some_and(|c| c != CKC_X_509)
        {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        t.check_storable()?;
        let der = t
            .get(CKA_VALUE)
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?
            .to_vec();
        let id = match t.get(CKA_ID) {
            Some(id) => id.to_vec(),
            None => CertInfo::default_id(&der).ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
        };
        let label = match t.get(CKA_LABEL) {
            Some(l) => String::from_utf8(l.to_vec())
                .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
            None => String::new(),
        };
        if CertInfo::parse(0, String::new(), Vec::new(), der.clone()).is_none() {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let record = CertRecord { label, id, der };
        let serial = self
            .store
            .add(keyring, "user", &record.description(), &record.encode())
            .map_err(|e| {
                self.write_error(s.slot, KernelOp::AddRecord, e, "storing a certificate")
            })?;
        let info = Arc::new(
            CertInfo::parse(serial, record.label, record.id, record.der).expect("parsed above"),
        );
        self.keys.lock().insert(serial, Known::Cert(info));
        Ok(self.state.lock().handle_for(ObjKey {
            slot: s.slot,
            serial,
            class: Class::Certificate,
        }))
    }

    /// `C_GenerateKeyPair` with `CKM_RSA_PKCS_KEY_PAIR_GEN`. The kernel cannot
    /// generate keys; RustCrypto does, and the key goes straight in.
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
        public_template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
        private_template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let (s, keyring) = self.writable(h)?;
        if mech != CKM_RSA_PKCS_KEY_PAIR_GEN {
            return Err(Error::new(CKR_MECHANISM_INVALID));
        }
        if *params != MechParams::None {
            return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
        }
        let (pt, st) = (Tmpl(public_template), Tmpl(private_template));
        pt.check_storable()?;
        st.check_storable()?;
        let bits = pt
            .ulong(CKA_MODULUS_BITS)?
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        let bits = u32::try_from(bits).map_err(|_| Error::new(CKR_KEY_SIZE_RANGE))?;
        let exponent = match pt.get(CKA_PUBLIC_EXPONENT) {
            Some(e) if e.len() <= 8 => e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            Some(_) => return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
            None => 65537,
        };
        let (der, public) = material::generate(bits, exponent)?;
        let id = st.get(CKA_ID).or(pt.get(CKA_ID)).map(<[u8]>::to_vec);
        let label = match st.get(CKA_LABEL).or(pt.get(CKA_LABEL)) {
            Some(_) if st.get(CKA_LABEL).is_some() => st.label(&public)?,
            Some(_) => pt.label(&public)?,
            None => st.label(&public)?,
        };
        let derived = public.key_id();
        let meta = Meta {
            id: id.filter(|i| *i != derived),
            local: true,
        };
        let info = self.load_private(&s, keyring, &label, &der, public, meta)?;
        drop(der);
        self.handles(s.slot, info.serial)
    }

    /// `C_DestroyObject`: unlinks the kernel key (and its metadata) from the
    /// token's keyring. The public object is the key's own view and cannot be
    /// destroyed alone.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<()> {
        let (s, keyring) = self.writable(h)?;
        if let Some(c) = self.cert(h, obj)? {
            self.store.unlink(keyring, c.serial).map_err(|e| {
                self.write_error(s.slot, KernelOp::Unlink, e, "removing a certificate")
            })?;
            self.forget(c.serial);
            self.state.lock().drop_handle(ObjKey {
                slot: s.slot,
                serial: c.serial,
                class: Class::Certificate,
            });
            return Ok(());
        }
        let (_, key, class) = self.object(h, obj)?;
        if class == Class::Public {
            return Err(Error::new(CKR_ACTION_PROHIBITED));
        }
        self.store
            .unlink(keyring, key.serial)
            .map_err(|e| self.write_error(s.slot, KernelOp::Unlink, e, "removing a key"))?;
        self.forget(key.serial);
        if let Some(meta) = self.meta_serial(keyring, &key) {
            let _ = self.store.unlink(keyring, meta);
        }
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

    fn meta_serial(&self, keyring: Serial, key: &KeyInfo) -> Option<Serial> {
        let links = self.store.links(keyring).ok()?;
        let want = records::meta_description(&key.derived_id);
        links.into_iter().find(|s| {
            let cached = match self.keys.lock().get(s) {
                Some(Known::Meta(id)) => Some(*id == key.derived_id),
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

    fn set_id(&self, slot: usize, keyring: Serial, key: &KeyInfo, id: Vec<u8>) -> Result<()> {
        let meta = Meta {
            id: Some(id.clone()).filter(|i| *i != key.derived_id),
            local: key.local,
        };
        if meta == Meta::default() {
            if let Some(m) = self.meta_serial(keyring, key) {
                let _ = self.store.unlink(keyring, m);
            }
        } else {
            self.store
                .add(
                    keyring,
                    "user",
                    &records::meta_description(&key.derived_id),
                    &meta.encode(),
                )
                .map_err(|e| {
                    self.write_error(slot, KernelOp::AddRecord, e, "storing key metadata")
                })?;
        }
        let updated = Arc::new(KeyInfo { id, ..key.clone() });
        self.keys.lock().insert(key.serial, Known::Key(updated));
        Ok(())
    }

    /// `C_SetAttributeValue`: `CKA_ID` is kept in the key's metadata record;
    /// a kernel key's description (`CKA_LABEL`) cannot change, nor can
    /// anything else, except to the value it already has.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<()> {
        let (s, keyring) = self.writable(h)?;
        if let Some(c) = self.cert(h, obj)? {
            // Stored certificates are immutable; setting a value they already have is fine.
            let same = template.iter().all(|(t, v)| matches!(object::cert_attribute(&c, *t), AttrValue::Value(cur) if cur == *v));
            return if same {
                Ok(())
            } else {
                Err(Error::new(CKR_ATTRIBUTE_READ_ONLY))
            };
        }
        let (_, key, class) = self.object(h, obj)?;
        let mut new_id = None;
        for (t, v) in template {
            match (*t, object::attribute(&key, class, *t)) {
                (CKA_ID, _) => new_id = Some(v.to_vec()),
                (_, AttrValue::Value(cur)) if cur == *v => {}
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
            self.set_id(s.slot, keyring, &key, id)?;
        }
        Ok(())
    }
}
