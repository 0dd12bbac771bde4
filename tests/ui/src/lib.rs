//! Compile-time diagnostics of the saga framework. The cases live beside this crate:
//! `definition/` (rules the type system enforces on the builder), `macros/fail` and
//! `transactional/fail` (each breaks one rule of an attribute macro and must fail with the message
//! in its `.stderr`), `macros/pass` and `transactional/pass` (allowed shapes that must compile).
//! `tests/compile_rules.rs` runs them; bless with
//! `TRYBUILD=overwrite cargo test -p saga-ui-tests`, then read every changed `.stderr`.
