//! The execution engine: the state machine of one saga execution.
//!
//! An execution holds data only (id, status, context, step executions); its code is the definition it
//! was made from. The engine never talks to the broker directly: the messages a step emits (commands,
//! compensations) are appended to an [`Outbox`], which the caller publishes after storing the new
//! state. That keeps "state stored" and "message sent" in the caller's hands, where a durable outbox
//! can make them atomic, and it keeps the engine free of I/O besides the handlers' own.

mod checkpoint;
mod engine;
mod record;
mod status;
mod step;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

pub(crate) use checkpoint::{Checkpoint, NoCheckpoint};
pub use record::ExecutionRecord;
pub use status::{SagaStatus, StepStatus};
pub use step::{InnerExecution, StepExecution};

use crate::context::Context;
use crate::definition::{IntoDefinition, SagaDefinition};
use crate::error::{ExecutionError, LoadError};
use crate::message::{BrokerMessage, Headers, SagaResponse, header};

/// Who runs the execution: the service name (it joins every transaction it runs) and the topic
/// replies to its commands go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionEnv {
    service: String,
    reply_topic: String,
}

impl ExecutionEnv {
    /// The environment of service `service`; replies go to `{service}Reply`.
    pub fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        let reply_topic = format!("{service}Reply");
        Self {
            service,
            reply_topic,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The reply topic.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }
}

/// The messages an execution emitted, in order, waiting to be published.
#[derive(Debug, Default)]
pub struct Outbox {
    messages: Vec<BrokerMessage>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pending messages.
    pub fn messages(&self) -> &[BrokerMessage] {
        &self.messages
    }

    /// Takes the pending messages out.
    pub fn drain(&mut self) -> Vec<BrokerMessage> {
        std::mem::take(&mut self.messages)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub(crate) fn push(&mut self, message: BrokerMessage) {
        self.messages.push(message);
    }

    /// Puts `messages` back in front of what is queued (they were taken out but not published).
    pub(crate) fn restore(&mut self, mut messages: Vec<BrokerMessage>) {
        if messages.is_empty() {
            return;
        }
        messages.append(&mut self.messages);
        self.messages = messages;
    }
}

/// Where an [`execute`](SagaExecution::execute) call left the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A remote step sent its command and waits for the reply.
    Paused,
    /// Every step completed.
    Finished,
}

/// Why a reply was not applied. The execution is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyRejection {
    /// No execution with the reply's id is known.
    UnknownExecution,
    /// The reply names another execution.
    WrongExecution,
    /// The execution already finished or errored; late replies change nothing.
    ExecutionEnded(SagaStatus),
    /// The execution is not waiting for any reply.
    NotWaiting,
    /// The reply answers a command that was already answered.
    Duplicate,
    /// The reply answers a command this execution never sent (or not the one it waits for).
    UnknownRequest,
}

impl std::fmt::Display for ReplyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownExecution => f.write_str("no such execution"),
            Self::WrongExecution => f.write_str("the reply names another execution"),
            Self::ExecutionEnded(status) => write!(f, "the execution is already {status}"),
            Self::NotWaiting => f.write_str("the execution is not waiting for a reply"),
            Self::Duplicate => f.write_str("the command was already answered"),
            Self::UnknownRequest => {
                f.write_str("the reply answers no command the execution waits for")
            }
        }
    }
}

/// Where the execution's transaction stands in the two-phase commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransactionState {
    /// Nothing decided yet.
    #[default]
    Open,
    /// The steps finished and the commit started: reservations may have been sent.
    Committing,
    /// Every participant was told to commit.
    Committed,
    /// The participants are (being) told to reject.
    Rejected,
}

/// Settings an execution keeps across pauses, so that whoever resumes it applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ExecutionSettings {
    pub(crate) autocommit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        Self {
            autocommit: true,
            timeout_ms: None,
        }
    }
}

