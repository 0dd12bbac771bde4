//! Engine throughput, printed beside the raw cost of what it stands on.
//!
//! (a) three local steps, in memory: the bare engine (`SagaExecution::execute`), and the manager
//!     path that stores the finished execution in the in-memory repository;
//! (b) local -> remote -> local with an in-process participant that replies at once, the manager
//!     storing the execution at the pause and at the end (serialization paid), with and without
//!     the two-phase commit;
//! and, in the same run, the raw cost of one in-memory repository store (encode + insert) and of one
//! in-process publish/receive round trip.
//!
//! Run with `cargo bench -p saga-runtime --bench engine`.

mod common;

fn main() {
    common::main_with("system");
}
