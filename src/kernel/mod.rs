//! Everything that faces the kernel: the raw `keyctl(2)` calls (`keyctl`,
//! with `ffi` the only `unsafe`), the [`store::KeyStore`] trait that the
//! PKCS#11 logic speaks to and its kernel implementation, the in-memory
//! store of the unit tests and the fuzzer (`mock`), and what each kernel
//! refusal means (`hints`).

pub mod hints;
pub mod keyctl;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
pub mod store;
