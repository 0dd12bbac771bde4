//! Recovery: what the manager does, at start-up and then once per lease period, with executions a
//! stopped process left behind.
//!
//! The rule, per execution that needs it (`ExecutionRecord::needs_recovery`), taken one at a time
//! under the execution's lock, and only if no live instance holds it (its owner's lease ran out, or
//! the owner is this instance's own name from before a restart):
//!
//! 1. Messages stored with the execution but not marked published are published again, with their
//!    original ids (receivers deduplicate; a reply to a command answered twice is a duplicate).
//! 2. A rollback under way (a top-level step marked `running-on-failure`, or a `running` execution
//!    with a failed or compensated step) goes on: a compensation marked `running-on-failure` may
//!    have run, so it is not run again (compensations run at most once) and is recorded as
//!    `errored-on-failure` with an error saying so; the remaining steps are compensated in reverse
//!    order; the transaction is rejected (with autocommit).
//! 3. A `created` or `running` execution is run forward from its stored state: the local steps whose
//!    completion was not stored run again, so a local step runs at least once, and more than once
//!    only when a process stopped between running it and storing the next state.
//! 4. A `paused` execution that an instance held (it was applying a reply when it stopped) is let
//!    rest again, and the command its waiting step sent is sent again (its request built again from
//!    the stored context, with the original message id): the reply being applied may have been
//!    lost with the process.
//! 5. A `paused` execution with a deadline gets its timer again (expiring at once if the deadline
//!    passed).
//! 6. A finished execution whose transaction was `committing` is committed again from the
//!    reservation (participants answer a repeated reserve or commit of the same transaction as
//!    they did the first time).
//! 7. Anything else an instance held (a manual commit or rollback that had not started) is let
//!    rest again.
//!
//! An execution that cannot be recovered (a corrupt row, an unknown saga, a definition whose
//! fingerprint changed) is reported and left untouched; the others are recovered all the same.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::advance::Advanced;
use super::expiry::time_left;
use super::persist::{Hold, Saver, Stored};
use super::{Inner, Interruption, SagaError};
use crate::error::{ExecutionError, LoadError, RepositoryError};
use crate::execution::{ExecutionRecord, Outbox, Progress, SagaStatus, TransactionState, now_ms};
use crate::registry::ErasedSaga;

/// What a recovery sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Executions listed as needing recovery and examined.
    pub examined: usize,
    /// Executions run forward from their stored state (rule 3).
    pub resumed: usize,
    /// Executions whose interrupted rollback was finished (rule 2).
    pub compensated: usize,
    /// Executions whose interrupted commit was run again (rule 6).
    pub committed: usize,
    /// Waiting commands sent again (rule 4).
    pub resent: usize,
    /// Stored messages published again (rule 1).
    pub republished: usize,
    /// Timers armed for paused executions with a deadline (rule 5).
    pub timers: usize,
    /// Executions let rest again (rules 4 and 7).
    pub released: usize,
    /// Executions skipped because a live instance holds them.
    pub held_elsewhere: usize,
    /// Compensations found under way and not run again: (execution, step).
    pub interrupted_compensations: Vec<(Uuid, String)>,
    /// Executions that could not be recovered, and why (left untouched).
    pub failures: Vec<(Uuid, String)>,
    /// Finished executions deleted by the retention setting.
    pub deleted: u64,
}

impl RecoveryReport {
    /// Whether the sweep found nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn add(&mut self, id: Uuid, recovered: Recovered) {
        self.republished += recovered.republished;
        self.resent += usize::from(recovered.resent);
        self.timers += usize::from(recovered.timer);
        self.interrupted_compensations
            .extend(recovered.interrupted.into_iter().map(|step| (id, step)));
        match recovered.action {
            Action::Resumed => self.resumed += 1,
            Action::Compensated => self.compensated += 1,
            Action::Committed => self.committed += 1,
            Action::Released => self.released += 1,
            Action::Nothing => {}
        }
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} examined, {} resumed, {} compensated, {} committed, {} commands resent, \
             {} messages republished, {} timers, {} released, {} held elsewhere, \
             {} interrupted compensations, {} failures, {} deleted by retention",
            self.examined,
            self.resumed,
            self.compensated,
            self.committed,
            self.resent,
            self.republished,
            self.timers,
            self.released,
            self.held_elsewhere,
            self.interrupted_compensations.len(),
            self.failures.len(),
            self.deleted
        )
    }
}

