//! The commands the order saga sends, as the payment and stock services read them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `CreatePayment`: charge an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Charge {
    /// The order.
    pub(crate) order_id: Uuid,
    /// How much.
    pub(crate) amount_cents: u64,
}

/// `ReserveStock`: set items aside for an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reserve {
    /// The order.
    pub(crate) order_id: Uuid,
    /// Which item.
    pub(crate) item: String,
    /// How many.
    pub(crate) quantity: u32,
}

/// The first eight hex digits of an id, for names a reader can follow.
pub(crate) fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
}
