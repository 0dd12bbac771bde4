//! Definition rules (behaviour reference, section 1): each broken rule yields its own
//! `DefinitionError` variant naming the saga and step; the fingerprint covers the step graph and
//! nothing else; handler parameters reach their handler on every call.

use std::sync::Arc;

use saga_runtime::broker::BrokerMessage;
use saga_runtime::definition::Fingerprint;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::Harness;
use serde_json::json;

/// The context of the sagas under test: a log of the handlers that ran and a running total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Ledger {
    log: Vec<String>,
    total: i64,
}

async fn noop(_: &mut Ledger) -> Result<(), StepError> {
    Ok(())
}

async fn other_noop(_: &mut Ledger) -> Result<(), StepError> {
    Ok(())
}

async fn request(_: &Ledger) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("Do"))
}

async fn other_request(_: &Ledger) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("DoSomethingElse"))
}

async fn on_reply(_: &mut Ledger, _: SagaResponse) -> Result<(), StepError> {
    Ok(())
}

async fn always(_: &Ledger) -> Result<bool, StepError> {
    Ok(true)
}

async fn never(_: &Ledger) -> Result<bool, StepError> {
    Ok(false)
}

/// A valid one-step saga, to use as a conditional's sub-saga.
fn sub_saga(name: &str) -> Arc<SagaDefinition<Ledger>> {
    Arc::new(
        Saga::new(name)
            .local_step("inner")
            .on_execute(noop)
            .commit()
            .expect("a valid sub-saga"),
    )
}

/// Checks that `error` is `expected` and that its message names every one of `names` in backticks.
fn assert_error(
    result: Result<SagaDefinition<Ledger>, DefinitionError>,
    expected: DefinitionError,
    names: &[&str],
) {
    let error = result.expect_err("the definition must be rejected");
    assert_eq!(error, expected);
    let message = error.to_string();
    for name in names {
        assert!(
            message.contains(&format!("`{name}`")),
            "the message {message:?} does not name `{name}`"
        );
    }
}

fn step_error(
    variant: fn(String, String) -> DefinitionError,
    saga: &str,
    step: &str,
) -> DefinitionError {
    variant(saga.to_owned(), step.to_owned())
}

#[test]
fn a_saga_without_steps_is_empty_saga() {
    assert_error(
        Saga::<Ledger>::new("nothing").commit(),
        DefinitionError::EmptySaga {
            saga: "nothing".into(),
        },
        &["nothing"],
    );
}

#[test]
fn a_local_step_without_handlers_is_empty_step() {
    assert_error(
        Saga::<Ledger>::new("s").local_step("bare").commit(),
        DefinitionError::EmptyStep {
            saga: "s".into(),
            step: "bare".into(),
        },
        &["s", "bare"],
    );
    // Also when another (valid) step follows it.
    assert_error(
        Saga::<Ledger>::new("s")
            .local_step("bare")
            .local_step("fine")
            .on_execute(noop)
            .commit(),
        DefinitionError::EmptyStep {
            saga: "s".into(),
            step: "bare".into(),
        },
        &["s", "bare"],
    );
}

#[test]
fn a_remote_step_without_handlers_is_empty_step() {
    assert_error(
        Saga::<Ledger>::new("s")
            .local_step("fine")
            .on_execute(noop)
            .remote_step("bare")
            .commit(),
        DefinitionError::EmptyStep {
            saga: "s".into(),
            step: "bare".into(),
        },
        &["s", "bare"],
    );
}

#[test]
fn a_local_step_with_only_on_failure_is_undefined_on_execute() {
    assert_error(
        Saga::<Ledger>::new("s")
            .local_step("undo_only")
            .on_failure(noop)
            .commit(),
        DefinitionError::UndefinedOnExecute {
            saga: "s".into(),
            step: "undo_only".into(),
        },
        &["s", "undo_only"],
    );
}

