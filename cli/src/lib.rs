//! The command line's definitions as a library, so that the tool and the
//! generator of its man pages and shell completions
//! (`examples/gen-docs.rs`, run by `scripts/deb`) describe one command line.

pub mod args;
