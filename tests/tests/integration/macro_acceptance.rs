//! Fingerprints of sagas declared with the attribute macros. The fingerprint follows the step graph
//! (saga name, step names, kinds and order, filled handler slots, branches), not the code that
//! spells it: a stored execution resumes with a reformatted saga whose handlers were renamed, and is
//! refused by a saga whose steps changed.
//!
//! Almost every saga here is named `ship-parcel`, on purpose: the name is part of the fingerprint,
//! so only sagas with one name show that the steps alone change it. That is why this module never
//! gathers its sagas with `Registry::from_inventory` (which refuses a shared name); the registries
//! below are built by hand.

use std::collections::BTreeSet;
use std::sync::Arc;

use saga_runtime::error::LoadError;
use saga_runtime::manager::ReplyOutcome;
use saga_runtime::prelude::*;
use saga_runtime::wiring::*;
use saga_tests::{Harness, SERVICE, reply_to};
use serde_json::json;

/// The sagas' state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Parcel {
    fragile: bool,
    packed: bool,
    tracking: Option<String>,
    refusal: Option<String>,
    insured: bool,
    log: Vec<String>,
}

// The reference saga: `pack` (local, compensable), `ship` (remote: `on_success`, `on_failure`),
// `route` (if the parcel is fragile: `insure-parcel`), `notify` (local).

#[local_step(on_failure = unpack)]
async fn pack(parcel: &mut Parcel) -> Result<(), StepError> {
    parcel.packed = true;
    parcel.log.push("pack".to_owned());
    Ok(())
}

async fn unpack(parcel: &mut Parcel) -> Result<(), StepError> {
    parcel.packed = false;
    parcel.log.push("unpack".to_owned());
    Ok(())
}

#[remote_step(on_success = shipped, on_failure = recall)]
async fn ship(parcel: &Parcel) -> Result<SagaRequest, StepError> {
    SagaRequest::new("SendParcel", &json!({ "fragile": parcel.fragile }))
}

async fn shipped(parcel: &mut Parcel, reply: SagaResponse) -> Result<(), StepError> {
    parcel.tracking = Some(reply.content()?);
    Ok(())
}

async fn refused(parcel: &mut Parcel, reply: SagaResponse) -> Result<(), StepError> {
    parcel.refusal = Some(reply.content()?);
    Ok(())
}

async fn recall(parcel: &Parcel) -> Result<SagaRequest, StepError> {
    SagaRequest::new("RecallParcel", &parcel.tracking)
}

async fn is_fragile(parcel: &Parcel) -> Result<bool, StepError> {
    Ok(parcel.fragile)
}

#[local_step]
async fn insure(parcel: &mut Parcel) -> Result<(), StepError> {
    parcel.insured = true;
    parcel.log.push("insure".to_owned());
    Ok(())
}

#[saga(name = "insure-parcel", steps = [insure])]
struct InsureParcel;

#[local_step]
async fn notify(parcel: &mut Parcel) -> Result<(), StepError> {
    parcel.log.push("notify".to_owned());
    Ok(())
}

#[saga(
    name = "ship-parcel",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcel)), notify]
)]
struct ShipParcel;

/// The reference saga, built with the builder API.
fn ship_parcel_built() -> SagaDefinition<Parcel> {
    let insure_parcel = Saga::new("insure-parcel")
        .local_step("insure")
        .on_execute(insure::call)
        .commit()
        .expect("a valid sub-saga");
    Saga::new("ship-parcel")
        .local_step("pack")
        .on_execute(pack::call)
        .on_failure(unpack)
        .remote_step("ship")
        .on_execute(ship::call)
        .on_success(shipped)
        .on_failure(recall)
        .conditional_step("route")
        .if_then(is_fragile, insure_parcel)
        .local_step("notify")
        .on_execute(notify::call)
        .commit()
        .expect("a valid saga")
}

// The same saga spelled differently: other function names (the persisted step names given with
// `name`), other handler and condition names in the same slots, and another layout, argument order,
// comments and trailing commas in the attributes.

#[local_step(
    // The function has another name: keep the persisted one.
    name = "pack",
    on_failure   =   undo_packing ,
)]
async fn pack_it(parcel: &mut Parcel) -> Result<(), StepError> {
    pack::call(parcel).await
}

async fn undo_packing(parcel: &mut Parcel) -> Result<(), StepError> {
    unpack(parcel).await
}

#[remote_step(on_failure = call_back, name = "ship", on_success = record_tracking)]
async fn send_off(parcel: &Parcel) -> Result<SagaRequest, StepError> {
    ship::call(parcel).await
}

async fn record_tracking(parcel: &mut Parcel, reply: SagaResponse) -> Result<(), StepError> {
    shipped(parcel, reply).await
}

async fn call_back(parcel: &Parcel) -> Result<SagaRequest, StepError> {
    recall(parcel).await
}

async fn breakable(parcel: &Parcel) -> Result<bool, StepError> {
    is_fragile(parcel).await
}

#[local_step(name = "insure")]
async fn cover(parcel: &mut Parcel) -> Result<(), StepError> {
    insure::call(parcel).await
}

