//! The error type of recurrence validation.

/// Why a recurrence is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// DTSTART is empty.
    #[error("DTStart is required")]
    MissingDtStart,
    /// The rule is empty.
    #[error("RRule is required")]
    MissingRule,
    /// DTSTART is not RFC 3339 (or out of range).
    #[error("invalid DTStart {value:?} (must be RFC3339): {reason}")]
    InvalidDtStart {
        /// The rejected value.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// The rule does not parse or does not validate against DTSTART.
    #[error("invalid RRule {rule:?}: {reason}")]
    InvalidRule {
        /// The rejected rule.
        rule: String,
        /// Parser or validator message.
        reason: String,
    },
    /// An EXDATE is not RFC 3339.
    #[error("failed to parse exdate {value:?}: {reason}")]
    InvalidExDate {
        /// The rejected value.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// The time zone is not a known IANA zone name.
    #[error("invalid time zone {name:?}: {reason}")]
    InvalidTimeZone {
        /// The rejected name.
        name: String,
        /// Lookup message.
        reason: String,
    },
    /// The rule has no slot at all.
    #[error("recurrence has no valid occurrences")]
    NoOccurrences,
}
