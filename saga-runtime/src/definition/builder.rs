//! The saga builder: steps added one by one, each with its handlers, validated by `commit`.

use std::sync::Arc;

use super::handler::{
    ConditionCall, Handler, LocalCall, Plain, ReplyCall, RequestCall, WithParams,
};
use super::{
    ConditionFn, ConditionFnWith, ConditionHandler, ConditionalStep, DefinitionError, Fingerprint,
    IfThen, IntoDefinition, LocalFn, LocalFnWith, LocalHandler, LocalStep, RemoteStep, ReplyFn,
    ReplyFnWith, ReplyHandler, RequestFn, RequestFnWith, RequestHandler, SagaDefinition,
    StepDefinition,
};
use crate::context::Context;

/// The saga builder. See the [module documentation](crate::definition) for the rules it enforces.
#[must_use = "a saga builder does nothing until `commit()`"]
pub struct Saga<C> {
    name: String,
    steps: Vec<StepDefinition<C>>,
    error: Option<DefinitionError>,
}

impl<C: Context> Saga<C> {
    /// A new saga with a persisted name (`[A-Za-z0-9_.:-]`, 1 to 128 characters).
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let error =
            (!is_valid_name(&name)).then(|| DefinitionError::InvalidName { name: name.clone() });
        Self {
            name,
            steps: Vec::new(),
            error,
        }
    }

    /// Starts a local step named `name`.
    pub fn local_step(self, name: impl Into<String>) -> LocalStepBuilder<C> {
        LocalStepBuilder {
            saga: self,
            name: name.into(),
            on_execute: None,
            on_failure: None,
        }
    }

    /// Starts a remote step named `name`.
    pub fn remote_step(self, name: impl Into<String>) -> RemoteStepBuilder<C> {
        RemoteStepBuilder {
            saga: self,
            name: name.into(),
            on_execute: None,
            on_success: None,
            on_error: None,
            on_failure: None,
        }
    }

    /// Starts a conditional step named `name`.
    pub fn conditional_step(self, name: impl Into<String>) -> ConditionalStepBuilder<C> {
        ConditionalStepBuilder {
            saga: self,
            name: name.into(),
            alternatives: Vec::new(),
            else_then: None,
        }
    }

    /// Validates the saga and returns its immutable definition.
    pub fn commit(self) -> Result<SagaDefinition<C>, DefinitionError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.steps.is_empty() {
            return Err(DefinitionError::EmptySaga { saga: self.name });
        }
        let fingerprint = Fingerprint::of(&self.name, &self.steps);
        Ok(SagaDefinition {
            name: self.name,
            steps: self.steps,
            fingerprint,
        })
    }

    fn fail(&mut self, error: DefinitionError) {
        self.error.get_or_insert(error);
    }

    fn push(mut self, step: Result<StepDefinition<C>, DefinitionError>) -> Self {
        match step {
            Ok(step) => {
                if !is_valid_name(step.name()) {
                    self.fail(DefinitionError::InvalidName {
                        name: step.name().to_owned(),
                    });
                } else if self.steps.iter().any(|known| known.name() == step.name()) {
                    let error = DefinitionError::DuplicateStepName {
                        saga: self.name.clone(),
                        step: step.name().to_owned(),
                    };
                    self.fail(error);
                }
                self.steps.push(step);
            }
            Err(error) => self.fail(error),
        }
        self
    }
}

/// Whether `name` may be persisted as a saga or step name.
fn is_valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Sets a handler slot of step `step`, recording `error(saga, step)` if it was set already.
fn set_once<H: ?Sized>(
    saga: &mut Saga<impl Context>,
    step: &str,
    slot: &mut Option<Handler<H>>,
    handler: Handler<H>,
    error: fn(String, String) -> DefinitionError,
) {
    if slot.is_some() {
        let error = error(saga.name.clone(), step.to_owned());
        saga.fail(error);
    } else {
        *slot = Some(handler);
    }
}

