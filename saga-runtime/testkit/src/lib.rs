//! Test support for the saga framework: what only tests, examples of test set-ups and benchmarks
//! use, kept out of `saga-runtime`'s public API.
//!
//! - [`conformance`]: the suites every repository and every broker passes; run them against your own
//!   implementation of `SagaExecutionRepository` or `Broker`.
//! - [`ScriptedParticipant`]: a test double on the other side of a saga that answers commands and
//!   the two-phase commit from closures and logs what it received.
//! - [`ForwardingRepository`]: wraps a repository so that a fault wrapper overrides only the
//!   methods it changes ([`RepositoryOverride`]).
//! - [`faults`]: the crash points a `fault-injection` build of the runtime aborts at.

pub mod conformance;
pub mod faults;
mod forwarding;
mod scripted;

pub use forwarding::{ForwardingRepository, RepositoryOverride};
pub use scripted::{
    CommandHandler, ParticipantEvent, ReservePolicy, ScriptedParticipant,
    ScriptedParticipantBuilder,
};