/// One execution of a saga definition with a typed context `C`.
pub struct SagaExecution<C> {
    definition: Arc<SagaDefinition<C>>,
    id: Uuid,
    status: SagaStatus,
    context: C,
    steps: Vec<StepExecution>,
    already_rollback: bool,
    user: Option<String>,
    headers: Headers,
    pub(crate) settings: ExecutionSettings,
    pub(crate) deadline_ms: Option<u64>,
    pub(crate) transaction: TransactionState,
    pub(crate) version: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    /// Messages stored with the loaded state but not marked published: the next advance publishes
    /// them (again) before anything else, so that no store overwrites them unpublished.
    pub(crate) unpublished: Vec<BrokerMessage>,
}

impl<C: Context> SagaExecution<C> {
    /// A new execution (status `created`) of `definition` with a fresh id.
    pub fn new(definition: impl IntoDefinition<C>, context: C) -> Self {
        let now = now_ms();
        Self {
            definition: definition.into_definition(),
            id: Uuid::new_v4(),
            status: SagaStatus::Created,
            context,
            steps: Vec::new(),
            already_rollback: false,
            user: None,
            headers: Headers::new(),
            settings: ExecutionSettings::default(),
            deadline_ms: None,
            transaction: TransactionState::Open,
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
            unpublished: Vec::new(),
        }
    }

    /// Sets the id (before the execution runs).
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the acting user, sent as the `user` header of every command.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the headers of the message being handled when the saga started; commands inherit them
    /// (their `transactions` header nests this execution's id inside the inherited ones).
    #[must_use]
    pub fn with_inherited_headers(mut self, mut headers: Headers) -> Self {
        headers.remove(header::RELATED_SERVICES);
        self.headers = headers;
        self
    }
}

impl<C> SagaExecution<C> {
    /// The execution id (also the transaction id).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The definition.
    pub fn definition(&self) -> &Arc<SagaDefinition<C>> {
        &self.definition
    }

    /// The status.
    pub fn status(&self) -> SagaStatus {
        self.status
    }

    /// The context.
    pub fn context(&self) -> &C {
        &self.context
    }

    /// The context, to change it before the execution runs.
    pub fn context_mut(&mut self) -> &mut C {
        &mut self.context
    }

    /// Takes the context out.
    pub fn into_context(self) -> C {
        self.context
    }

    /// The executions of the steps that started, in definition order.
    pub fn steps(&self) -> &[StepExecution] {
        &self.steps
    }

    /// The step execution named `name`, if it started.
    pub fn step(&self, name: &str) -> Option<&StepExecution> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// The steps that completed (status `finished`).
    pub fn executed_steps(&self) -> impl Iterator<Item = &StepExecution> {
        self.steps
            .iter()
            .filter(|step| step.status == StepStatus::Finished)
    }

    /// The step that waits for a reply.
    pub fn paused_step(&self) -> Option<&StepExecution> {
        self.steps
            .last()
            .filter(|step| step.status == StepStatus::PausedByOnExecute)
    }

    /// Whether the execution was compensated.
    pub fn already_rollback(&self) -> bool {
        self.already_rollback
    }

    /// The acting user.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The inherited headers.
    pub fn inherited_headers(&self) -> &Headers {
        &self.headers
    }

    /// Where its transaction stands.
    pub fn transaction(&self) -> TransactionState {
        self.transaction
    }

    /// The version of the stored copy this execution was loaded from (0: never stored).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The transactions to reserve and commit: `(transaction id, service)` for this service and every
    /// service related to a step, recursing into conditional sub-sagas; sorted and deduplicated.
    ///
    /// A step that failed after its participant acted is included (its participants must be rejected).
    pub fn transactions(&self, env: &ExecutionEnv) -> Vec<(Uuid, String)> {
        fn collect(id: Uuid, steps: &[StepExecution], out: &mut BTreeSet<(Uuid, String)>) {
            for step in steps {
                if let Some(inner) = &step.inner {
                    collect(inner.id, &inner.steps, out);
                }
                for service in &step.related_services {
                    out.insert((id, service.clone()));
                }
            }
        }
        let mut out = BTreeSet::new();
        out.insert((self.id, env.service.clone()));
        collect(self.id, &self.steps, &mut out);
        out.into_iter().collect()
    }

    /// The services that joined the transaction (the service names of [`transactions`](Self::transactions)).
    pub fn related_services(&self, env: &ExecutionEnv) -> BTreeSet<String> {
        self.transactions(env)
            .into_iter()
            .map(|(_, service)| service)
            .collect()
    }
}

