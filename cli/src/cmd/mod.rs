//! One file per command.

pub mod exec;
pub mod export;
pub mod generate;
pub mod import;
pub mod list;
pub mod remove;
pub mod tokens;