#[test]
fn a_remote_step_without_on_execute_is_undefined_on_execute() {
    let expected = |step: &str| DefinitionError::UndefinedOnExecute {
        saga: "s".into(),
        step: step.into(),
    };
    assert_error(
        Saga::<Ledger>::new("s")
            .remote_step("success_only")
            .on_success(on_reply)
            .commit(),
        expected("success_only"),
        &["s", "success_only"],
    );
    assert_error(
        Saga::<Ledger>::new("s")
            .remote_step("error_only")
            .on_error(on_reply)
            .commit(),
        expected("error_only"),
        &["s", "error_only"],
    );
    assert_error(
        Saga::<Ledger>::new("s")
            .remote_step("failure_only")
            .on_failure(request)
            .commit(),
        expected("failure_only"),
        &["s", "failure_only"],
    );
}

#[test]
fn setting_a_handler_twice_names_the_slot() {
    let multiple_execute = |saga, step| DefinitionError::MultipleOnExecute { saga, step };
    let multiple_failure = |saga, step| DefinitionError::MultipleOnFailure { saga, step };
    let multiple_success = |saga, step| DefinitionError::MultipleOnSuccess { saga, step };
    let multiple_error = |saga, step| DefinitionError::MultipleOnError { saga, step };

    assert_error(
        Saga::<Ledger>::new("twice")
            .local_step("l")
            .on_execute(noop)
            .on_execute(other_noop)
            .commit(),
        step_error(multiple_execute, "twice", "l"),
        &["twice", "l"],
    );
    assert_error(
        Saga::<Ledger>::new("twice")
            .local_step("l")
            .on_execute(noop)
            .on_failure(noop)
            .on_failure(other_noop)
            .commit(),
        step_error(multiple_failure, "twice", "l"),
        &["twice", "l"],
    );
    assert_error(
        Saga::<Ledger>::new("twice")
            .remote_step("r")
            .on_execute(request)
            .on_execute(other_request)
            .commit(),
        step_error(multiple_execute, "twice", "r"),
        &["twice", "r"],
    );
    assert_error(
        Saga::<Ledger>::new("twice")
            .remote_step("r")
            .on_execute(request)
            .on_failure(request)
            .on_failure(other_request)
            .commit(),
        step_error(multiple_failure, "twice", "r"),
        &["twice", "r"],
    );
    assert_error(
        Saga::<Ledger>::new("twice")
            .remote_step("r")
            .on_execute(request)
            .on_success(on_reply)
            .on_success(on_reply)
            .commit(),
        step_error(multiple_success, "twice", "r"),
        &["twice", "r"],
    );
    assert_error(
        Saga::<Ledger>::new("twice")
            .remote_step("r")
            .on_execute(request)
            .on_error(on_reply)
            .on_error(on_reply)
            .commit(),
        step_error(multiple_error, "twice", "r"),
        &["twice", "r"],
    );
    // The same handler set twice with parameters is the same mistake.
    assert_error(
        Saga::<Ledger>::new("twice")
            .local_step("l")
            .on_execute(noop)
            .on_execute_with(add, 1_i64)
            .commit(),
        step_error(multiple_execute, "twice", "l"),
        &["twice", "l"],
    );
}

#[test]
fn two_else_then_is_multiple_else_then() {
    assert_error(
        Saga::<Ledger>::new("branchy")
            .conditional_step("choose")
            .if_then(always, sub_saga("a"))
            .else_then(sub_saga("b"))
            .else_then(sub_saga("c"))
            .commit(),
        DefinitionError::MultipleElseThen {
            saga: "branchy".into(),
            step: "choose".into(),
        },
        &["branchy", "choose"],
    );
}

#[test]
fn a_conditional_step_without_alternatives_is_no_alternative() {
    assert_error(
        Saga::<Ledger>::new("branchy")
            .local_step("first")
            .on_execute(noop)
            .conditional_step("choose")
            .commit(),
        DefinitionError::NoAlternative {
            saga: "branchy".into(),
            step: "choose".into(),
        },
        &["branchy", "choose"],
    );
    // One alternative of either kind is enough.
    let only_else = Saga::<Ledger>::new("branchy")
        .conditional_step("choose")
        .else_then(sub_saga("b"))
        .commit()
        .expect("an else_then alone is an alternative");
    assert_eq!(only_else.steps().len(), 1);
    let only_if = Saga::<Ledger>::new("branchy")
        .conditional_step("choose")
        .if_then(never, sub_saga("a"))
        .commit()
        .expect("an if_then alone is an alternative");
    assert_eq!(only_if.steps().len(), 1);
}

