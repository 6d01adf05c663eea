//! RSA in userspace, around the kernel's private operation: the encodings the
//! kernel does not do (`padding`: PSS, OAEP, PKCS#1 v1.5 blocks), the public
//! key the kernel will not give back (`pubkey`: recovered from its public
//! operation), and one operation end to end (`operation`: encoding, kernel
//! call, decoding); `rejection`: implicit rejection for PKCS#1 v1.5
//! decryption, keyed by a private operation of the kernel key.

pub mod operation;
pub mod padding;
pub mod pubkey;
pub mod rejection;
