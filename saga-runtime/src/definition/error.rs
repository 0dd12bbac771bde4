//! The definition rules a saga can break, one variant each.

/// A saga definition that breaks one of the definition rules.
///
/// The builder collects the first mistake and reports it from `commit()`, so a chain of builder calls
/// does not need a `?` after every call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// A saga needs at least one step.
    #[error("saga `{saga}` has no steps: a saga needs at least one step")]
    EmptySaga {
        /// The saga's name.
        saga: String,
    },
    /// A step was added without any handler.
    #[error("step `{step}` of saga `{saga}` has no handler: a step needs at least one")]
    EmptyStep {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A local or remote step has handlers but no `on_execute`.
    #[error("step `{step}` of saga `{saga}` has no `on_execute` handler")]
    UndefinedOnExecute {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_execute` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_execute` twice")]
    MultipleOnExecute {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_failure` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_failure` twice")]
    MultipleOnFailure {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_success` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_success` twice")]
    MultipleOnSuccess {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// `on_error` was set twice on one step.
    #[error("step `{step}` of saga `{saga}` sets `on_error` twice")]
    MultipleOnError {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A conditional step has two `else_then` alternatives.
    #[error("conditional step `{step}` of saga `{saga}` has more than one `else_then`")]
    MultipleElseThen {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A conditional step has neither `if_then` nor `else_then`.
    #[error(
        "conditional step `{step}` of saga `{saga}` has no alternative: add `if_then` or `else_then`"
    )]
    NoAlternative {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// Two steps of one saga have the same name; executions identify steps by name.
    #[error(
        "saga `{saga}` has two steps named `{step}`: step names identify steps in stored executions"
    )]
    DuplicateStepName {
        /// The saga's name.
        saga: String,
        /// The repeated step name.
        step: String,
    },
    /// A saga or step name is empty or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error(
        "`{name}` is not a valid persisted name: use 1 to 128 characters of `A-Z a-z 0-9 _ - . :`"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
}
