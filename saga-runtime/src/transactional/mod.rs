//! The participant side of the two-phase commit: commands whose effects stay tentative until their
//! transaction is reserved and committed, or rejected.
//!
//! A [`TransactionalParticipant`] answers commands with handlers registered per topic. A command
//! carries the `transactions` header (ids, comma-separated, outermost first); it runs inside the
//! innermost one. What its handler [stages](CommandContext::stage) is kept in a
//! [`ParticipantStore`] under that transaction, each effect under a conflict key, and nothing is
//! applied yet. Then the saga's committer speaks to the service's transaction topics:
//!
//! - `_Reserve{Service}Transaction`: SUCCESS, unless another reserved transaction holds one of the
//!   transaction's keys (ERROR). The answer is remembered: a repeated reserve answers the same. A
//!   transaction with nothing staged (it staged nothing, or it was settled already: a reserve
//!   redelivered after the commit) holds no key: it is answered SUCCESS and no reservation is
//!   recorded, so none is left behind for the sweeper.
//! - `_Commit{Service}Transaction`: the `on_commit` callbacks receive the staged effects, which are
//!   then removed; SUCCESS.
//! - `_Reject{Service}Transaction`: the same with the `on_reject` callbacks.
//!
//! Commit and reject of a transaction that staged nothing (or was settled already) answer SUCCESS and
//! call nothing, so a redelivered commit never applies an effect twice. A reservation that nobody
//! settles within the [reservation timeout](TransactionalParticipantBuilder::reservation_timeout) is
//! rejected by a sweeper task; a commit that comes after that applies nothing and is answered
//! ERROR (the orchestrator logs that the participant did not acknowledge the commit).
//!
//! The store remembers how each transaction settled ([`ParticipantStore::outcome`]), as long as it
//! remembers answers, so that a message arriving after the settlement starts nothing the
//! settlement would have had to end: a command of a rejected transaction (a compensation command is
//! sent with the reject, on another topic, and may be handled after it) has its effects rejected at
//! once, through the `on_reject` callbacks; a command of a committed transaction (only a redelivery
//! whose answer was forgotten can come that late) has its effects dropped; a reserve (a redelivery)
//! is answered by the outcome and reserves nothing.
//!
//! A handler that fails with [`CommandError::Business`] is answered ERROR (400), with
//! [`CommandError::System`] or a panic SYSTEM_ERROR (500); a failed command stages nothing. A
//! reply carries the request's `saga` header and its `related_services` with this service added
//! (and the services of any saga the handler ran, see
//! [`RequestHeaders`](crate::request_scope::RequestHeaders)).
//!
//! Commands are deduplicated by message id. A successful command's answer (its reply content, and
//! the related services its handler's sagas reported) is recorded with its staged effects, in one
//! atomic step; a command whose id was answered already (a redelivery: the reply was sent but the
//! acknowledgement was lost, or the broker redelivered it) is answered the same again without running
//! its handler, and stages nothing ([`ParticipantStats::duplicates`]). Answers outlive the settlement
//! of their transaction, so a redelivery after the commit does not stage again, until they are older
//! than the [answer retention](TransactionalParticipantBuilder::answer_retention) (24 h by default):
//! the sweeper then forgets them, and a command redelivered later runs again. A failed command is not
//! remembered: it stages nothing, and a redelivery runs it again.
//!
//! Every delivery is acknowledged once handled and answered. When the answer cannot be published,
//! or the store cannot be reached while a command is handled, the delivery is handed back for a
//! redelivery instead (a command whose answer is remembered is answered again, one that staged
//! nothing runs again), so neither a broker hiccup nor a database outage turns into a reply the
//! saga never gets or a business refusal. A message that cannot be understood (no valid
//! `transactions` header on a command, a payload the handler's request type does not decode, no
//! transaction id on a reserve/commit/reject) changes nothing: it is logged, counted in
//! [`ParticipantStats::undecodable`], answered SYSTEM_ERROR (commands) or ERROR (transaction
//! messages) when it names a reply topic, and acknowledged.
//!
//! Each topic's deliveries are handled concurrently (up to
//! [`concurrency`](TransactionalParticipantBuilder::concurrency) at a time); the reserve, commit,
//! reject and sweep work on one transaction is serialized, so one instance never settles a
//! transaction twice (several instances sharing a store rely on the store's atomic steps). The
//! callbacks run before the effects are removed from the store: after a crash between the two, a
//! redelivered commit runs them again (at least once).
//!
//! [`shutdown`](TransactionalParticipant::shutdown) stops it gracefully: no new delivery is taken,
//! the ones in hand are handled, answered and acknowledged, and the sweeper stops. Dropping it
//! stops it at once: a delivery in hand is neither answered nor acknowledged (a networked broker
//! delivers it again).
//!
//! The module is laid out by job: [`builder`](TransactionalParticipantBuilder) and
//! `registration` (the `inventory` of `#[transactional_command]` handlers) set a participant up;
//! `participant` starts and stops it; `delivery` takes each topic's deliveries; `command`,
//! `transaction_messages`, `settlement` and `sweeper` do the work, `responder` answers; `handler`,
//! `callbacks` and `stats` hold the types they share.

mod builder;
mod callbacks;
mod command;
mod delivery;
mod handler;
mod panics;
mod participant;
mod registration;
mod responder;
mod settlement;
mod stats;
mod sweeper;
#[cfg(test)]
mod test_support;
mod transaction_messages;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use self::{
    builder::TransactionalParticipantBuilder,
    callbacks::Settled,
    handler::{CommandContext, CommandError},
    participant::TransactionalParticipant,
    registration::{CommandRegistration, DuplicateTopic},
    stats::ParticipantStats,
};
pub use crate::participant_store::{
    CommandAnswer, InMemoryParticipantStore, Outcome, ParticipantStore, ParticipantStoreError,
    StagedEffect, Staging,
};

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresParticipantStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteParticipantStore;
