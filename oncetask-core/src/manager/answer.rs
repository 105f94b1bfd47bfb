//! A backend's answer to a bulk call, checked before it is read item by
//! item (used by the create, operator and outcome paths alike).

use crate::error::Error;

/// Checks that a backend answered a bulk call with one outcome per item.
pub(crate) fn checked<T>(expected: usize, outcomes: Vec<T>) -> Result<Vec<T>, Error> {
    if outcomes.len() == expected {
        Ok(outcomes)
    } else {
        Err(Error::Internal(format!(
            "backend returned {} outcomes for {expected} items",
            outcomes.len()
        )))
    }
}
