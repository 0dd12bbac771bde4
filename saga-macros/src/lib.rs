//! Procedural macros of the saga framework.
//!
//! This crate is not used directly: depend on `saga-runtime`, which re-exports the macros under its
//! default `macros` feature. The macros expand into the runtime's definition model
//! (`saga_runtime::Saga`), through the hidden path `::saga_runtime::__private`.
//!
//! The attribute DSL (`#[saga]`, `#[local_step]`, `#[remote_step]`) is being built on top of the
//! runtime builder; until it lands this crate exports nothing.
