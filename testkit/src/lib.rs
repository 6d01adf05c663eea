//! A raw PKCS#11 client for keyring-pkcs11's integration tests and for
//! softhsm-compare: what the `cryptoki` crate cannot express, in one place.
//!
//! - [`Module`] dlopens a PKCS#11 library and hands out its 2.40 function
//!   list (`C_GetFunctionList`) and, where the library has one, its 3.0 list
//!   (`C_GetInterface`).
//! - [`Client`] calls one entry point per method and returns the module's
//!   `CK_RV` untouched: an error is a [`Fail`] naming the function and the
//!   value it returned, so a test can check exactly which error it got and a
//!   benchmark is sure no wrapper made calls behind its back (no size
//!   queries, no attribute reads). Anything rawer (NULL pointers, lengths
//!   that lie) is the function list itself: [`Client::functions`].
//! - [`Template`] is a `CK_ATTRIBUTE` array with the buffers it points into,
//!   borrowed (no copy of a secret is made) or owned; [`Mechanism`] a
//!   `CK_MECHANISM` with its parameter.
//! - [`rv::name`] names every `CKR_*` value.
//!
//! The integration tests drive the module through `cryptoki` wherever it
//! can; this crate is for the rest.

mod client;
mod module;
pub use keyring_pkcs11::rv;
mod template;

pub use client::{Client, Fail, Rv, Token, os_locking_args};
pub use module::Module;
pub use template::{Mechanism, Template};
