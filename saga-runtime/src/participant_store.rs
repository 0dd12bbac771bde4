//! Where a transactional participant keeps its staged effects until the transaction settles.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One tentative effect of a command: what it would do once its transaction commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedEffect {
    /// The command topic whose handler staged it.
    pub topic: String,
    /// The conflict key: two reserved transactions never hold the same key.
    pub key: String,
    /// The effect, as the handler described it.
    pub effect: Value,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantStoreError {
    /// Reserve only: another reserved transaction holds one of the transaction's keys.
    #[error("key `{key}` is held by the reserved transaction {holder}")]
    Conflict {
        /// The contested key.
        key: String,
        /// The reserved transaction that holds it.
        holder: Uuid,
    },
    /// The storage failed.
    #[error("participant storage failed: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// What a command was answered, remembered by its message id with the effects it staged, so that a
/// redelivery of the command is answered the same without running its handler again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAnswer {
    /// The reply's content (the handler's response).
    pub content: Value,
    /// The `related_services` the reply reported from the handler's own sagas, if it ran any (the
    /// reply adds the participant's service to them, or to the command's own when `None`).
    pub related_services: Option<String>,
}

/// What [`ParticipantStore::stage`] did.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a command answered before must be answered with the remembered answer"]
pub enum Staging {
    /// The effects were staged and the answer recorded.
    Staged,
    /// The command had been answered already (a redelivery handled twice at once): nothing was
    /// staged; this is the answer recorded first.
    Answered(CommandAnswer),
}

/// The decision for a transaction, which its settlement applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Committed: its effects go to the `on_commit` callbacks.
    Committed,
    /// Rejected: its effects go to the `on_reject` callbacks.
    Rejected,
}