/// What recovery did with one execution.
#[derive(Debug, Default)]
struct Recovered {
    action: Action,
    republished: usize,
    resent: bool,
    timer: bool,
    interrupted: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Action {
    #[default]
    Nothing,
    Resumed,
    Compensated,
    Committed,
    Released,
}

/// How many ids one listing call returns.
const PAGE: usize = 256;

impl Inner {
    /// One sweep over every execution that needs recovery, then the retention setting.
    pub(super) async fn recover(self: &Arc<Self>) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        let mut after = None;
        loop {
            let page = match self.repository.list_recoverable(after, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "listing executions to recover failed");
                    report
                        .failures
                        .push((Uuid::nil(), format!("listing failed: {error}")));
                    break;
                }
            };
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            for id in page {
                self.recover_one(id, &mut report).await;
            }
        }
        if let Some(retention) = self.retention {
            let cutoff = now_ms().saturating_sub(super::duration_ms(retention));
            match self.repository.delete_finished_before(cutoff).await {
                Ok(deleted) => report.deleted = deleted,
                Err(error) => tracing::warn!(%error, "deleting old finished executions failed"),
            }
        }
        report
    }

    async fn recover_one(self: &Arc<Self>, id: Uuid, report: &mut RecoveryReport) {
        report.examined += 1;
        let _guard = self.locks.lock(id).await;
        if self.parked.contains(id) {
            // A run of this process waits for it: it is at rest and its timer is armed.
            return;
        }
        let record = match self.repository.load(id).await {
            Ok(record) => record,
            Err(RepositoryError::NotFound { .. }) => return,
            Err(error) => {
                tracing::error!(saga.id = %id, %error, "cannot recover an execution");
                report.failures.push((id, error.to_string()));
                return;
            }
        };
        if !record.needs_recovery() {
            return;
        }
        if self.held_elsewhere(&record).is_some() {
            report.held_elsewhere += 1;
            return;
        }
        let Some(saga) = self.sagas.get(&record.saga) else {
            let error = LoadError::UnknownSaga {
                id,
                saga: record.saga.clone(),
            };
            tracing::error!(saga.id = %id, %error, "cannot recover an execution");
            report.failures.push((id, error.to_string()));
            return;
        };
        match self.recover_execution(&*saga, record).await {
            Ok(recovered) => report.add(id, recovered),
            Err(error) => {
                tracing::error!(saga.id = %id, %error, "recovering an execution failed");
                report.failures.push((id, error.to_string()));
            }
        }
    }

    /// Recovers one stored execution of `saga` (see the module docs for the rule).
    async fn recover_execution(
        self: &Arc<Self>,
        saga: &dyn ErasedSaga,
        mut record: ExecutionRecord,
    ) -> Result<Recovered, SagaError> {
        let id = record.id;
        let version = record.version;
        let pending = std::mem::take(&mut record.pending);
        let held = record.owner.is_some();
        // Checked before anything is sent or stored: a changed definition leaves it untouched.
        let mut execution = saga.load(record)?;
        let execution = &mut *execution;
        let mut recovered = Recovered {
            republished: pending.len(),
            ..Recovered::default()
        };
        let env = &self.env;
        let mut outbox = Outbox::new();
        let mut advanced = Advanced::default();
        let autocommit = execution.settings().autocommit;
        // Rule 1. A paused execution whose command the broker refuses for good fails that step
        // and compensates (see `publish_paused`); nothing else is left to recover then.
        let stored = Stored {
            id,
            version,
            messages: pending,
        };
        if execution.status() == SagaStatus::Paused {
            self.publish_paused(execution, &mut outbox, stored, autocommit, &mut advanced)
                .await?;
            if execution.status() != SagaStatus::Paused {
                recovered.action = Action::Compensated;
                return Ok(recovered);
            }
        } else {
            self.publish(stored).await?;
        }
        let status = execution.status();
        if execution.rollback_interrupted() {
            // Rule 2.
            recovered.interrupted = execution.settle_interrupted_compensations();
            // A commit that failed (by hand or not) rejects whatever it had reserved.
            let reject_on_failure = (autocommit && status != SagaStatus::Finished)
                || execution.transaction() == TransactionState::Committing;
            self.store(execution, &mut outbox, Hold::Keep).await?;
            let result = match execution
                .rollback(env, &mut outbox, &mut Saver { inner: self })
                .await
            {
                Ok(()) => Ok(Progress::Finished),
                Err(error @ ExecutionError::RollbackFailed { .. }) => Err(error),
                Err(ExecutionError::AlreadyRolledBack { .. }) => {
                    execution.mark_errored();
                    Ok(Progress::Finished)
                }
                Err(error) => Err(error),
            };
            self.conclude(
                execution,
                &mut outbox,
                result,
                reject_on_failure,
                &mut advanced,
            )
            .await?;
            recovered.action = Action::Compensated;
        } else if matches!(status, SagaStatus::Created | SagaStatus::Running) {
            // Rule 3.
            self.store(execution, &mut outbox, Hold::Keep).await?;
            let result = execution
                .execute(None, env, &mut outbox, &mut Saver { inner: self })
                .await;
            self.conclude(execution, &mut outbox, result, autocommit, &mut advanced)
                .await?;
            recovered.action = Action::Resumed;
        } else if status == SagaStatus::Finished
            && execution.transaction() == TransactionState::Committing
        {
            // Rule 6.
            advanced.failure = self.commit(execution, &mut outbox).await?;
            recovered.action = Action::Committed;
        } else if held {
            // Rules 4 and 7.
            let mut resend_failure = None;
            if status == SagaStatus::Paused {
                match execution.resend_waiting(env, &mut outbox).await {
                    Ok(resent) => recovered.resent = resent,
                    Err(cause) => resend_failure = Some(cause),
                }
            }
            // Released either way: a request that cannot be built again must not keep the
            // execution held (its deadline, if any, still ends the wait).
            let stored = self.store(execution, &mut outbox, Hold::Release).await?;
            self.publish(stored).await?;
            if let Some(cause) = resend_failure {
                return Err(SagaError::Interrupted {
                    id,
                    reason: Interruption::ResendFailed(cause),
                });
            }
            recovered.action = Action::Released;
        }
        // Rule 5.
        if execution.status() == SagaStatus::Paused {
            if let (Some(deadline), Some(request)) =
                (execution.deadline_ms(), execution.waiting_request())
            {
                self.schedule_expiry(id, request, time_left(deadline, now_ms()));
                recovered.timer = true;
            }
        }
        if let Some(failure) = advanced.failure {
            tracing::info!(saga.id = %id, %failure, "a recovered execution failed");
        }
        Ok(recovered)
    }
}

/// Runs a recovery sweep every `interval` while the manager lives, until `stop` turns true (a sweep
/// under way finishes first): executions whose owner died are taken over once its lease runs out.
pub(super) async fn sweep_periodically(
    inner: Weak<Inner>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let report = inner.recover().await;
        if !report.is_empty() {
            tracing::info!(%report, "recovery sweep");
        }
    }
}