/// The methods that close the current step and continue with the saga, shared by all step builders.
macro_rules! continue_saga {
    ($builder:ident) => {
        impl<C: Context> $builder<C> {
            /// Closes this step and starts a local step.
            pub fn local_step(self, name: impl Into<String>) -> LocalStepBuilder<C> {
                self.end().local_step(name)
            }

            /// Closes this step and starts a remote step.
            pub fn remote_step(self, name: impl Into<String>) -> RemoteStepBuilder<C> {
                self.end().remote_step(name)
            }

            /// Closes this step and starts a conditional step.
            pub fn conditional_step(self, name: impl Into<String>) -> ConditionalStepBuilder<C> {
                self.end().conditional_step(name)
            }

            /// Closes this step, validates the saga and returns its definition.
            pub fn commit(self) -> Result<SagaDefinition<C>, DefinitionError> {
                self.end().commit()
            }

            /// Closes this step and returns the saga builder (to add steps in a loop, or from
            /// code that only knows the saga).
            pub fn end_step(self) -> Saga<C> {
                self.end()
            }
        }
    };
}

/// Builds a local step. Finish it by starting another step or with `commit()`.
#[must_use = "a step builder does nothing until `commit()`"]
pub struct LocalStepBuilder<C> {
    saga: Saga<C>,
    name: String,
    on_execute: Option<Handler<dyn LocalCall<C>>>,
    on_failure: Option<Handler<dyn LocalCall<C>>>,
}

impl<C: Context> LocalStepBuilder<C> {
    /// The step's code: `async fn(&mut C) -> Result<(), StepError>`.
    pub fn on_execute<F: LocalHandler<C>>(self, f: F) -> Self {
        self.set_execute(local(f))
    }

    /// `on_execute` with fixed parameters: `async fn(&mut C, &P) -> Result<(), StepError>`.
    pub fn on_execute_with<P, F>(self, f: F, params: P) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> LocalFnWith<'a, C, P>,
    {
        self.set_execute(local_with(f, params))
    }

    /// The compensation: `async fn(&mut C) -> Result<(), StepError>`.
    pub fn on_failure<F: LocalHandler<C>>(self, f: F) -> Self {
        self.set_failure(local(f))
    }

    /// `on_failure` with fixed parameters.
    pub fn on_failure_with<P, F>(self, f: F, params: P) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> LocalFnWith<'a, C, P>,
    {
        self.set_failure(local_with(f, params))
    }

    fn set_execute(mut self, handler: Handler<dyn LocalCall<C>>) -> Self {
        let slot = &mut self.on_execute;
        set_once(&mut self.saga, &self.name, slot, handler, |saga, step| {
            DefinitionError::MultipleOnExecute { saga, step }
        });
        self
    }

    fn set_failure(mut self, handler: Handler<dyn LocalCall<C>>) -> Self {
        let slot = &mut self.on_failure;
        set_once(&mut self.saga, &self.name, slot, handler, |saga, step| {
            DefinitionError::MultipleOnFailure { saga, step }
        });
        self
    }

    fn end(self) -> Saga<C> {
        let saga_name = self.saga.name.clone();
        let step = match (self.on_execute, self.on_failure) {
            (Some(on_execute), on_failure) => Ok(StepDefinition::Local(LocalStep {
                name: self.name,
                on_execute,
                on_failure,
            })),
            (None, None) => Err(DefinitionError::EmptyStep {
                saga: saga_name,
                step: self.name,
            }),
            (None, Some(_)) => Err(DefinitionError::UndefinedOnExecute {
                saga: saga_name,
                step: self.name,
            }),
        };
        self.saga.push(step)
    }
}

continue_saga!(LocalStepBuilder);

/// Builds a remote step. Finish it by starting another step or with `commit()`.
#[must_use = "a step builder does nothing until `commit()`"]
pub struct RemoteStepBuilder<C> {
    saga: Saga<C>,
    name: String,
    on_execute: Option<Handler<dyn RequestCall<C>>>,
    on_success: Option<Handler<dyn ReplyCall<C>>>,
    on_error: Option<Handler<dyn ReplyCall<C>>>,
    on_failure: Option<Handler<dyn RequestCall<C>>>,
}

