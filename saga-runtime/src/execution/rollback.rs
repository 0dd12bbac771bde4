//! Rolling an execution back: its executed steps compensated in reverse order, each at most once,
//! with the intent of every top-level compensation saved before it runs.

use std::sync::Arc;

use super::checkpoint::{Checkpoint, NoCheckpoint};
use super::{ExecutionEnv, Outbox, SagaExecution, SagaStatus, StepStatus, engine};
use crate::context::Context;
use crate::error::ExecutionError;

impl<C: Context> SagaExecution<C> {
    /// Compensates the executed steps in reverse order (each at most once) and leaves the execution
    /// `errored`. A second rollback is an error and emits nothing. A failing compensation is recorded
    /// on its step, the others still run, and the result is [`ExecutionError::RollbackFailed`]; a
    /// later rollback retries only the failed ones.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn rollback(
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
        checkpoint: &mut dyn Checkpoint,
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
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) async fn rollback_step(
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

    /// Compensates the first `count` top-level steps in reverse order, each at most once: before a
    /// step's compensation runs, the step is marked `running-on-failure` and `checkpoint` saves the
    /// execution, so that after a crash the compensation is known to have (maybe) started and is
    /// never run a second time (see [`interrupted_compensations`](Self::settle_interrupted_compensations)).
    /// A compensation whose intent cannot be saved does not run; it fails like a failing handler and a
    /// later rollback retries it. Returns the names of the steps whose compensation failed.
    pub(super) async fn compensate_top_level(
        &mut self,
        count: usize,
        env: &ExecutionEnv,
        outbox: &mut Outbox,
        checkpoint: &mut dyn Checkpoint,
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
            if let Err(error) = saved {
                engine::compensation_failed(
                    step,
                    before,
                    format!("its compensation did not start: saving the intent failed: {error}"),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::BoxFuture;
    use crate::execution::testing::{Trail, env, local_saga};
    use crate::execution::{CheckpointError, ErasedExecution};

    /// A checkpoint that records the status of the first step at each save, and fails them all.
    #[derive(Default)]
    struct Refusing {
        seen: Vec<StepStatus>,
    }

    impl Checkpoint for Refusing {
        fn save<'a>(
            &'a mut self,
            execution: &'a mut dyn ErasedExecution,
            _outbox: &'a mut Outbox,
        ) -> BoxFuture<'a, Result<(), CheckpointError>> {
            let typed = execution
                .as_any()
                .downcast_ref::<SagaExecution<Trail>>()
                .expect("a trail saga");
            self.seen.push(typed.steps()[0].status);
            Box::pin(async { Err("the database is down".into()) })
        }
    }

    async fn finished() -> SagaExecution<Trail> {
        let mut execution = SagaExecution::new(local_saga(), Trail::default());
        execution
            .execute(None, &env(), &mut Outbox::new())
            .await
            .expect("finishes");
        execution
    }

    #[tokio::test]
    async fn a_compensation_whose_intent_cannot_be_saved_does_not_run() {
        let mut execution = finished().await;
        let mut checkpoint = Refusing::default();
        let error = execution
            .rollback_checkpointed(&env(), &mut Outbox::new(), &mut checkpoint)
            .await
            .expect_err("the compensation did not run");
        assert!(
            matches!(&error, ExecutionError::RollbackFailed { steps, .. } if steps == &["reserve"]),
            "{error:?}"
        );
        assert_eq!(
            checkpoint.seen,
            [StepStatus::RunningOnFailure],
            "the intent is saved with the step marked"
        );
        assert_eq!(execution.context().log, ["reserve"], "release never ran");
        let step = &execution.steps()[0];
        assert_eq!(step.status, StepStatus::ErroredOnFailure);
        assert_eq!(
            step.error.as_deref(),
            Some("its compensation did not start: saving the intent failed: the database is down")
        );
        assert!(!execution.already_rollback());
    }

    #[tokio::test]
    async fn a_rolled_back_execution_refuses_a_second_rollback() {
        let mut execution = finished().await;
        execution
            .rollback(&env(), &mut Outbox::new())
            .await
            .expect("compensates");
        assert_eq!(execution.status(), SagaStatus::Errored);
        let error = execution
            .rollback(&env(), &mut Outbox::new())
            .await
            .expect_err("a second rollback");
        assert!(matches!(error, ExecutionError::AlreadyRolledBack { .. }));
        assert_eq!(execution.context().log, ["reserve", "release"]);
    }
}
