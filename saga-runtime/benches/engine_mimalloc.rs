//! The engine bench (see `engine.rs`) with mimalloc as the global allocator, as many production
//! services run: the engine allocates on every step and message, so the allocator shows.
//!
//! Run with `cargo bench -p saga-runtime --bench engine_mimalloc`.

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    common::main_with("mimalloc");
}
