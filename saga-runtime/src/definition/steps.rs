//! The steps of a definition: local, remote and conditional, and what an execution stores of them.

use std::fmt;
use std::sync::Arc;

use super::SagaDefinition;
use super::handler::{ConditionCall, Handler, LocalCall, ReplyCall, RequestCall};

/// The kind of a step, as stored in executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Runs code in this service.
    Local,
    /// Sends a command and waits for the reply.
    Remote,
    /// Chooses a sub-saga at run time.
    Conditional,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Conditional => "conditional",
        })
    }
}

/// One step of a definition.
pub enum StepDefinition<C> {
    /// A local step.
    Local(LocalStep<C>),
    /// A remote step.
    Remote(RemoteStep<C>),
    /// A conditional step.
    Conditional(ConditionalStep<C>),
}

impl<C> StepDefinition<C> {
    /// The step's persisted name.
    pub fn name(&self) -> &str {
        match self {
            Self::Local(step) => &step.name,
            Self::Remote(step) => &step.name,
            Self::Conditional(step) => &step.name,
        }
    }

    /// The step's kind.
    pub fn kind(&self) -> StepKind {
        match self {
            Self::Local(_) => StepKind::Local,
            Self::Remote(_) => StepKind::Remote,
            Self::Conditional(_) => StepKind::Conditional,
        }
    }

    /// The names of the handlers this step has, by slot (`on_execute`, `on_failure`, ...).
    pub fn handlers(&self) -> Vec<(&'static str, &'static str)> {
        fn add<H: ?Sized>(
            out: &mut Vec<(&'static str, &'static str)>,
            slot: &'static str,
            handler: Option<&Handler<H>>,
        ) {
            if let Some(handler) = handler {
                out.push((slot, handler.name));
            }
        }
        let mut out = Vec::new();
        match self {
            Self::Local(step) => {
                add(&mut out, "on_execute", Some(&step.on_execute));
                add(&mut out, "on_failure", step.on_failure.as_ref());
            }
            Self::Remote(step) => {
                add(&mut out, "on_execute", Some(&step.on_execute));
                add(&mut out, "on_success", step.on_success.as_ref());
                add(&mut out, "on_error", step.on_error.as_ref());
                add(&mut out, "on_failure", step.on_failure.as_ref());
            }
            Self::Conditional(step) => {
                for alternative in &step.alternatives {
                    add(&mut out, "if_then", Some(&alternative.condition));
                }
            }
        }
        out
    }
}

impl<C> fmt::Debug for StepDefinition<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("StepDefinition");
        debug
            .field("kind", &self.kind())
            .field("name", &self.name());
        debug.field("handlers", &self.handlers());
        if let Self::Conditional(step) = self {
            let subs: Vec<&str> = step
                .alternatives
                .iter()
                .map(|alternative| alternative.saga.name())
                .collect();
            debug.field("if_then", &subs);
            debug.field(
                "else_then",
                &step.else_then.as_ref().map(|saga| saga.name()),
            );
        }
        debug.finish()
    }
}

/// A local step: `on_execute` runs here; `on_failure` undoes it.
pub struct LocalStep<C> {
    pub(crate) name: String,
    pub(crate) on_execute: Handler<dyn LocalCall<C>>,
    pub(crate) on_failure: Option<Handler<dyn LocalCall<C>>>,
}

/// A remote step: `on_execute` builds the command; the reply goes to `on_success` or `on_error`;
/// `on_failure` builds the compensating command.
pub struct RemoteStep<C> {
    pub(crate) name: String,
    pub(crate) on_execute: Handler<dyn RequestCall<C>>,
    pub(crate) on_success: Option<Handler<dyn ReplyCall<C>>>,
    pub(crate) on_error: Option<Handler<dyn ReplyCall<C>>>,
    pub(crate) on_failure: Option<Handler<dyn RequestCall<C>>>,
}

/// A conditional step: the first alternative whose condition holds runs its sub-saga; otherwise the
/// `else_then` sub-saga, if any.
pub struct ConditionalStep<C> {
    pub(crate) name: String,
    pub(crate) alternatives: Vec<IfThen<C>>,
    pub(crate) else_then: Option<Arc<SagaDefinition<C>>>,
}

/// One `if_then` alternative.
pub(crate) struct IfThen<C> {
    pub(crate) condition: Handler<dyn ConditionCall<C>>,
    pub(crate) saga: Arc<SagaDefinition<C>>,
}

impl<C> ConditionalStep<C> {
    /// The sub-saga of the branch recorded in an execution.
    pub(crate) fn branch_saga(&self, branch: Branch) -> Option<&Arc<SagaDefinition<C>>> {
        match branch {
            Branch::If(index) => self.alternatives.get(index).map(|alt| &alt.saga),
            Branch::Else => self.else_then.as_ref(),
            Branch::NoMatch => None,
        }
    }
}

/// The alternative a conditional step chose, remembered so that it is never re-evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "testkit", visibility::make(pub))]
pub(crate) enum Branch {
    /// The `if_then` alternative at this index.
    If(usize),
    /// The `else_then` alternative.
    Else,
    /// No condition held and there is no `else_then`: the step did nothing.
    NoMatch,
}
