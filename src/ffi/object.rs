//! PKCS#11 §5.7, object management: create, destroy, read and change
//! attributes, search. Templates borrow the caller's memory for the length of
//! the call: values that may be secret (a private key being imported) are
//! never copied here.

use super::{array, bytes, cryptoki_fn, module, out, template};
use crate::error::Error;
use crate::object::AttrValue;
use cryptoki_sys::*;

cryptoki_fn!(C_GetObjectSize(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, pul_size: *mut CK_ULONG) {
    let m = module()?;
    let o = out(pul_size)?;
    m.attributes(h, obj, &[])?;
    *o = CK_UNAVAILABLE_INFORMATION;
    Ok(())
});

cryptoki_fn!(C_GetAttributeValue(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG) {
    let m = module()?;
    let template = array(p_template, count)?;
    let types: Vec<CK_ATTRIBUTE_TYPE> = template.iter().map(|a| a.type_).collect();
    let values = m.attributes(h, obj, &types)?;
    // Every attribute is answered; the return value reports a problem with
    // any of them (PKCS#11 2.40 §5.7.5). Capacity is read before writing.
    let mut rv = CKR_OK;
    let mut fail = |a: &mut CK_ATTRIBUTE, code: CK_RV| {
        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
        if rv == CKR_OK {
            rv = code;
        }
    };
    for (a, v) in template.iter_mut().zip(values) {
        // A length no buffer can have (CK_UNAVAILABLE_INFORMATION left by an
        // earlier call in a reused template) is no room at all.
        let room = super::slice_len(a.pValue as *const u8, a.ulValueLen).unwrap_or(0);
        match v {
            AttrValue::Value(v) if a.pValue.is_null() => a.ulValueLen = v.len() as CK_ULONG,
            AttrValue::Value(v) if room >= v.len() => {
                std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len());
                a.ulValueLen = v.len() as CK_ULONG;
            }
            AttrValue::Value(_) => fail(a, CKR_BUFFER_TOO_SMALL),
            AttrValue::Sensitive => fail(a, CKR_ATTRIBUTE_SENSITIVE),
            AttrValue::Invalid => fail(a, CKR_ATTRIBUTE_TYPE_INVALID),
        }
    }
    if rv == CKR_OK { Ok(()) } else { Err(Error::new(rv)) }
});

cryptoki_fn!(C_FindObjectsInit(h: CK_SESSION_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG) {
    let m = module()?;
    let template = array(p_template, count)?
        .iter()
        .map(|a| Ok((a.type_, bytes(a.pValue as *const u8, a.ulValueLen)?.to_vec())))
        .collect::<crate::error::Result<Vec<_>>>()?;
    m.find_init(h, &template)
});

cryptoki_fn!(C_FindObjects(h: CK_SESSION_HANDLE, ph_object: *mut CK_OBJECT_HANDLE, max: CK_ULONG, pul_count: *mut CK_ULONG) {
    let m = module()?;
    let count = out(pul_count)?;
    let dest = array(ph_object, max)?;
    let found = m.find_next(h, dest.len())?;
    dest[..found.len()].copy_from_slice(&found);
    *count = found.len() as CK_ULONG;
    Ok(())
});

cryptoki_fn!(C_FindObjectsFinal(h: CK_SESSION_HANDLE) {
    module()?.find_final(h)
});

cryptoki_fn!(C_CreateObject(h: CK_SESSION_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG, ph_object: *mut CK_OBJECT_HANDLE) {
    let m = module()?;
    let o = out(ph_object)?;
    let t = template(p_template, count)?;
    *o = m.create_object(h, &t)?;
    Ok(())
});

cryptoki_fn!(C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) {
    module()?.destroy_object(h, obj)
});

cryptoki_fn!(C_SetAttributeValue(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG) {
    let m = module()?;
    let t = template(p_template, count)?;
    m.set_attributes(h, obj, &t)
});
