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

/// How a transaction settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Committed: its effects went to the `on_commit` callbacks.
    Committed,
    /// Rejected: its effects went to the `on_reject` callbacks.
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

    /// Removes `transaction`'s staged effects and reservation (commit or reject), returning the
    /// effects in the order they were staged; nothing for an unknown transaction. The answers of its
    /// commands stay.
    async fn take(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError>;

    /// The transactions asked to reserve (whatever the answer) before `before` and not settled
    /// since.
    async fn expired_reservations(
        &self,
        before: SystemTime,
    ) -> Result<Vec<Uuid>, ParticipantStoreError>;

    /// Settles `transaction` as `outcome`: removes its staged effects and reservation like
    /// [`take`](Self::take) and, in the same atomic step, remembers the outcome
    /// ([`outcome`](Self::outcome)), so that a message about the transaction arriving after it
    /// settled (a compensation command that raced the reject, a redelivered reserve) is not taken
    /// for a transaction still open. The outcome is forgotten with the answers
    /// ([`forget_answers`](Self::forget_answers)).
    ///
    /// The default remembers nothing: it is [`take`](Self::take).
    async fn settle(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let _ = outcome;
        self.take(transaction).await
    }

    /// How `transaction` settled, if it did and that is still remembered.
    ///
    /// The default remembers nothing: `None`.
    async fn outcome(&self, transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError> {
        let _ = transaction;
        Ok(None)
    }
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

    async fn take(&self, transaction: Uuid) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let mut state = self.state();
        state.reservations.remove(&transaction);
        Ok(state.effects.remove(&transaction).unwrap_or_default())
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

    async fn settle(
        &self,
        transaction: Uuid,
        outcome: Outcome,
    ) -> Result<Vec<StagedEffect>, ParticipantStoreError> {
        let mut state = self.state();
        state.reservations.remove(&transaction);
        // The first settlement stands.
        state
            .outcomes
            .entry(transaction)
            .or_insert((outcome, SystemTime::now()));
        Ok(state.effects.remove(&transaction).unwrap_or_default())
    }

    async fn outcome(&self, transaction: Uuid) -> Result<Option<Outcome>, ParticipantStoreError> {
        Ok(self
            .state()
            .outcomes
            .get(&transaction)
            .map(|(outcome, _)| *outcome))
    }
}
