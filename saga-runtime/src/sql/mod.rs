//! The SQL layer under the SQLite and PostgreSQL stores: one core, two thin backends.
//!
//! Everything both databases do alike is written once, generic over a [`Backend`]: the statement
//! text (placeholders are `$N`, which SQLite accepts too), the column lists, the binding and
//! decoding of rows ([`codec`]), the saga executions table ([`executions`]) and the transactional
//! participant's tables ([`participant`]). What differs is small and named, one file per database
//! ([`sqlite`], [`postgres`]): opening the pool and bringing the schema up to date, how ids and
//! flags are stored, the transaction that writes, and the lock that serializes reservations.
//!
//! The public stores (`SqliteRepository`, `PostgresParticipantStore`, ...) live with their layer
//! (`repository`, `transactional`) and hold a core of this module; nothing here is public but the
//! builders of both databases' stores and the SQLite [`Durability`] setting, which the repository
//! and the participant module re-export.

mod backend;
mod codec;
mod driver;
mod executions;
mod participant;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub(crate) use executions::{Executions, forward_repository};
pub(crate) use participant::{ParticipantTables, forward_participant_store};
#[cfg(feature = "postgres")]
pub use postgres::PostgresBuilder;
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteBuilder};