/// The participant's own database of staged effects.
///
/// Each transaction's effects stay here from the command that staged them until the transaction is
/// committed or rejected. A reservation is remembered with its answer, so a repeated reserve answers
/// as the first one did. Every successfully handled command is remembered by its message id with its
/// answer, atomically with its effects, so that a redelivered command is answered again without
/// staging twice; answers outlive the settlement of their transaction until
/// [`forget_answers`](Self::forget_answers) removes them.
///
/// One store serves one service: two services need two stores (files, schemas), since the effects
/// are kept by transaction id, which the services of a saga share.
#[async_trait]
pub trait ParticipantStore: Send + Sync + 'static {
    /// Records that command `command` (its message id) was answered `answer`, and adds `effects` to
    /// `transaction`'s staged effects: all of it atomically, or nothing. When `command` was recorded
    /// already, nothing changes and the answer recorded first is returned
    /// ([`Staging::Answered`]).
    async fn stage(
        &self,
        transaction: Uuid,
        command: Uuid,
        effects: &[StagedEffect],
        answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError>;

    /// The answer recorded for command `command` (its message id), if it was staged and its answer
    /// not forgotten yet.
    async fn answered(&self, command: Uuid)
    -> Result<Option<CommandAnswer>, ParticipantStoreError>;

    /// Forgets the answers recorded before `before` (whether or not their transaction settled),
    /// returning how many. A command redelivered after its answer was forgotten runs again.
    async fn forget_answers(&self, before: SystemTime) -> Result<u64, ParticipantStoreError>;

    /// Reserves `transaction`: fails with [`ParticipantStoreError::Conflict`] when another reserved
    /// transaction holds one of its keys. The answer is remembered: reserving again answers the same.
    async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError>;

    /// `transaction`'s staged effects, in the order they were staged, left in place.
    async fn staged(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError>;

    /// The transactions asked to reserve (whatever the answer) before `before` and not settled
    /// since.
    async fn expired_reservations(
        &self,
        before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError>;

    /// Records the decision for `transaction` (commit or reject) unless one was recorded already,
    /// and returns the one that stands: the first. Settling starts here, before any callback
    /// runs, so that a settlement interrupted by a crash resumes with the same decision and a
    /// decided transaction is never settled the other way; a message about the transaction that
    /// arrives later (a compensation command that raced the reject, a redelivered reserve) sees it
    /// ([`outcome`](Self::outcome)). Decisions are forgotten with the answers
    /// ([`forget_answers`](Self::forget_answers)).
    async fn decide(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Outcome, ParticipantStoreError>;

    /// The decision recorded for `transaction`, if there is one and it is still remembered.
    async fn outcome(&self, transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError>;

    /// Removes the first `count` of `transaction`'s staged effects in staging order (those handed to
    /// the callbacks of its decision), atomically, and returns how many remain: effects staged
    /// while the callbacks ran, which the same decision settles next. When none remain, the
    /// transaction's reservation is removed too: its settlement is finished.
    async fn remove_settled(
        &self,
        transaction: Uuid,
        count: usize,
    ) -> Result<usize, ParticipantStoreError>;

    /// The transactions decided before `before` whose settlement did not finish: effects or a
    /// reservation of theirs remain (a crash between the decision and the end of the callbacks),
    /// with their decision, oldest first.
    async fn unfinished(
        &self,
        before: SystemTime,
    ) -> Result<Vec<(Uuid, Outcome)>, ParticipantStoreError>;
}

crate::shared::shared_port!(ParticipantStore);

#[derive(Debug, Clone)]
struct Reservation {
    /// `None`: reserved; `Some`: refused by this conflict.
    refused: Option<(String, Uuid)>,
    at: SystemTime,
}

#[derive(Debug, Default)]
struct MemoryState {
    effects: BTreeMap<Uuid, Vec<StagedEffect>>,
    reservations: BTreeMap<Uuid, Reservation>,
    /// By command id: the answer and when it was recorded.
    answers: HashMap<Uuid, (CommandAnswer, SystemTime)>,
    /// By transaction: how it settled and when.
    outcomes: HashMap<Uuid, (Outcome, SystemTime)>,
}

/// A [`ParticipantStore`] in memory: for tests and for services whose tentative work may be lost
/// with the process.
#[derive(Debug, Default)]
pub struct InMemoryParticipantStore {
    state: Mutex<MemoryState>,
}

impl InMemoryParticipantStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ParticipantStore for InMemoryParticipantStore {
    async fn stage(
        &self,
        transaction: Uuid,
        command: Uuid,
        effects: &[StagedEffect],
        answer: &CommandAnswer,
    ) -> Result<Staging, ParticipantStoreError> {
        let mut state = self.state();
        if let Some((earlier, _)) = state.answers.get(&command) {
            return Ok(Staging::Answered(earlier.clone()));
        }
        state
            .answers
            .insert(command, (answer.clone(), SystemTime::now()));
        if !effects.is_empty() {
            state
                .effects
                .entry(transaction)
                .or_default()
                .extend(effects.iter().cloned());
        }
        Ok(Staging::Staged)
    }

    async fn answered(
        &self,
        command: Uuid,
    ) -> Result<Option<CommandAnswer>, ParticipantStoreError> {
        Ok(self
            .state()
            .answers
            .get(&command)
            .map(|(answer, _)| answer.clone()))
    }

    async fn forget_answers(&self, before: SystemTime) -> Result<u64, ParticipantStoreError> {
        let mut state = self.state();
        let count = state.answers.len();
        state.answers.retain(|_, (_, at)| *at >= before);
        state.outcomes.retain(|_, (_, at)| *at >= before);
        Ok(u64::try_from(count - state.answers.len()).unwrap_or(u64::MAX))
    }

    async fn reserve(&self, transaction: Uuid) -> Result<(), ParticipantStoreError> {
        let mut state = self.state();
        if let Some(reservation) = state.reservations.get(&transaction) {
            return match &reservation.refused {
                None => Ok(()),
                Some((key, holder)) => Err(ParticipantStoreError::Conflict {
                    key: key.clone(),
                    holder: *holder,
                }),
            };
        }
        let mut refused = None;
        if let Some(mine) = state.effects.get(&transaction) {
            'search: for effect in mine {
                for (holder, reservation) in &state.reservations {
                    if *holder == transaction || reservation.refused.is_some() {
                        continue;
                    }
                    let held = state.effects.get(holder).into_iter().flatten();
                    if held.into_iter().any(|other| other.key == effect.key) {
                        refused = Some((effect.key.clone(), *holder));
                        break 'search;
                    }
                }
            }
        }
        state.reservations.insert(
            transaction,
            Reservation {
                refused: refused.clone(),
                at: SystemTime::now(),
            },
        );
        match refused {
            None => Ok(()),
            Some((key, holder)) => Err(ParticipantStoreError::Conflict { key, holder }),
        }
    }

    async fn staged(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        Ok(self
            .state()
            .effects
            .get(&transaction)
            .cloned()
            .unwrap_or_default())
    }

    async fn expired_reservations(
        &self,
        before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError> {
        Ok(self
            .state()
            .reservations
            .iter()
            .filter(|(_, reservation)| reservation.at < before)
            .map(|(transaction, _)| *transaction)
            .collect())
    }

    async fn decide(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Outcome, ParticipantStoreError> {
        let mut state = self.state();
        let (decided, _) = state
            .outcomes
            .entry(transaction)
            .or_insert((outcome, SystemTime::now()));
        Ok(*decided)
    }

    async fn remove_settled(
        &self,
        transaction: Uuid,
        count: usize,
    ) -> Result<usize, ParticipantStoreError> {
        let mut state = self.state();
        let left = state.effects.get_mut(&transaction).map_or(0, |effects| {
            effects.drain(..count.min(effects.len()));
            effects.len()
        });
        if left == 0 {
            state.effects.remove(&transaction);
            state.reservations.remove(&transaction);
        }
        Ok(left)
    }

    async fn unfinished(
        &self,
        before: SystemTime,
    ) -> Result<Vec<(Uuid, Outcome)>, ParticipantStoreError> {
        let state = self.state();
        let mut unfinished: Vec<_> = state
            .outcomes
            .iter()
            .filter(|(transaction, (_, at))| {
                *at < before
                    && (state.effects.contains_key(transaction)
                        || state.reservations.contains_key(transaction))
            })
            .map(|(transaction, (outcome, at))| (*at, *transaction, *outcome))
            .collect();
        unfinished.sort_by_key(|(at, transaction, _)| (*at, *transaction));
        Ok(unfinished
            .into_iter()
            .map(|(_, transaction, outcome)| (transaction, outcome))
            .collect())
    }

    async fn outcome(&self, transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError> {
        Ok(self
            .state()
            .outcomes
            .get(&transaction)
            .map(|(outcome, _)| *outcome))
    }
}
