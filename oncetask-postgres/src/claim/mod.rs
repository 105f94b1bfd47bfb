//! Claims: the claim order both modes share, and their modules — the
//! single-mode statement (`single`) and the resource-group transaction
//! (`group`), which reads the candidate query (`candidates`) and writes its
//! leases back with `write_back` (see the crate docs for the protocol).

use super::*;

mod candidates;
mod group;
mod single;
mod write_back;

/// The claim order over a task row `t` ([`Task::claim_order_key`]): all of
/// [`ClaimOrder::Oldest`]; [`ClaimOrder::Priority`] puts `t.priority DESC`
/// before it (see `candidates`).
const CLAIM_ORDER: &str =
    "t.leased_until NULLS FIRST, t.wait_until NULLS FIRST, t.created_at, t.id";
