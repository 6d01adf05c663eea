//! PKCS#11 §5.14, key management: RSA key pair generation.

use super::{cryptoki_fn, mechanism, module, out, template};
use cryptoki_sys::*;

cryptoki_fn!(C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    p_mechanism: *mut CK_MECHANISM,
    p_public: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    p_private: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    ph_public: *mut CK_OBJECT_HANDLE,
    ph_private: *mut CK_OBJECT_HANDLE,
) {
    let m = module()?;
    let (ty, params) = mechanism(p_mechanism)?;
    let pub_out = out(ph_public)?;
    let priv_out = out(ph_private)?;
    let (pt, st) = (template(p_public, public_count)?, template(p_private, private_count)?);
    let (public, private) = m.generate_key_pair(h, ty, &params, &pt, &st)?;
    *pub_out = public;
    *priv_out = private;
    Ok(())
});
