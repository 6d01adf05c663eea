//! Fuzzes the C ABI as a C client sees it: every input is a sequence of
//! `C_*` calls made through the function list from `C_GetFunctionList`, over
//! an in-memory key store (the mock kernel) holding real RSA keys in several
//! tokens. The input is decoded as a derived `Arbitrary` value: a list of
//! [`call::Call`]s, one variant per C function, whose fields say which kind
//! of handle, buffer, template or mechanism to pass.
//!
//! The harness never lies about a buffer: a length it passes is the length of
//! memory behind the pointer (or the pointer is NULL), so whatever goes wrong
//! is the module's fault. What it checks beyond crashes and memory errors is
//! listed in `checks`; the buffer promises are in `buffers`.
//!
//! Where things are:
//! - `call`: the calls and their dispatch (the one place to add a function);
//! - `args`: handles, data and lengths as the fuzzer picks them;
//! - `buffers`: guarded memory and the length rules;
//! - `checks`: return values, and the tokens' state around object calls;
//! - `objects`: creation, generation, destruction, attributes, searches;
//! - `template`, `wellformed`: random templates, and well-formed ones mutated;
//! - `mechanism`: mechanisms and their parameters;
//! - `scenario`: sign-then-verify and encrypt-then-decrypt sequences;
//! - `keys`: the keys, certificates and generation pool the harness knows;
//! - `harness`: the client's state and the mock kernel's tokens;
//! - `stats`: per-function counts and the must-reach list `fuzz/run` checks.

#![no_main]

/// Calls a function of the list and checks its return value (`checks`).
macro_rules! call {
    ($h:expr, $f:ident($($a:expr),* $(,)?)) => {{
        let f = $h.fl.$f.expect(concat!(stringify!($f), " is in the function list"));
        // SAFETY: every pointer argument is NULL or points to live memory of
        // the length passed beside it.
        let rv = unsafe { f($($a),*) };
        $h.check_rv(stringify!($f), rv)
    }};
}

mod args;
mod buffers;
mod call;
mod checks;
mod harness;
mod keys;
mod mechanism;
mod objects;
mod scenario;
mod stats;
mod template;
mod wellformed;

libfuzzer_sys::fuzz_target!(|input: call::Input| harness::run(input));