#[saga(steps = [cover,], name = "insure-parcel")]
struct CoverParcel;

#[local_step(name = "notify")]
async fn tell(parcel: &mut Parcel) -> Result<(), StepError> {
    notify::call(parcel).await
}

#[saga(
    steps = [
        pack_it, // packs
        /* ships */ send_off,
        route = conditional(
            if_then(breakable, CoverParcel),
        ),
        tell,
    ],
    name = "ship-parcel",
)]
struct ShipParcelReformatted;

// Sagas that differ from the reference by one change of the step graph each.

/// One step fewer.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcel))]
)]
struct WithoutNotify;

/// One step more.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcel)), notify, tell_again]
)]
struct WithExtraStep;

#[local_step(name = "notify-again")]
async fn tell_again(parcel: &mut Parcel) -> Result<(), StepError> {
    notify::call(parcel).await
}

/// Two steps swapped.
#[saga(
    name = "ship-parcel",
    steps = [ship, pack, route = conditional(if_then(is_fragile, InsureParcel)), notify]
)]
struct Reordered;

/// `ship` also handles an ERROR reply: a handler slot filled.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship_or_refuse, route = conditional(if_then(is_fragile, InsureParcel)), notify]
)]
struct WithOnError;

#[remote_step(name = "ship", on_success = shipped, on_error = refused, on_failure = recall)]
async fn ship_or_refuse(parcel: &Parcel) -> Result<SagaRequest, StepError> {
    ship::call(parcel).await
}

/// `pack` cannot be undone: a handler slot emptied.
#[saga(
    name = "ship-parcel",
    steps = [pack_for_good, ship, route = conditional(if_then(is_fragile, InsureParcel)), notify]
)]
struct WithoutUnpack;

#[local_step(name = "pack")]
async fn pack_for_good(parcel: &mut Parcel) -> Result<(), StepError> {
    pack::call(parcel).await
}

/// `ship`'s reply handler moved from `on_success` to `on_error`: as many handlers, another slot.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship_on_error, route = conditional(if_then(is_fragile, InsureParcel)), notify]
)]
struct HandlerInAnotherSlot;

#[remote_step(name = "ship", on_error = shipped, on_failure = recall)]
async fn ship_on_error(parcel: &Parcel) -> Result<SagaRequest, StepError> {
    ship::call(parcel).await
}

/// `notify` is a remote step.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcel)), notify_remotely]
)]
struct RemoteNotify;

#[remote_step(name = "notify")]
async fn notify_remotely(_parcel: &Parcel) -> Result<SagaRequest, StepError> {
    Ok(SagaRequest::empty("Notify"))
}

/// `notify` is persisted under another name.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcel)), announce]
)]
struct RenamedStep;

#[local_step]
async fn announce(parcel: &mut Parcel) -> Result<(), StepError> {
    notify::call(parcel).await
}

/// The sub-saga of the branch has one step more.
#[saga(
    name = "ship-parcel",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcelTwice)), notify]
)]
struct ChangedSubSaga;

#[saga(name = "insure-parcel", steps = [insure, check_insurance])]
struct InsureParcelTwice;

#[local_step]
async fn check_insurance(parcel: &mut Parcel) -> Result<(), StepError> {
    parcel.log.push("check-insurance".to_owned());
    Ok(())
}

/// The conditional step gains an `else_then`.
#[saga(
    name = "ship-parcel",
    steps = [
        pack,
        ship,
        route = conditional(if_then(is_fragile, InsureParcel), else_then(InsureParcel)),
        notify,
    ]
)]
struct WithElse;

/// The same steps under another saga name.
#[saga(
    name = "ship-parcel-v2",
    steps = [pack, ship, route = conditional(if_then(is_fragile, InsureParcel)), notify]
)]
struct Renamed;

/// The step names and kinds of `definition`, for readable comparisons.
fn outline(definition: &SagaDefinition<Parcel>) -> Vec<String> {
    definition
        .steps()
        .iter()
        .map(|step| format!("{}:{:?}", step.name(), step.kind()))
        .collect()
}

#[test]
fn reformatting_and_renaming_handlers_keeps_the_fingerprint() {
    let built = ship_parcel_built();
    let declared = ShipParcel::definition();
    let reformatted = ShipParcelReformatted::definition();

    assert_eq!(declared.fingerprint(), built.fingerprint());
    assert_eq!(reformatted.fingerprint(), built.fingerprint());
    assert_eq!(reformatted.fingerprint(), declared.fingerprint());
    assert_eq!(
        CoverParcel::definition().fingerprint(),
        InsureParcel::definition().fingerprint()
    );
    for definition in [&*declared, &*reformatted] {
        assert_eq!(definition.name(), "ship-parcel");
        assert_eq!(outline(definition), outline(&built));
    }
    assert_eq!(
        outline(&built),
        [
            "pack:Local",
            "ship:Remote",
            "route:Conditional",
            "notify:Local"
        ]
    );
}

