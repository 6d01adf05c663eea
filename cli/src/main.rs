//! `keyring-pkcs11`: import, generate, list, export and remove the RSA keys
//! that the keyring-pkcs11 PKCS#11 module serves from kernel keyrings.
//!
//! Everything goes through the library's own `Module` (the code behind the
//! C ABI), so the tool applies exactly the checks and metadata that
//! `C_CreateObject`, `C_GenerateKeyPair` and `C_DestroyObject` do, and a
//! refusal comes back with the kernel's errno and the same hints the
//! module's log gives.

use clap::Parser;
use std::process::ExitCode;

/// `println!` that does not panic when stdout is a closed pipe (`| head`).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod app;
mod args;
mod cmd;
mod fail;
mod keyfile;
mod secrets;
mod uri;

use args::{Cli, Command};
use fail::EXIT_INPUT;

/// Every heap block is wiped when freed. The tool's own buffers for keys and
/// passphrases are `Zeroizing`, but the crates it hands them to make copies
/// it cannot reach: RustCrypto's bignum temporaries while a key is checked
/// and encoded (p − 1 is p, to within its last byte), ssh-key's decoding
/// buffers, rpassword's passphrase string as it grows. A memory scrape of
/// the tool after an import (tests/lab/cli-memory.sh) found fragments of both
/// primes without this; with it, none. A few microseconds per free in a
/// short-lived tool.
#[global_allocator]
static ALLOC: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The module logs to stderr; here its warnings would only repeat, less
    // clearly, what this tool reports itself. -v and -vv show them.
    use keyring_pkcs11::log::{self, Level};
    log::set_level(match cli.verbose {
        0 => match std::env::var("KEYRING_PKCS11_LOG") {
            Ok(v) => log::parse(Some(&v)),
            Err(_) => Level::Error,
        },
        1 => Level::Info,
        _ => Level::Debug,
    });
    let r = match cli.command {
        Command::Exec(a) => cmd::exec::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::List(a) => cmd::list::run(a),
        Command::ExportPub(a) => cmd::export::run(a),
        Command::Remove(a) => cmd::remove::run(a),
        Command::Tokens(a) => cmd::tokens::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("keyring-pkcs11: error: {}", f.msg);
            for h in &f.hints {
                eprintln!("  {h}");
            }
            ExitCode::from(f.code)
        }
    }
}
