//! The payment service: a charge is authorized when the command arrives and captured only when the
//! saga's transaction commits; a rejected transaction voids it.

use saga_runtime::prelude::*;
use saga_runtime::transactional::{CommandContext, CommandError, Settled};
use serde_json::json;

use crate::messages::{Charge, short};

/// No order above this is accepted.
const CARD_LIMIT_CENTS: u64 = 1_000_000;

/// `CreatePayment`: authorizes the charge (staged under the order's key), answers the payment id.
#[transactional_command(topic = "CreatePayment", on_commit = capture, on_reject = void)]
pub(crate) async fn create_payment(
    context: CommandContext,
    charge: Charge,
) -> Result<String, CommandError> {
    if charge.amount_cents > CARD_LIMIT_CENTS {
        println!(
            "  [payment] refused {} cents: over the card limit",
            charge.amount_cents
        );
        return Err(CommandError::business("over the card limit"));
    }
    let payment = format!("pay-{}", short(charge.order_id));
    context.stage(
        format!("payment:{}", charge.order_id),
        json!({ "payment": payment, "amount_cents": charge.amount_cents }),
    );
    println!(
        "  [payment] authorized {} cents as {payment} (tentative until the saga commits)",
        charge.amount_cents
    );
    Ok(payment)
}

async fn capture(settled: Settled) {
    for effect in &settled.effects {
        println!("  [payment] commit: captured {}", effect.effect["payment"]);
    }
}

async fn void(settled: Settled) {
    for effect in &settled.effects {
        println!("  [payment] reject: voided {}", effect.effect["payment"]);
    }
}

/// `RefundPayment`, the compensation of `CreatePayment`: staged like any command, so it is applied
/// only if its transaction commits (a rejected transaction voids the charge itself).
#[transactional_command(topic = "RefundPayment", on_commit = refunded, on_reject = refund_dropped)]
pub(crate) async fn refund_payment(
    context: CommandContext,
    payment: Option<String>,
) -> Result<(), CommandError> {
    let Some(payment) = payment else {
        return Ok(());
    };
    println!("  [payment] refund of {payment} staged");
    context.stage(format!("refund:{payment}"), json!({ "payment": payment }));
    Ok(())
}

async fn refunded(settled: Settled) {
    for effect in &settled.effects {
        println!("  [payment] commit: refunded {}", effect.effect["payment"]);
    }
}

async fn refund_dropped(settled: Settled) {
    for effect in &settled.effects {
        println!(
            "  [payment] reject: refund of {} dropped with its transaction",
            effect.effect["payment"]
        );
    }
}