impl<C: Context> RemoteStepBuilder<C> {
    /// Builds the command: `async fn(&C) -> Result<SagaRequest, StepError>`.
    pub fn on_execute<F: RequestHandler<C>>(self, f: F) -> Self {
        self.set_execute(request(f))
    }

    /// `on_execute` with fixed parameters: `async fn(&C, &P) -> Result<SagaRequest, StepError>`.
    pub fn on_execute_with<P, F>(self, f: F, params: P) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> RequestFnWith<'a, C, P>,
    {
        self.set_execute(request_with(f, params))
    }

    /// Handles a SUCCESS reply: `async fn(&mut C, SagaResponse) -> Result<(), StepError>`.
    pub fn on_success<F: ReplyHandler<C>>(self, f: F) -> Self {
        self.set_success(reply(f))
    }

    /// `on_success` with fixed parameters.
    pub fn on_success_with<P, F>(self, f: F, params: P) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> ReplyFnWith<'a, C, P>,
    {
        self.set_success(reply_with(f, params))
    }

    /// Handles an ERROR reply: `async fn(&mut C, SagaResponse) -> Result<(), StepError>`. Without it,
    /// an ERROR reply fails the step.
    pub fn on_error<F: ReplyHandler<C>>(self, f: F) -> Self {
        self.set_error(reply(f))
    }

    /// `on_error` with fixed parameters.
    pub fn on_error_with<P, F>(self, f: F, params: P) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> ReplyFnWith<'a, C, P>,
    {
        self.set_error(reply_with(f, params))
    }

    /// Builds the compensating command: `async fn(&C) -> Result<SagaRequest, StepError>`.
    pub fn on_failure<F: RequestHandler<C>>(self, f: F) -> Self {
        self.set_failure(request(f))
    }

    /// `on_failure` with fixed parameters.
    pub fn on_failure_with<P, F>(self, f: F, params: P) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> RequestFnWith<'a, C, P>,
    {
        self.set_failure(request_with(f, params))
    }

    fn set_execute(mut self, handler: Handler<dyn RequestCall<C>>) -> Self {
        let slot = &mut self.on_execute;
        set_once(&mut self.saga, &self.name, slot, handler, |saga, step| {
            DefinitionError::MultipleOnExecute { saga, step }
        });
        self
    }

    fn set_success(mut self, handler: Handler<dyn ReplyCall<C>>) -> Self {
        let slot = &mut self.on_success;
        set_once(&mut self.saga, &self.name, slot, handler, |saga, step| {
            DefinitionError::MultipleOnSuccess { saga, step }
        });
        self
    }

    fn set_error(mut self, handler: Handler<dyn ReplyCall<C>>) -> Self {
        let slot = &mut self.on_error;
        set_once(&mut self.saga, &self.name, slot, handler, |saga, step| {
            DefinitionError::MultipleOnError { saga, step }
        });
        self
    }

    fn set_failure(mut self, handler: Handler<dyn RequestCall<C>>) -> Self {
        let slot = &mut self.on_failure;
        set_once(&mut self.saga, &self.name, slot, handler, |saga, step| {
            DefinitionError::MultipleOnFailure { saga, step }
        });
        self
    }

    fn end(self) -> Saga<C> {
        let saga_name = self.saga.name.clone();
        let any_handler =
            self.on_success.is_some() || self.on_error.is_some() || self.on_failure.is_some();
        let step = match self.on_execute {
            Some(on_execute) => Ok(StepDefinition::Remote(RemoteStep {
                name: self.name,
                on_execute,
                on_success: self.on_success,
                on_error: self.on_error,
                on_failure: self.on_failure,
            })),
            None if any_handler => Err(DefinitionError::UndefinedOnExecute {
                saga: saga_name,
                step: self.name,
            }),
            None => Err(DefinitionError::EmptyStep {
                saga: saga_name,
                step: self.name,
            }),
        };
        self.saga.push(step)
    }
}

