//! The names of `CK_RV` values, for messages: the module's log, the
//! `keyring-pkcs11` tool, the tests and softhsm-compare (one table).

use cryptoki_sys::*;

macro_rules! names {
    ($($c:ident),* $(,)?) => {
        /// Every return value cryptoki-sys defines but CKR_VENDOR_DEFINED
        /// (PKCS#11 3.0 and later additions), named as the constant is
        /// spelt.
        const NAMES: &[(CK_RV, &str)] = &[$(($c, stringify!($c))),*];
    };
}

names![
    CKR_OK,
    CKR_CANCEL,
    CKR_HOST_MEMORY,
    CKR_SLOT_ID_INVALID,
    CKR_GENERAL_ERROR,
    CKR_FUNCTION_FAILED,
    CKR_ARGUMENTS_BAD,
    CKR_NO_EVENT,
    CKR_NEED_TO_CREATE_THREADS,
    CKR_CANT_LOCK,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_AEAD_DECRYPT_FAILED,
    CKR_FUNCTION_CANCELED,
    CKR_FUNCTION_NOT_PARALLEL,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_KEY_NOT_NEEDED,
    CKR_KEY_CHANGED,
    CKR_KEY_NEEDED,
    CKR_KEY_INDIGESTIBLE,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_NOT_WRAPPABLE,
    CKR_KEY_UNEXTRACTABLE,
    CKR_MECHANISM_INVALID,
    CKR_MECHANISM_PARAM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OPERATION_ACTIVE,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_PIN_INCORRECT,
    CKR_PIN_INVALID,
    CKR_PIN_LEN_RANGE,
    CKR_PIN_EXPIRED,
    CKR_PIN_LOCKED,
    CKR_SESSION_CLOSED,
    CKR_SESSION_COUNT,
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    CKR_SESSION_READ_ONLY,
    CKR_SESSION_EXISTS,
    CKR_SESSION_READ_ONLY_EXISTS,
    CKR_SESSION_READ_WRITE_SO_EXISTS,
    CKR_SIGNATURE_INVALID,
    CKR_SIGNATURE_LEN_RANGE,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_TOKEN_NOT_PRESENT,
    CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
    CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    CKR_UNWRAPPING_KEY_SIZE_RANGE,
    CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKR_USER_PIN_NOT_INITIALIZED,
    CKR_USER_TYPE_INVALID,
    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CKR_USER_TOO_MANY_TYPES,
    CKR_WRAPPED_KEY_INVALID,
    CKR_WRAPPED_KEY_LEN_RANGE,
    CKR_WRAPPING_KEY_HANDLE_INVALID,
    CKR_WRAPPING_KEY_SIZE_RANGE,
    CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
    CKR_RANDOM_SEED_NOT_SUPPORTED,
    CKR_RANDOM_NO_RNG,
    CKR_DOMAIN_PARAMS_INVALID,
    CKR_CURVE_NOT_SUPPORTED,
    CKR_BUFFER_TOO_SMALL,
    CKR_SAVED_STATE_INVALID,
    CKR_INFORMATION_SENSITIVE,
    CKR_STATE_UNSAVEABLE,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_MUTEX_BAD,
    CKR_MUTEX_NOT_LOCKED,
    CKR_NEW_PIN_MODE,
    CKR_NEXT_OTP,
    CKR_EXCEEDED_MAX_ITERATIONS,
    CKR_FIPS_SELF_TEST_FAILED,
    CKR_LIBRARY_LOAD_FAILED,
    CKR_PIN_TOO_WEAK,
    CKR_PUBLIC_KEY_INVALID,
    CKR_FUNCTION_REJECTED,
    CKR_TOKEN_RESOURCE_EXCEEDED,
    CKR_OPERATION_CANCEL_FAILED,
    CKR_KEY_EXHAUSTED,
    CKR_PENDING,
    CKR_SESSION_ASYNC_NOT_SUPPORTED,
    CKR_SEED_RANDOM_REQUIRED,
    CKR_OPERATION_NOT_VALIDATED,
    CKR_TOKEN_NOT_INITIALIZED,
    CKR_PARAMETER_SET_NOT_SUPPORTED,
];

/// The `CKR_*` name of a return value the standard defines; `None` for
/// vendor-defined and unknown values.
pub fn name(rv: CK_RV) -> Option<&'static str> {
    NAMES.iter().find(|(v, _)| *v == rv).map(|(_, n)| *n)
}

/// Any return value, for a message: its name, `CKR_VENDOR_DEFINED+0x…`, or
/// the number.
pub fn describe(rv: CK_RV) -> String {
    match name(rv) {
        Some(n) => n.to_string(),
        None if rv >= CKR_VENDOR_DEFINED => {
            format!("CKR_VENDOR_DEFINED+{:#x}", rv - CKR_VENDOR_DEFINED)
        }
        None => format!("CK_RV {rv:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cryptoki's error enum, written independently from the same headers:
    /// every value it knows must have the name its variant spells.
    #[test]
    fn names_agree_with_cryptoki() {
        use cryptoki::error::{Rv, RvError};
        let mut known = 0;
        for rv in 0..0x400 {
            let want = match Rv::from(rv) {
                Rv::Ok => "CKR_OK".to_string(),
                Rv::Error(RvError::UnknownErrorCode(_)) => continue,
                Rv::Error(e) => {
                    let mut s = "CKR".to_string();
                    for c in format!("{e:?}").chars() {
                        if c.is_ascii_uppercase() {
                            s.push('_');
                        }
                        s.push(c.to_ascii_uppercase());
                    }
                    s
                }
            };
            assert_eq!(name(rv), Some(want.as_str()), "{rv:#x}");
            known += 1;
        }
        // cryptoki 0.12 knows 94 (CKR_OK to CKR_FUNCTION_REJECTED): a
        // lower count means the loop above checked less than it should.
        assert!(known >= 94, "cryptoki knows only {known} values");
        // Beyond what cryptoki knows.
        assert_eq!(
            name(CKR_OPERATION_CANCEL_FAILED),
            Some("CKR_OPERATION_CANCEL_FAILED")
        );
    }

    #[test]
    fn every_value_has_one_name() {
        for (i, (v, n)) in NAMES.iter().enumerate() {
            assert!(
                NAMES[i + 1..].iter().all(|(w, _)| w != v),
                "{n} ({v:#x}) is named twice"
            );
        }
    }

    #[test]
    fn unnamed_values_are_still_described() {
        assert_eq!(describe(CKR_BUFFER_TOO_SMALL), "CKR_BUFFER_TOO_SMALL");
        assert_eq!(
            describe(CKR_VENDOR_DEFINED + 0x2a),
            "CKR_VENDOR_DEFINED+0x2a"
        );
        assert_eq!(describe(0x3ff), "CK_RV 0x3ff");
    }
}