#[test]
fn step_names_are_unique_across_kinds() {
    let duplicate = |step: &str| DefinitionError::DuplicateStepName {
        saga: "dup".into(),
        step: step.into(),
    };
    assert_error(
        Saga::<Ledger>::new("dup")
            .local_step("same")
            .on_execute(noop)
            .local_step("same")
            .on_execute(noop)
            .commit(),
        duplicate("same"),
        &["dup", "same"],
    );
    assert_error(
        Saga::<Ledger>::new("dup")
            .local_step("same")
            .on_execute(noop)
            .remote_step("other")
            .on_execute(request)
            .remote_step("same")
            .on_execute(request)
            .commit(),
        duplicate("same"),
        &["dup", "same"],
    );
    assert_error(
        Saga::<Ledger>::new("dup")
            .remote_step("same")
            .on_execute(request)
            .conditional_step("same")
            .if_then(always, sub_saga("a"))
            .commit(),
        duplicate("same"),
        &["dup", "same"],
    );
    // A sub-saga may reuse an outer step's name: it is its own saga.
    let nested = Saga::<Ledger>::new("dup")
        .local_step("inner")
        .on_execute(noop)
        .conditional_step("choose")
        .if_then(always, sub_saga("sub"))
        .commit()
        .expect("step names are scoped to their saga");
    assert_eq!(
        nested
            .steps()
            .iter()
            .map(|step| step.name())
            .collect::<Vec<_>>(),
        ["inner", "choose"]
    );
}

#[test]
fn saga_names_must_be_valid_persisted_names() {
    let too_long = "s".repeat(129);
    for bad in [
        "",
        "has space",
        "slash/name",
        "naïve",
        "tab\t",
        too_long.as_str(),
    ] {
        assert_error(
            Saga::<Ledger>::new(bad)
                .local_step("a")
                .on_execute(noop)
                .commit(),
            DefinitionError::InvalidName { name: bad.into() },
            &[bad],
        );
    }
    let longest = "s".repeat(128);
    for good in ["a", "create-order", "Order_v2.1:eu", longest.as_str()] {
        let definition = Saga::<Ledger>::new(good)
            .local_step("a")
            .on_execute(noop)
            .commit()
            .unwrap_or_else(|error| panic!("{good:?} is a valid saga name: {error}"));
        assert_eq!(definition.name(), good);
    }
}

#[test]
fn step_names_must_be_valid_persisted_names() {
    let too_long = "x".repeat(129);
    for bad in ["", "two words", "a,b", "é", too_long.as_str()] {
        let invalid = DefinitionError::InvalidName { name: bad.into() };
        assert_error(
            Saga::<Ledger>::new("s")
                .local_step(bad)
                .on_execute(noop)
                .commit(),
            invalid.clone(),
            &[bad],
        );
        assert_error(
            Saga::<Ledger>::new("s")
                .local_step("ok")
                .on_execute(noop)
                .remote_step(bad)
                .on_execute(request)
                .commit(),
            invalid.clone(),
            &[bad],
        );
        assert_error(
            Saga::<Ledger>::new("s")
                .conditional_step(bad)
                .if_then(always, sub_saga("a"))
                .commit(),
            invalid,
            &[bad],
        );
    }
    let longest = "x".repeat(128);
    let definition = Saga::<Ledger>::new("s")
        .local_step(longest.as_str())
        .on_execute(noop)
        .remote_step("r-1_.:x")
        .on_execute(request)
        .commit()
        .expect("valid step names");
    assert_eq!(definition.steps()[0].name(), longest);
    assert_eq!(definition.steps()[1].name(), "r-1_.:x");
}

#[test]
fn the_first_mistake_is_the_one_reported() {
    assert_error(
        Saga::<Ledger>::new("bad name").local_step("a").commit(),
        DefinitionError::InvalidName {
            name: "bad name".into(),
        },
        &["bad name"],
    );
    assert_error(
        Saga::<Ledger>::new("s")
            .local_step("a")
            .on_execute(noop)
            .on_execute(noop)
            .local_step("a")
            .local_step("b c")
            .on_execute(noop)
            .commit(),
        DefinitionError::MultipleOnExecute {
            saga: "s".into(),
            step: "a".into(),
        },
        &["s", "a"],
    );
}

