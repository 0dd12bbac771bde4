//! The integration suite, one module per area, in one test binary (one link, one process; the
//! tests of all areas share its thread pool). Sagas and handlers registered with `inventory` are
//! gathered per module (`Registry::from_inventory_where`,
//! `TransactionalParticipant::from_inventory_where`), so areas that reuse a saga's name or a
//! command's topic do not see each other.
//!
//! Kept apart, in binaries of their own: the tests that restart a shared server (`nats_restart`,
//! `postgres_outage`), the one that installs a global tracing subscriber (`tracing_spans`), and the
//! ones whose point is a duplicate registration (`macro_duplicate_names`,
//! `transactional_macro_duplicate`).

mod batching_repository;
mod broker_conformance;
mod conditional;
mod context;
mod crash_matrix;
mod definitions;
mod failure_paths;
mod idempotent_runs;
mod in_process_broker;
mod local_steps;
mod macro_acceptance;
mod macros;
mod manager;
mod nats_broker;
mod nats_services;
mod nats_timeouts;
mod participant_settlement;
mod postgres_durability;
mod recovery;
mod registry;
mod remote_steps;
mod replies;
mod reply_listener;
mod repository_conformance;
mod serialization;
mod service_crash;
mod sql_repository;
mod transactional_macro;
mod transactional_participant;
mod two_phase_commit;
mod unpublishable;