#[test]
fn changing_the_step_graph_changes_the_fingerprint() {
    let reference = ShipParcel::definition();
    let changed: [(&str, Arc<SagaDefinition<Parcel>>); 11] = [
        ("one step fewer", WithoutNotify::definition()),
        ("one step more", WithExtraStep::definition()),
        ("two steps swapped", Reordered::definition()),
        ("a handler slot filled", WithOnError::definition()),
        ("a handler slot emptied", WithoutUnpack::definition()),
        (
            "a handler in another slot",
            HandlerInAnotherSlot::definition(),
        ),
        ("a step of another kind", RemoteNotify::definition()),
        ("a step renamed", RenamedStep::definition()),
        ("a sub-saga changed", ChangedSubSaga::definition()),
        ("an else branch added", WithElse::definition()),
        ("the saga renamed", Renamed::definition()),
    ];

    let mut fingerprints = BTreeSet::from([reference.fingerprint()]);
    for (change, definition) in &changed {
        if *change != "the saga renamed" {
            assert_eq!(definition.name(), reference.name(), "{change}");
        }
        assert_ne!(
            definition.fingerprint(),
            reference.fingerprint(),
            "{change}"
        );
        assert!(
            fingerprints.insert(definition.fingerprint()),
            "{change}: the fingerprint of another change"
        );
    }
    assert_eq!(fingerprints.len(), changed.len() + 1);

    // The builder agrees: the same change made with it gives the same fingerprint.
    let insure_parcel = Saga::new("insure-parcel")
        .local_step("insure")
        .on_execute(insure::call)
        .commit()
        .expect("a valid sub-saga");
    let reordered = Saga::new("ship-parcel")
        .remote_step("ship")
        .on_execute(ship::call)
        .on_success(shipped)
        .on_failure(recall)
        .local_step("pack")
        .on_execute(pack::call)
        .on_failure(unpack)
        .conditional_step("route")
        .if_then(is_fragile, insure_parcel)
        .local_step("notify")
        .on_execute(notify::call)
        .commit()
        .expect("a valid saga");
    assert_eq!(
        reordered.fingerprint(),
        Reordered::definition().fingerprint()
    );
}

#[tokio::test]
async fn a_stored_execution_resumes_with_a_reformatted_saga_and_not_with_a_changed_one()
-> Result<(), Box<dyn std::error::Error>> {
    let harness = Harness::new().await;
    let _participants = harness.accepting(&["order", "shipping"]).await;
    let parcel = Parcel {
        fragile: true,
        ..Parcel::default()
    };
    let started = harness
        .manager
        .run_saga::<ShipParcel>(parcel.clone(), RunOptions::new().pause_on_disk(true))
        .await?
        .execution()
        .expect("the execution is returned");
    let id = started.id();
    assert_eq!(started.status(), SagaStatus::Paused);
    let send_parcel = harness.sent().pop().expect("SendParcel was sent");
    assert_eq!(send_parcel.topic, "SendParcel");
    let reply = reply_to(
        &send_parcel,
        SagaResponseStatus::Success,
        json!("track-1"),
        &["shipping"],
    );

    // An instance whose `ship-parcel` has other steps refuses the stored execution, untouched.
    let changed = SagaManager::builder(SERVICE)
        .broker(harness.broker())
        .repository(harness.repository.clone())
        .registry(Registry::empty().with::<WithOnError>()?)
        .build()
        .await?;
    let before = harness.repository.raw(id);
    let error = changed
        .resume(reply.clone())
        .await
        .expect_err("the steps changed since the execution was stored");
    assert!(
        matches!(
            &error,
            SagaError::Load(LoadError::FingerprintMismatch {
                id: refused,
                saga,
                stored,
                registered,
            }) if *refused == id
                && saga == "ship-parcel"
                && *stored == ShipParcel::definition().fingerprint()
                && *registered == WithOnError::definition().fingerprint()
        ),
        "{error:?}"
    );
    assert_eq!(harness.repository.raw(id), before);
    assert_eq!(harness.sent_topics(), ["SendParcel"]);

    // An instance whose `ship-parcel` is the reformatted twin resumes it and finishes it.
    let reformatted = SagaManager::builder(SERVICE)
        .broker(harness.broker())
        .repository(harness.repository.clone())
        .registry(Registry::empty().with::<ShipParcelReformatted>()?)
        .build()
        .await?;
    assert_eq!(
        reformatted.resume(reply).await?,
        ReplyOutcome::Applied {
            id,
            status: SagaStatus::Finished
        }
    );
    let stored = reformatted
        .load(ShipParcelReformatted::definition(), id)
        .await?;
    assert_eq!(stored.status(), SagaStatus::Finished);
    assert_eq!(
        stored.context(),
        &Parcel {
            packed: true,
            tracking: Some("track-1".to_owned()),
            insured: true,
            log: vec!["pack".to_owned(), "insure".to_owned(), "notify".to_owned()],
            ..parcel
        }
    );
    assert_eq!(
        harness.sent_topics(),
        [
            "SendParcel",
            "_ReserveOrderTransaction",
            "_ReserveShippingTransaction",
            "_CommitOrderTransaction",
            "_CommitShippingTransaction",
        ]
    );
    Ok(())
}