impl<C: Context> SagaExecution<C> {
    /// Runs the execution: hands `reply` to the paused step, then runs every step not yet run.
    ///
    /// A step failure compensates the executed steps (their messages go to `outbox`) and returns
    /// [`ExecutionError::StepFailed`] with the execution `errored`. A reply that does not fit (late,
    /// duplicate, for another command) returns [`ExecutionError::ReplyRejected`] and changes nothing.
    pub async fn execute(
        &mut self,
        reply: Option<SagaResponse>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<Progress, ExecutionError> {
        if let Some(reply) = &reply {
            self.check_reply(reply)?;
        } else {
            match self.status {
                SagaStatus::Finished | SagaStatus::Errored => {
                    return Err(ExecutionError::AlreadyExecuted {
                        id: self.id,
                        status: self.status,
                    });
                }
                SagaStatus::Paused => return Ok(Progress::Paused),
                SagaStatus::Created | SagaStatus::Running => {}
            }
        }
        let resume = reply.map(engine::Resume::Reply);
        self.advance(resume, env, outbox, &mut NoCheckpoint).await
    }

    /// [`execute`](Self::execute) with `checkpoint` called before each top-level compensation.
    pub(crate) async fn execute_checkpointed(
        &mut self,
        reply: Option<SagaResponse>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint<C>,
    ) -> Result<Progress, ExecutionError> {
        if let Some(reply) = &reply {
            self.check_reply(reply)?;
        } else if self.status.is_terminal() {
            return Err(ExecutionError::AlreadyExecuted {
                id: self.id,
                status: self.status,
            });
        } else if self.status == SagaStatus::Paused {
            return Ok(Progress::Paused);
        }
        let resume = reply.map(engine::Resume::Reply);
        self.advance(resume, env, outbox, checkpoint).await
    }

    /// Fails the paused step because its reply did not come in time (only if it still waits for
    /// command `request`): the step compensates itself (the participant may have acted), then the
    /// saga compensates the earlier steps. Returns [`ExecutionError::StepFailed`] when it did.
    pub async fn expire(
        &mut self,
        request: Uuid,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<Progress, ExecutionError> {
        if !self.is_waiting_for(request) {
            return Err(ExecutionError::ReplyRejected {
                id: self.id,
                reason: ReplyRejection::NotWaiting,
            });
        }
        self.advance(
            Some(engine::Resume::Timeout),
            env,
            outbox,
            &mut NoCheckpoint,
        )
        .await
    }

    /// [`expire`](Self::expire) with `checkpoint` called before each top-level compensation.
    pub(crate) async fn expire_checkpointed(
        &mut self,
        request: Uuid,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint<C>,
    ) -> Result<Progress, ExecutionError> {
        if !self.is_waiting_for(request) {
            return Err(ExecutionError::ReplyRejected {
                id: self.id,
                reason: ReplyRejection::NotWaiting,
            });
        }
        self.advance(Some(engine::Resume::Timeout), env, outbox, checkpoint)
            .await
    }

    /// Whether the execution is paused waiting for the reply to command `request`.
    pub(crate) fn is_waiting_for(&self, request: Uuid) -> bool {
        self.status == SagaStatus::Paused && self.waiting_request() == Some(request)
    }

    /// Compensates the executed steps in reverse order (each at most once) and leaves the execution
    /// `errored`. A second rollback is an error and emits nothing. A failing compensation is recorded
    /// on its step, the others still run, and the result is [`ExecutionError::RollbackFailed`]; a
    /// later rollback retries only the failed ones.
    pub async fn rollback(
        &mut self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<(), ExecutionError> {
        self.rollback_checkpointed(env, outbox, &mut NoCheckpoint)
            .await
    }

    /// [`rollback`](Self::rollback) with `checkpoint` called before each top-level compensation.
    pub(crate) async fn rollback_checkpointed(
        &mut self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint<C>,
    ) -> Result<(), ExecutionError> {
        if self.already_rollback {
            return Err(ExecutionError::AlreadyRolledBack {
                id: self.id,
                what: self.definition.name().to_owned(),
            });
        }
        let failed = self
            .compensate_top_level(self.steps.len(), env, outbox, checkpoint)
            .await;
        // A compensated saga is over, whatever it was before: late replies change nothing, and its
        // transaction is rejected, never committed.
        self.status = SagaStatus::Errored;
        self.touch();
        if failed.is_empty() {
            self.already_rollback = true;
            Ok(())
        } else {
            Err(ExecutionError::RollbackFailed {
                id: self.id,
                steps: failed,
            })
        }
    }

    /// Compensates one step: an error if it did not run to the point where it has an effect to undo
    /// (never started, or failed before completing: its own `on_failure` does not run then), or if
    /// it was already compensated. A remote step waiting for its reply can be compensated: its
    /// command was sent.
    pub async fn rollback_step(
        &mut self,
        name: &str,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<(), ExecutionError> {
        let definition = Arc::clone(&self.definition);
        let index = self
            .steps
            .iter()
            .position(|step| step.name == name)
            .filter(|&index| {
                let step = &self.steps[index];
                step.already_rollback
                    || matches!(
                        step.status,
                        StepStatus::Finished
                            | StepStatus::ErroredOnFailure
                            | StepStatus::PausedByOnExecute
                    )
            })
            .ok_or_else(|| ExecutionError::NotExecuted {
                id: self.id,
                step: name.to_owned(),
            })?;
        if self.steps[index].already_rollback {
            return Err(ExecutionError::AlreadyRolledBack {
                id: self.id,
                what: name.to_owned(),
            });
        }
        let mut run = engine::Run::new(self.id, self.user.as_deref(), env, &self.headers, outbox);
        let result = engine::compensate_step(
            &definition.steps()[index],
            &mut self.steps[index],
            &mut self.context,
            &mut run,
        )
        .await;
        self.touch();
        result.map_err(|_| ExecutionError::RollbackFailed {
            id: self.id,
            steps: vec![name.to_owned()],
        })
    }

    /// Marks a finished execution whose commit failed as `errored` (the caller compensates it).
    pub(crate) fn mark_errored(&mut self) {
        self.status = SagaStatus::Errored;
        self.touch();
    }

    /// The stored form.
    pub fn to_record(&self) -> Result<ExecutionRecord, serde_json::Error> {
        Ok(ExecutionRecord {
            id: self.id,
            saga: self.definition.name().to_owned(),
            fingerprint: self.definition.fingerprint(),
            status: self.status,
            context: serde_json::value::to_raw_value(&self.context)?,
            steps: self.steps.clone(),
            paused_step: self.paused_step().map(|step| step.name.clone()),
            already_rollback: self.already_rollback,
            user: self.user.clone(),
            headers: self.headers.clone(),
            settings: self.settings,
            deadline_ms: self.deadline_ms,
            transaction: self.transaction,
            version: self.version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            pending: Vec::new(),
            owner: None,
            lease_until_ms: None,
        })
    }

    /// Runs `f` on the stored form built without copying the step executions and headers: they are
    /// lent to the record and taken back afterwards (the store path of the manager, which fills in
    /// the outbox and the lease).
    pub(crate) async fn with_record<T, F>(&mut self, f: F) -> Result<T, serde_json::Error>
    where
        F: AsyncFnOnce(&mut ExecutionRecord) -> T,
    {
        let mut record = ExecutionRecord {
            id: self.id,
            saga: self.definition.name().to_owned(),
            fingerprint: self.definition.fingerprint(),
            status: self.status,
            context: serde_json::value::to_raw_value(&self.context)?,
            steps: Vec::new(),
            paused_step: self.paused_step().map(|step| step.name.clone()),
            already_rollback: self.already_rollback,
            user: self.user.clone(),
            headers: Headers::new(),
            settings: self.settings,
            deadline_ms: self.deadline_ms,
            transaction: self.transaction,
            version: self.version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            pending: Vec::new(),
            owner: None,
            lease_until_ms: None,
        };
        record.steps = std::mem::take(&mut self.steps);
        record.headers = std::mem::take(&mut self.headers);
        let result = f(&mut record).await;
        self.steps = record.steps;
        self.headers = record.headers;
        Ok(result)
    }

    /// Rebuilds an execution from its stored form, checking that it belongs to `definition`: same
    /// saga name, same fingerprint, and step executions that match the definition's steps.
    pub fn from_record(
        definition: impl IntoDefinition<C>,
        record: ExecutionRecord,
    ) -> Result<Self, LoadError> {
        let definition = definition.into_definition();
        record.check_against(&definition)?;
        let context = record.context::<C>().map_err(|error| LoadError::Corrupt {
            id: record.id,
            reason: format!("the context does not decode: {error}"),
        })?;
        Ok(Self {
            definition,
            id: record.id,
            status: record.status,
            context,
            steps: record.steps,
            already_rollback: record.already_rollback,
            user: record.user,
            headers: record.headers,
            settings: record.settings,
            deadline_ms: record.deadline_ms,
            transaction: record.transaction,
            version: record.version,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            unpublished: record.pending,
        })
    }

    /// The stored form as JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        Ok(self.to_record()?.to_json())
    }

    /// Rebuilds an execution from JSON written by [`to_json`](Self::to_json).
    pub fn from_json(definition: impl IntoDefinition<C>, json: &str) -> Result<Self, LoadError> {
        let record = ExecutionRecord::from_json(json)?;
        Self::from_record(definition, record)
    }

    /// The command a remote step (possibly inside a conditional) waits for the reply to.
    pub fn waiting_request(&self) -> Option<Uuid> {
        fn find(steps: &[StepExecution]) -> Option<Uuid> {
            let last = steps.last()?;
            if last.status != StepStatus::PausedByOnExecute {
                return None;
            }
            match &last.inner {
                Some(inner) => find(&inner.steps),
                None => last.request_id,
            }
        }
        find(&self.steps)
    }

    pub(crate) fn check_reply(&self, reply: &SagaResponse) -> Result<(), ExecutionError> {
        let reject = |reason| {
            Err(ExecutionError::ReplyRejected {
                id: self.id,
                reason,
            })
        };
        if reply.saga() != self.id {
            return reject(ReplyRejection::WrongExecution);
        }
        if self.status.is_terminal() {
            return reject(ReplyRejection::ExecutionEnded(self.status));
        }
        if self.waiting_request() == Some(reply.request()) {
            return Ok(());
        }
        if answered(&self.steps, reply.request()) {
            return reject(ReplyRejection::Duplicate);
        }
        if self.status != SagaStatus::Paused {
            return reject(ReplyRejection::NotWaiting);
        }
        reject(ReplyRejection::UnknownRequest)
    }

    async fn advance(
        &mut self,
        resume: Option<engine::Resume>,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint<C>,
    ) -> Result<Progress, ExecutionError> {
        self.status = SagaStatus::Running;
        self.deadline_ms = None;
        let definition = Arc::clone(&self.definition);
        let mut run = engine::Run::new(self.id, self.user.as_deref(), env, &self.headers, outbox);
        let outcome = engine::run_level(
            definition.steps(),
            &mut self.steps,
            &mut self.context,
            resume,
            &mut run,
        )
        .await;
        let result = match outcome {
            engine::LevelOutcome::Done => {
                self.status = SagaStatus::Finished;
                Ok(Progress::Finished)
            }
            engine::LevelOutcome::Paused => {
                self.status = SagaStatus::Paused;
                Ok(Progress::Paused)
            }
            engine::LevelOutcome::Failed(failure) => {
                let mut failed = failure.compensation_failures;
                let count = engine::steps_to_compensate_after_failure(&self.steps);
                failed.extend(
                    self.compensate_top_level(count, env, outbox, checkpoint)
                        .await,
                );
                self.already_rollback = failed.is_empty();
                self.status = SagaStatus::Errored;
                let mut message = failure.message;
                if !failed.is_empty() {
                    message.push_str(&format!(
                        "; compensation also failed for {}",
                        failed.join(", ")
                    ));
                }
                Err(ExecutionError::StepFailed {
                    id: self.id,
                    step: failure.step,
                    status: failure.status,
                    message,
                })
            }
        };
        self.touch();
        result
    }

    /// Compensates the first `count` top-level steps in reverse order, each at most once: before a
    /// step's compensation runs, the step is marked `running-on-failure` and `checkpoint` saves the
    /// execution, so that after a crash the compensation is known to have (maybe) started and is
    /// never run a second time (see [`interrupted_compensations`](Self::settle_interrupted_compensations)).
    /// A compensation whose intent cannot be saved does not run; it fails like a failing handler and a
    /// later rollback retries it. Returns the names of the steps whose compensation failed.
    async fn compensate_top_level(
        &mut self,
        count: usize,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint<C>,
    ) -> Vec<String> {
        let definition = Arc::clone(&self.definition);
        let mut failed = Vec::new();
        for index in (0..count).rev() {
            let step = &self.steps[index];
            if step.already_rollback || !engine::has_effect(step) {
                continue;
            }
            let before = step.status;
            self.steps[index].status = StepStatus::RunningOnFailure;
            self.touch();
            let saved = checkpoint.save(self, outbox).await;
            let step = &mut self.steps[index];
            step.status = before;
            if let Err(message) = saved {
                engine::compensation_failed(
                    step,
                    before,
                    format!("its compensation did not start: saving the intent failed: {message}"),
                );
                failed.push(step.name.clone());
                continue;
            }
            let mut run =
                engine::Run::new(self.id, self.user.as_deref(), env, &self.headers, outbox);
            let result = engine::compensate_step(
                &definition.steps()[index],
                &mut self.steps[index],
                &mut self.context,
                &mut run,
            )
            .await;
            crate::faults::reach("after-compensation");
            if result.is_err() {
                failed.push(self.steps[index].name.clone());
            }
        }
        failed
    }

    /// Whether the execution was stored in the middle of a rollback: a top-level compensation under
    /// way (a step marked `running-on-failure`), or a running execution with a failed or compensated
    /// step (its rollback had started).
    pub(crate) fn rollback_interrupted(&self) -> bool {
        use StepStatus as S;
        self.steps.iter().any(|step| {
            step.status == S::RunningOnFailure
                || (self.status == SagaStatus::Running
                    && (step.already_rollback
                        || matches!(
                            step.status,
                            S::ErroredOnExecute
                                | S::ErroredByOnExecute
                                | S::ErroredOnFailure
                                | S::ErroredOnSuccess
                                | S::ErroredOnError
                        )))
        })
    }

    /// Recovery: queues again the command the waiting remote step sent (its request built again
    /// from the context, with the original message id, so that receivers see a duplicate). Returns
    /// whether there was one.
    pub(crate) async fn resend_waiting(
        &self,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
    ) -> Result<bool, String> {
        let mut run = engine::Run::new(self.id, self.user.as_deref(), env, &self.headers, outbox);
        engine::resend_level(
            self.definition.steps(),
            &self.steps,
            &self.context,
            &mut run,
        )
        .await
    }

    /// Recovery: the compensations that were under way when the process stopped may or may not have
    /// run. Compensations run at most once, so they are not run again: each such step is recorded as
    /// compensated with an `errored-on-failure` status and an error saying so. Returns their names.
    pub(crate) fn settle_interrupted_compensations(&mut self) -> Vec<String> {
        let mut settled = Vec::new();
        for step in &mut self.steps {
            if step.status == StepStatus::RunningOnFailure {
                step.status = StepStatus::ErroredOnFailure;
                step.already_rollback = true;
                step.error = Some(
                    "its compensation was interrupted by a stop of the process; it may have run, \
                     and compensations run at most once, so it was not run again"
                        .to_owned(),
                );
                settled.push(step.name.clone());
            }
        }
        if !settled.is_empty() {
            self.touch();
        }
        settled
    }

    pub(crate) fn touch(&mut self) {
        self.updated_at_ms = now_ms();
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for SagaExecution<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaExecution")
            .field("saga", &self.definition.name())
            .field("id", &self.id)
            .field("status", &self.status)
            .field("context", &self.context)
            .field("steps", &self.steps)
            .field("already_rollback", &self.already_rollback)
            .field("user", &self.user)
            .field("version", &self.version)
            .finish()
    }
}

/// Whether some step (recursively) already received the reply to command `request`.
fn answered(steps: &[StepExecution], request: Uuid) -> bool {
    steps.iter().any(|step| {
        (step.request_id == Some(request) && step.status != StepStatus::PausedByOnExecute)
            || step
                .inner
                .as_ref()
                .is_some_and(|inner| answered(&inner.steps, request))
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