continue_saga!(RemoteStepBuilder);

/// Builds a conditional step. Finish it by starting another step or with `commit()`.
#[must_use = "a step builder does nothing until `commit()`"]
pub struct ConditionalStepBuilder<C> {
    saga: Saga<C>,
    name: String,
    alternatives: Vec<IfThen<C>>,
    else_then: Option<Arc<SagaDefinition<C>>>,
}

impl<C: Context> ConditionalStepBuilder<C> {
    /// Adds an alternative: when `condition` (`async fn(&C) -> Result<bool, StepError>`) holds and no
    /// earlier alternative did, `saga` runs.
    pub fn if_then<F>(self, condition: F, saga: impl IntoDefinition<C>) -> Self
    where
        F: ConditionHandler<C>,
    {
        self.add_if(condition_handler(condition), saga.into_definition())
    }

    /// `if_then` with a condition that takes fixed parameters.
    pub fn if_then_with<P, F>(self, condition: F, params: P, saga: impl IntoDefinition<C>) -> Self
    where
        P: Send + Sync + 'static,
        F: for<'a> ConditionFnWith<'a, C, P>,
    {
        let handler = Handler {
            name: Handler::<()>::name_of::<F>(),
            call: Box::new(WithParams(condition, params)) as Box<dyn ConditionCall<C>>,
        };
        self.add_if(handler, saga.into_definition())
    }

    /// The alternative that runs when no condition holds (at most one).
    pub fn else_then(mut self, saga: impl IntoDefinition<C>) -> Self {
        if self.else_then.is_some() {
            let error = DefinitionError::MultipleElseThen {
                saga: self.saga.name.clone(),
                step: self.name.clone(),
            };
            self.saga.fail(error);
        } else {
            self.else_then = Some(saga.into_definition());
        }
        self
    }

    fn add_if(
        mut self,
        condition: Handler<dyn ConditionCall<C>>,
        saga: Arc<SagaDefinition<C>>,
    ) -> Self {
        self.alternatives.push(IfThen { condition, saga });
        self
    }

    fn end(self) -> Saga<C> {
        let step = if self.alternatives.is_empty() && self.else_then.is_none() {
            Err(DefinitionError::NoAlternative {
                saga: self.saga.name.clone(),
                step: self.name,
            })
        } else {
            Ok(StepDefinition::Conditional(ConditionalStep {
                name: self.name,
                alternatives: self.alternatives,
                else_then: self.else_then,
            }))
        };
        self.saga.push(step)
    }
}

continue_saga!(ConditionalStepBuilder);

fn local<C: Context, F: for<'a> LocalFn<'a, C>>(f: F) -> Handler<dyn LocalCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(Plain(f)),
    }
}

fn local_with<C: Context, P: Send + Sync + 'static, F: for<'a> LocalFnWith<'a, C, P>>(
    f: F,
    params: P,
) -> Handler<dyn LocalCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(WithParams(f, params)),
    }
}

fn request<C: Context, F: for<'a> RequestFn<'a, C>>(f: F) -> Handler<dyn RequestCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(Plain(f)),
    }
}

fn request_with<C: Context, P: Send + Sync + 'static, F: for<'a> RequestFnWith<'a, C, P>>(
    f: F,
    params: P,
) -> Handler<dyn RequestCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(WithParams(f, params)),
    }
}

fn reply<C: Context, F: for<'a> ReplyFn<'a, C>>(f: F) -> Handler<dyn ReplyCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(Plain(f)),
    }
}

fn reply_with<C: Context, P: Send + Sync + 'static, F: for<'a> ReplyFnWith<'a, C, P>>(
    f: F,
    params: P,
) -> Handler<dyn ReplyCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(WithParams(f, params)),
    }
}

fn condition_handler<C: Context, F: for<'a> ConditionFn<'a, C>>(
    f: F,
) -> Handler<dyn ConditionCall<C>> {
    Handler {
        name: Handler::<()>::name_of::<F>(),
        call: Box::new(Plain(f)),
    }
}
