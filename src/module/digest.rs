//! Message digests (`C_Digest*`), computed in userspace: no key is involved.

use super::Module;
use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::mechanism::{self, MechParams, Padding};
use cryptoki_sys::*;

pub(super) struct DigestOp {
    hasher: Hasher,
    multipart: bool,
}

impl Module {
    pub fn digest_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
    ) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let spec = mechanism::lookup(mech)
            .filter(|m| m.padding == Padding::Digest)
            .ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        if *params != MechParams::None {
            return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
        }
        let hasher = spec
            .hash
            .expect("digest mechanisms name their hash")
            .hasher();
        let mut ops = s.ops.lock();
        if ops.digest.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        ops.digest = Some(DigestOp {
            hasher,
            multipart: false,
        });
        Ok(())
    }

    pub fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let d = ops
            .digest
            .as_mut()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        d.multipart = true;
        d.hasher.update(data);
        Ok(())
    }

    /// `C_Digest` (`data` = Some) and `C_DigestFinal` (`data` = None), with
    /// the two-call convention.
    pub fn digest(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let d = ops
            .digest
            .as_ref()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        if data.is_some() && d.multipart {
            ops.digest = None;
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let mut hasher = d.hasher.clone();
        if let Some(d) = data {
            hasher.update(d);
        }
        let digest = hasher.finish();
        match out {
            None => Ok(digest.len()),
            Some(buf) if buf.len() < digest.len() => Err(Error::buffer_too_small(digest.len())),
            Some(buf) => {
                buf[..digest.len()].copy_from_slice(&digest);
                ops.digest = None;
                Ok(digest.len())
            }
        }
    }
}