#[test]
fn an_invalid_sub_saga_cannot_be_built_so_cannot_be_nested() {
    // `if_then`/`else_then` take committed definitions: the sub-saga's own commit reports its
    // mistakes, with the sub-saga's name.
    assert_error(
        Saga::<Ledger>::new("sub").commit(),
        DefinitionError::EmptySaga { saga: "sub".into() },
        &["sub"],
    );
    assert_error(
        Saga::<Ledger>::new("sub")
            .remote_step("pay")
            .on_success(on_reply)
            .commit(),
        DefinitionError::UndefinedOnExecute {
            saga: "sub".into(),
            step: "pay".into(),
        },
        &["sub", "pay"],
    );
    assert_error(
        Saga::<Ledger>::new("sub")
            .conditional_step("deeper")
            .else_then(sub_saga("a"))
            .else_then(sub_saga("b"))
            .commit(),
        DefinitionError::MultipleElseThen {
            saga: "sub".into(),
            step: "deeper".into(),
        },
        &["sub", "deeper"],
    );
    // A valid sub-saga, itself with a conditional, nests.
    let middle = Saga::<Ledger>::new("middle")
        .conditional_step("deeper")
        .if_then(never, sub_saga("a"))
        .else_then(sub_saga("b"))
        .commit()
        .expect("a valid middle saga");
    let outer = Saga::<Ledger>::new("outer")
        .conditional_step("choose")
        .if_then(always, middle)
        .commit()
        .expect("a valid outer saga");
    assert_eq!(outer.steps()[0].name(), "choose");
}

#[test]
fn definitions_keep_their_steps_in_order_with_their_handler_slots() {
    let definition = Saga::<Ledger>::new("shape")
        .local_step("l")
        .on_execute(noop)
        .on_failure(other_noop)
        .remote_step("r")
        .on_execute(request)
        .on_error(on_reply)
        .conditional_step("c")
        .if_then(always, sub_saga("a"))
        .if_then(never, sub_saga("b"))
        .commit()
        .expect("a valid saga");
    let shape: Vec<_> = definition
        .steps()
        .iter()
        .map(|step| {
            (
                step.name().to_owned(),
                step.kind().to_string(),
                step.handlers()
                    .into_iter()
                    .map(|(slot, _)| slot)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                "l".to_owned(),
                "local".to_owned(),
                vec!["on_execute", "on_failure"]
            ),
            (
                "r".to_owned(),
                "remote".to_owned(),
                vec!["on_execute", "on_error"]
            ),
            (
                "c".to_owned(),
                "conditional".to_owned(),
                vec!["if_then", "if_then"]
            ),
        ]
    );
    assert_eq!(
        definition.steps()[0].handlers(),
        vec![("on_execute", "noop"), ("on_failure", "other_noop")]
    );
}

// --- fingerprint -------------------------------------------------------------------------------

/// The reference saga of the fingerprint tests, built from scratch on every call.
fn reference() -> SagaDefinition<Ledger> {
    Saga::new("fp")
        .local_step("validate")
        .on_execute(noop)
        .on_failure(noop)
        .remote_step("charge")
        .on_execute(request)
        .on_success(on_reply)
        .conditional_step("choose")
        .if_then(always, sub_saga("a"))
        .else_then(sub_saga("b"))
        .commit()
        .expect("the reference saga is valid")
}

fn fingerprint_of(result: Result<SagaDefinition<Ledger>, DefinitionError>) -> Fingerprint {
    result.expect("a valid saga").fingerprint()
}

#[test]
fn the_fingerprint_is_stable_and_shown_as_16_hex_digits() {
    let first = reference().fingerprint();
    let second = reference().fingerprint();
    assert_eq!(first, second);
    assert_eq!(first.value(), second.value());

    let shown = first.to_string();
    assert_eq!(shown.len(), 16, "{shown:?}");
    assert!(
        shown
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{shown:?} is not lowercase hex"
    );
    assert_eq!(shown, format!("{:016x}", first.value()));
    assert_eq!(shown.parse::<Fingerprint>().expect("it parses back"), first);
    assert_eq!(format!("{first:?}"), format!("Fingerprint({shown})"));

    // Leading zeros are kept: every fingerprint shows as 16 digits.
    let small: Fingerprint = "00000000000000ff".parse().expect("hex");
    assert_eq!(small.to_string(), "00000000000000ff");
    assert_eq!(small.value(), 255);
}

