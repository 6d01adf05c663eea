//! Reading a creation template that borrows the caller's memory (values that
//! may be secret are never copied here), and the rules every created object
//! must follow.

use crate::crypto::pubkey::RsaPublic;
use crate::error::{Error, Result};
use crate::records;
use cryptoki_sys::*;

/// A creation template, borrowed from the caller.
pub(super) struct Tmpl<'a>(pub(super) &'a [(CK_ATTRIBUTE_TYPE, &'a [u8])]);

impl<'a> Tmpl<'a> {
    pub(super) fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&'a [u8]> {
        self.0.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v)
    }

    pub(super) fn ulong(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
        match self.get(t) {
            None => Ok(None),
            Some(v) => <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
                .map(|b| Some(CK_ULONG::from_ne_bytes(b)))
                .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
        }
    }

    pub(super) fn bool(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
        match self.get(t) {
            None => Ok(None),
            Some([b]) => Ok(Some(*b != 0)),
            Some(_) => Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
        }
    }

    /// Refuses what a kernel key can never be: extractable, or a session
    /// object (keys always live in a keyring: use the process token for keys
    /// that must die with the process).
    pub(super) fn check_storable(&self) -> Result<()> {
        if self.bool(CKA_EXTRACTABLE)? == Some(true) {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "kernel keys can never be extracted: CKA_EXTRACTABLE=TRUE refused",
            ));
        }
        if self.bool(CKA_TOKEN)? == Some(false) {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "session objects are not supported; create the key in the \"process\" token, which dies with the process",
            ));
        }
        Ok(())
    }

    /// `CKA_LABEL`, which becomes the kernel key's description (never empty).
    pub(super) fn label(&self, public: &RsaPublic) -> Result<String> {
        match self.get(CKA_LABEL) {
            Some(l) if !l.is_empty() => {
                String::from_utf8(l.to_vec()).map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))
            }
            _ => Ok(format!("rsa-{}", &records::hex(&public.key_id())[..16])),
        }
    }
}
