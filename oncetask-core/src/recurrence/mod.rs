//! Recurrence: RFC 5545 RRULE schedules for generator tasks (docs/semantics.md S9).
//!
//! A [`Recurrence`] is the stored description (rule, DTSTART, EXDATEs and an
//! optional IANA zone); [`Recurrence::schedule`] validates it into a
//! [`Schedule`], which answers the two questions the engine asks: the first
//! slot ([`Schedule::first`]) and the next slot strictly after an instant
//! ([`Schedule::next_after`]). Rule expansion is done by the `rrule` crate,
//! whose semantics follow python-dateutil like the Go library did.
//!
//! # Semantics
//!
//! * **Rule text.** `FREQ` is required; keys are upper case (`freq=daily` is
//!   rejected as an unknown property, as in Go); a leading `RRULE:` is
//!   accepted; a `DTSTART=` part is checked and then ignored in favour of
//!   [`Recurrence::dtstart`]; `UNTIL` without `Z` (or date-only) is read as
//!   UTC; `COUNT` counts from DTSTART; `INTERVAL=0` and `BYEASTER` are
//!   rejected.
//! * **Anchor.** The rule is anchored at `dtstart` truncated to whole seconds
//!   (as Go does), but the slot set only holds instants `>= dtstart` at full
//!   precision, so a `dtstart` of `09:00:00.750` skips the `09:00:00` slot
//!   (docs/semantics.md S9.3).
//! * **DTSTART is a slot only if it matches the rule** (dateutil behaviour):
//!   DTSTART on a Wednesday with `FREQ=WEEKLY;BYDAY=MO` starts on the
//!   following Monday.
//! * **Zone.** Without [`Recurrence::timezone`] the rule is expanded in
//!   DTSTART's fixed offset (no DST). With an IANA zone it is expanded in
//!   that zone's wall clock, so "Mondays 09:00 Europe/Berlin" stays 09:00
//!   local across DST changes. A wall time that falls in a DST gap is moved
//!   forward by the gap (02:30 becomes 03:30); an ambiguous one takes its
//!   first occurrence.
//! * **Output.** Every instant returned is UTC (Go W9 wrote DTSTART's
//!   offset). EXDATEs are truncated to seconds and matched by instant.
//! * **No horizon** (fixes W8): `FREQ=YEARLY;INTERVAL=20` has a next slot 20
//!   years on. `next_after` is strictly after `t` at full precision, so there
//!   is no one-second skip (fixes W10's skip; missed slots are still not
//!   back-filled, that is the engine's business).
//!
//! # Cost (W18)
//!
//! The `rrule` iterator always starts at DTSTART, so a naive "next after now"
//! walks every slot since DTSTART (millions for a minutely rule a few years
//! old). [`Schedule::next_after`] instead *re-anchors*: it starts a fresh
//! iteration at a later DTSTART `D'` chosen so that the expansion from `D'`
//! is provably identical to the full expansion from `D'` on:
//!
//! * every BY* part that the rule inherits implicitly from DTSTART (BYMONTH /
//!   BYMONTHDAY for yearly, BYMONTHDAY for monthly, BYDAY for weekly,
//!   BYHOUR / BYMINUTE / BYSECOND for coarser frequencies) is made explicit,
//!   so moving DTSTART does not change the rule;
//! * `D'` is an iteration state the original walk reaches: the start of a
//!   period that is a whole number of `INTERVAL`s after DTSTART's period (the
//!   first day of the year or month, the WKST day of the week, the day, or a
//!   point of the `INTERVAL` lattice for sub-daily rules), which makes
//!   BYSETPOS, BYWEEKNO, day overflow (e.g. the 31st) and WKST behave as in
//!   the full walk;
//! * `D'` lies before the reference instant, with a two-day margin when an
//!   IANA zone changes its offset near it, so no slot the full walk would
//!   produce before `D'` can lie after the reference.
//!
//! The cost is then a few periods regardless of DTSTART's age. Within a day of
//! an IANA zone's offset change a search also looks up to a day past its first
//! hit (a slot moved out of a DST gap can come out of the iterator before an
//! earlier one), so there it covers about three days of slots: some 4 300 for
//! a minutely rule. Re-anchoring is skipped (plain walk from DTSTART) for:
//!
//! * rules with `COUNT` (the count runs from DTSTART; the walk is bounded by
//!   `COUNT` slots anyway);
//! * `FREQ=MINUTELY` with a day filter (BYMONTH, BYMONTHDAY, BYYEARDAY,
//!   BYWEEKNO, BYDAY), or with BYHOUR when `INTERVAL` does not divide 60;
//! * `FREQ=SECONDLY` with a day filter, or with BYHOUR / BYMINUTE when
//!   `INTERVAL` does not divide 60.
//!
//! For those sub-daily rules the `rrule` crate (0.14) does not walk a regular
//! lattice: how it skips hours and days depends on its path from DTSTART, so
//! no later state can be predicted. (Its results there also differ from
//! dateutil: `FREQ=MINUTELY;INTERVAL=15;BYHOUR=9,10;BYDAY=MO,TU,WE,TH,FR` with
//! DTSTART on a Saturday at 09:00 first fires on Thursday.)
//!
//! A stretch of more than 100 000 consecutive empty periods (the `rrule`
//! crate's loop guard, e.g. an impossible rule such as February 30th) counts
//! as exhaustion; slots after the year 10000 do not exist.

mod error;
mod model;
mod parse;
mod reanchor;
mod schedule;
mod zone;

#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
mod test_support;

pub use error::RecurrenceError;
pub use model::Recurrence;
pub use schedule::Schedule;