#[test]
fn the_fingerprint_changes_with_the_step_graph() {
    let base = reference().fingerprint();
    let variants: Vec<(&str, Fingerprint)> = vec![
        (
            "saga renamed",
            fingerprint_of(
                Saga::new("fp2")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "step added",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .local_step("notify")
                    .on_execute(noop)
                    .commit(),
            ),
        ),
        (
            "step removed",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .commit(),
            ),
        ),
        (
            "step renamed",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("check")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "steps reordered",
            fingerprint_of(
                Saga::new("fp")
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "on_error slot added",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .on_error(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "on_failure slot added",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .on_failure(request)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "on_failure slot removed",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "on_success moved to on_error",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_error(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "alternative added",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .if_then(never, sub_saga("c"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
        (
            "else branch dropped",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .commit(),
            ),
        ),
        (
            "sub-saga changed",
            fingerprint_of(
                Saga::new("fp")
                    .local_step("validate")
                    .on_execute(noop)
                    .on_failure(noop)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b2"))
                    .commit(),
            ),
        ),
        (
            "local step became remote",
            fingerprint_of(
                Saga::new("fp")
                    .remote_step("validate")
                    .on_execute(request)
                    .on_failure(request)
                    .remote_step("charge")
                    .on_execute(request)
                    .on_success(on_reply)
                    .conditional_step("choose")
                    .if_then(always, sub_saga("a"))
                    .else_then(sub_saga("b"))
                    .commit(),
            ),
        ),
    ];
    for (change, fingerprint) in &variants {
        assert_ne!(
            *fingerprint, base,
            "{change}: the fingerprint did not change"
        );
    }
    // And the variants differ from each other too.
    for (i, (change, fingerprint)) in variants.iter().enumerate() {
        for (other, other_fingerprint) in &variants[i + 1..] {
            assert_ne!(fingerprint, other_fingerprint, "{change} vs {other}");
        }
    }
}

#[test]
fn the_fingerprint_ignores_which_function_fills_a_slot() {
    let base = reference().fingerprint();
    let other_functions = fingerprint_of(
        Saga::new("fp")
            .local_step("validate")
            .on_execute(other_noop)
            .on_failure_with(add, 7_i64)
            .remote_step("charge")
            .on_execute_with(ask, "Elsewhere")
            .on_success(on_reply)
            .conditional_step("choose")
            .if_then(never, sub_saga("a"))
            .else_then(sub_saga("b"))
            .commit(),
    );
    assert_eq!(other_functions, base);

    let with_params = |amount: i64| {
        fingerprint_of(
            Saga::<Ledger>::new("params")
                .local_step("add")
                .on_execute_with(add, amount)
                .commit(),
        )
    };
    assert_eq!(with_params(1), with_params(2));
    assert_eq!(
        with_params(1),
        fingerprint_of(
            Saga::<Ledger>::new("params")
                .local_step("add")
                .on_execute(noop)
                .commit()
        )
    );
}

// --- handler parameters ------------------------------------------------------------------------

async fn add(ledger: &mut Ledger, amount: &i64) -> Result<(), StepError> {
    ledger.total += amount;
    ledger.log.push(format!("add {amount}"));
    Ok(())
}

async fn subtract(ledger: &mut Ledger, amount: &i64) -> Result<(), StepError> {
    ledger.total -= amount;
    ledger.log.push(format!("subtract {amount}"));
    Ok(())
}

async fn fail_with(_: &mut Ledger, reason: &&'static str) -> Result<(), StepError> {
    Err(StepError::msg(*reason))
}

async fn above(ledger: &Ledger, threshold: &i64) -> Result<bool, StepError> {
    Ok(ledger.total > *threshold)
}

async fn ask(_: &Ledger, target: &&'static str) -> Result<SagaRequest, StepError> {
    SagaRequest::new(*target, &json!({"asked": target}))
}

async fn record_reply(
    ledger: &mut Ledger,
    reply: SagaResponse,
    label: &String,
) -> Result<(), StepError> {
    let content: String = reply.content()?;
    ledger.log.push(format!("{label}: {content}"));
    Ok(())
}

fn parameterized() -> Arc<SagaDefinition<Ledger>> {
    let big = Saga::new("big")
        .local_step("bonus")
        .on_execute_with(add, 100_i64)
        .commit()
        .expect("valid");
    let small = Saga::new("small")
        .local_step("malus")
        .on_execute_with(subtract, 1_i64)
        .commit()
        .expect("valid");
    Arc::new(
        Saga::new("parameterized")
            .local_step("two")
            .on_execute_with(add, 2_i64)
            .on_failure_with(subtract, 2_i64)
            .local_step("three")
            .on_execute_with(add, 3_i64)
            .on_failure_with(subtract, 3_i64)
            .conditional_step("size")
            .if_then_with(above, 4_i64, big)
            .else_then(small)
            .remote_step("book")
            .on_execute_with(ask, "Book")
            .on_success_with(record_reply, "booked".to_owned())
            .commit()
            .expect("valid"),
    )
}

#[tokio::test]
async fn handler_parameters_are_passed_on_every_call() {
    let harness = Harness::new().await;
    let _ticket = harness
        .participant("ticket")
        .command("Book", |message: &BrokerMessage| {
            (
                SagaResponseStatus::Success,
                json!(format!("ticket for {}", message.payload["asked"])),
            )
        })
        .spawn()
        .await
        .expect("the participant starts");
    let definition = parameterized();

    for (start, expected_total, branch_entry) in [(0, 105, "add 100"), (-10, -6, "subtract 1")] {
        let execution = harness
            .manager
            .run(
                Arc::clone(&definition),
                Ledger {
                    log: Vec::new(),
                    total: start,
                },
                RunOptions::new().autocommit(false),
            )
            .await
            .expect("the saga runs")
            .execution()
            .expect("the execution is returned");
        assert_eq!(execution.status(), SagaStatus::Finished);
        assert_eq!(
            execution.context(),
            &Ledger {
                log: vec![
                    "add 2".to_owned(),
                    "add 3".to_owned(),
                    branch_entry.to_owned(),
                    "booked: ticket for \"Book\"".to_owned(),
                ],
                total: expected_total,
            }
        );
    }
    let commands: Vec<_> = harness
        .sent()
        .into_iter()
        .map(|message| (message.topic, message.payload))
        .collect();
    assert_eq!(
        commands,
        vec![
            ("Book".to_owned(), json!({"asked": "Book"})),
            ("Book".to_owned(), json!({"asked": "Book"})),
        ]
    );
}

#[tokio::test]
async fn compensation_handlers_get_their_parameters_too() {
    let harness = Harness::new().await;
    let definition = Arc::new(
        Saga::new("undo-with-params")
            .local_step("two")
            .on_execute_with(add, 2_i64)
            .on_failure_with(subtract, 2_i64)
            .local_step("three")
            .on_execute_with(add, 3_i64)
            .on_failure_with(subtract, 3_i64)
            .local_step("boom")
            .on_execute_with(fail_with, "out of luck")
            .on_failure_with(subtract, 1000_i64)
            .commit()
            .expect("valid"),
    );
    let execution = harness
        .manager
        .run(
            Arc::clone(&definition),
            Ledger::default(),
            RunOptions::new().autocommit(false).raise_on_error(false),
        )
        .await
        .expect("the run returns the errored execution")
        .execution()
        .expect("the execution is returned");
    assert_eq!(execution.status(), SagaStatus::Errored);
    let boom = execution.step("boom").expect("the step ran");
    assert_eq!(boom.status(), StepStatus::ErroredOnExecute);
    assert_eq!(boom.error(), Some("out of luck"));
    assert_eq!(
        execution.context(),
        &Ledger {
            log: vec![
                "add 2".to_owned(),
                "add 3".to_owned(),
                "subtract 3".to_owned(),
                "subtract 2".to_owned(),
            ],
            total: 0,
        }
    );
    assert!(harness.sent().is_empty(), "{:?}", harness.sent_topics());
}
