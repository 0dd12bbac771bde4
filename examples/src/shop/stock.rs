//! The stock service: 10 of every item on hand. A reservation is staged under the item's key, so
//! two transactions cannot both reserve the same item; it leaves the shelf when the transaction
//! commits.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError, Settled};
use serde_json::json;

use crate::messages::{Reserve, short};

/// How many of each item the shelf starts with.
pub(crate) const STOCK_ON_HAND: u32 = 10;

/// Items taken off the shelf by committed transactions.
static TAKEN: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

fn on_hand(item: &str) -> u32 {
    let taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    STOCK_ON_HAND.saturating_sub(taken.get(item).copied().unwrap_or(0))
}

/// `ReserveStock`: refuses more than is on hand, stages the reservation otherwise.
#[transactional_command(topic = "ReserveStock", on_commit = take_from_shelf, on_reject = release)]
pub(crate) async fn reserve_stock(
    context: CommandContext,
    reserve: Reserve,
) -> Result<String, CommandError> {
    let available = on_hand(&reserve.item);
    if reserve.quantity > available {
        println!(
            "  [stock]   refused {} x {}: only {available} on hand",
            reserve.quantity, reserve.item
        );
        return Err(CommandError::business(format!(
            "out of stock: {available} {} on hand",
            reserve.item
        )));
    }
    let reservation = format!("res-{}", short(reserve.order_id));
    context.stage(
        format!("stock:{}", reserve.item),
        json!({ "item": reserve.item, "quantity": reserve.quantity, "reservation": reservation }),
    );
    println!(
        "  [stock]   reserved {} x {} as {reservation} (tentative)",
        reserve.quantity, reserve.item
    );
    Ok(reservation)
}

async fn take_from_shelf(settled: Settled) {
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    for effect in &settled.effects {
        let (Some(item), Some(quantity)) = (
            effect.effect["item"].as_str(),
            effect.effect["quantity"].as_u64(),
        ) else {
            continue;
        };
        *taken.entry(item.to_owned()).or_default() += u32::try_from(quantity).unwrap_or(u32::MAX);
        println!("  [stock]   commit: {quantity} x {item} left the shelf");
    }
}

async fn release(settled: Settled) {
    for effect in &settled.effects {
        println!(
            "  [stock]   reject: {} released",
            effect.effect["reservation"]
        );
    }
}

/// `ReleaseStock`, the compensation of `ReserveStock`: nothing left the shelf before the commit,
/// so there is nothing to stage.
#[transactional_command(topic = "ReleaseStock")]
pub(crate) async fn release_stock(
    _context: CommandContext,
    reservation: Option<String>,
) -> Result<(), CommandError> {
    println!("  [stock]   release of {reservation:?} acknowledged");
    Ok(())
}
