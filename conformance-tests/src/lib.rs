//! # oncetask-conformance
//!
//! The one test suite every oncetask storage backend runs, unchanged. A
//! backend is done when this suite passes against its real server.
//!
//! The suite checks the [`oncetask_core::Store`] contract: what `create`,
//! `claim`, `swap`, `get`, `find`, `count_by_status`, `delete`, `next_due`,
//! `kinds` and `inspect` must do, with every state change computed by the
//! pure functions of [`oncetask_core::lifecycle`] — exactly as the manager
//! uses them — and, in [`manager`], the manager itself run on the backend.
//! Each rule of `docs/semantics.md`, and each fix of a Go weakness (W1, W4,
//! W6, W7, ...), has its own test whose name states the rule.
//!
//! The four in-tree backends (`oncetask-memory`, `oncetask-postgres`,
//! `oncetask-redis`, `oncetask-firestore`) run the suite exactly the way a
//! third-party backend does: a [`StoreFactory`] in their own test file and
//! one [`store_conformance_suite!`] call, nothing else — no private items,
//! no included source files. The guide to writing a backend is
//! [`docs/writing-a-backend.md`](https://github.com/oncetask/oncetask/blob/main/docs/writing-a-backend.md).
//!
//! ## Plugging a backend in
//!
//! Add this crate as a dev-dependency of the backend crate (it re-exports
//! [`async_trait`](macro@async_trait), so nothing else is needed):
//!
//! ```toml
//! [dev-dependencies]
//! oncetask-conformance = "0.1"
//! ```
//!
//! Implement [`StoreFactory`] (a source of *isolated* stores: a fresh schema,
//! key prefix or collection per call), then invoke the suite from one
//! integration-test file of the backend crate, e.g. `tests/conformance.rs`.
//! Here the crate's own reference model, [`model::ModelStore`], stands in
//! for the backend's store:
//!
//! ```
//! use oncetask_conformance::model::ModelStore;
//! use oncetask_conformance::{StoreFactory, async_trait, store_conformance_suite};
//!
//! struct MyFactory;
//!
//! #[async_trait]
//! impl StoreFactory for MyFactory {
//!     type Store = ModelStore; // the backend's store
//!
//!     async fn new_store(&self) -> ModelStore {
//!         ModelStore::default() // a fresh, empty, isolated store
//!     }
//!
//!     async fn insert_undecodable(&self, _: &ModelStore, _: &str, _: &str, _: &str) -> bool {
//!         false // the model cannot hold a document that is not a task
//!     }
//! }
//!
//! store_conformance_suite!(MyFactory);
//! # fn main() {}
//! ```
//!
//! A real backend also writes undecodable and corrupted records in
//! [`StoreFactory::insert_undecodable`] and [`StoreFactory::insert_corrupted`]
//! (past its own encoder), and declares its tie order in
//! [`StoreFactory::claim_ties`] if it is not by id; `oncetask-memory`'s
//! `tests/conformance.rs` is the shortest complete example.
//!
//! The macro expands to one `#[test]` per suite function, grouped in modules
//! named after the suite's modules (`create::…`, `claim::…`,
//! `manager::admin::…`), so `cargo test --test conformance claim::` runs one
//! concern. Those modules are declared where the macro is invoked and
//! `use super::*`, so the factory expression may name anything in scope
//! there; invoke it in a file (or module) of its own so that the names
//! `create`, `claim`, `model`, `manager`, ... are free. Async tests run on a
//! multi-thread runtime with 4 workers ([`support::run_multi_thread`]); the
//! property-based [`model`] test drives the store from a current-thread
//! runtime of its own.
//!
//! ## Writing a suite test
//!
//! A test is a `pub async fn <rule_as_a_sentence>(factory: &impl StoreFactory)`
//! in the module of its concern (or a plain `pub fn` for synchronous ones),
//! and must be listed in the registry macro `__conformance_list!` (in
//! `src/lib.rs`) — the one list the macro expands. A unit test of this
//! crate fails when a suite function is missing from that list. Tests take
//! every time from [`support::base_time`] and pass `now` explicitly; they
//! never sleep to let task time pass.

/// Re-exported so that backends can implement [`StoreFactory`] without
/// depending on `async-trait` themselves.
pub use async_trait::async_trait;

pub mod support;

pub mod connect;

pub mod cancel;
pub mod claim;
pub mod claim_priority;
pub mod concurrency;
pub mod corruption;
pub mod create;
pub mod delete;
pub mod env_isolation;
pub mod finished;
pub mod fleet;
pub mod hostile;
pub mod inspect;
pub mod manager;
pub mod model;
pub mod notify;
pub mod operator;
pub mod outcome;
pub mod pause;
pub mod read;
pub mod recurrence;
pub mod reset;
pub mod resource_keys;
pub mod starts;
pub mod storage;

/// A source of isolated stores for the suite.
///
/// Every call of [`StoreFactory::new_store`] must return a store that shares
/// no tasks with any other (its own schema, key prefix, collection or
/// database), because the suite's tests run in parallel.
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// The backend under test. `Clone` must give a handle to the same store
    /// (the concurrency tests hand clones to concurrent claimers).
    type Store: oncetask_core::Store + Clone;

    /// A new, empty, isolated store.
    async fn new_store(&self) -> Self::Store;

    /// Stores a document with this `id`, `env` and `kind` that cannot be
    /// decoded into a task, as corrupt or foreign data would be.
    ///
    /// Returns `false` if the backend cannot represent such a document (e.g.
    /// its schema makes it impossible); tests that need one then print a
    /// note and pass without checking.
    async fn insert_undecodable(
        &self,
        store: &Self::Store,
        id: &str,
        env: &str,
        kind: &str,
    ) -> bool;

    /// Stores, under this `id`, `env` and `kind`, the record a backend keeps
    /// for [`corruption::original`]`(id, env, kind)` (a pending task, ready
    /// at once), broken the way `corruption` says: the raw row, hash or
    /// document, written past the store's encoder, as bit rot, a bad
    /// migration or a foreign writer would leave it.
    ///
    /// Returns `false` if the backend cannot hold this corruption (e.g. its
    /// column types refuse it); tests then check nothing for it. The
    /// default cannot hold any.
    async fn insert_corrupted(
        &self,
        store: &Self::Store,
        id: &str,
        env: &str,
        kind: &str,
        corruption: Corruption,
    ) -> bool {
        let _ = (store, id, env, kind, corruption);
        false
    }

    /// How the backend's claims order ready tasks whose `leased_until`,
    /// `wait_until` and `created_at` are all equal. By id unless the
    /// backend declares otherwise.
    fn claim_ties(&self) -> ClaimTies {
        ClaimTies::Id
    }
}

pub use corruption::Corruption;

/// How a backend's claims break exact ties of the ready order (re-exported
/// from [`oncetask_core::store::ClaimTies`], where the contract lives).
pub use oncetask_core::store::ClaimTies;

/// Expands the whole conformance suite into `#[test]` functions for a backend.
///
/// `$factory` is an expression building a [`StoreFactory`]; it is evaluated
/// once per test, inside the generated modules (which `use super::*`). See
/// the [crate docs](crate) for a full example.
///
/// ```
/// # use oncetask_conformance::model::ModelStore;
/// # use oncetask_conformance::{StoreFactory, async_trait};
/// # struct MyFactory;
/// # #[async_trait]
/// # impl StoreFactory for MyFactory {
/// #     type Store = ModelStore;
/// #     async fn new_store(&self) -> ModelStore { ModelStore::default() }
/// #     async fn insert_undecodable(&self, _: &ModelStore, _: &str, _: &str, _: &str) -> bool {
/// #         false
/// #     }
/// # }
/// oncetask_conformance::store_conformance_suite!(MyFactory);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:expr) => {
        $crate::__conformance_list!(tests($factory));
    };
    ($factory:expr,) => {
        $crate::__conformance_list!(tests($factory));
    };
}

/// The registry: every suite function, by module, in ONE place.
///
/// `async module { ... }` groups hold `pub async fn name(factory: &impl
/// StoreFactory)` functions of `crate::module`, `sync` groups hold `pub fn`
/// ones, and `mod parent { groups }` nests groups for modules in a directory
/// (`mod manager { async admin { ... } }` lists `crate::manager::admin::*`).
/// A suite function missing here, or a name here without a function, fails
/// this crate's `every_suite_function_is_registered` test.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($mode:ident ($($args:tt)*)) => {
        $crate::__conformance_expand! {
            $mode ($($args)*)
            async create {
                creating_a_new_task_stores_it_exactly_as_given,
                every_field_survives_a_create_and_swap_round_trip,
                creating_an_existing_id_reports_already_exists_and_keeps_the_stored_task,
                creating_an_id_that_exists_in_another_env_reports_exists_in_other_env,
                duplicate_ids_in_one_bulk_create_create_the_first_and_report_the_rest_as_existing,
                bulk_create_reports_one_outcome_per_item_in_input_order,
                creating_nothing_returns_no_outcomes,
            }
            async claim {
                claim_takes_a_pending_task_and_leases_it_with_the_request_grant,
                claim_does_not_take_a_task_before_its_wait_until,
                claim_takes_a_task_whose_wait_until_equals_now,
                claim_takes_never_leased_tasks_before_expired_leases,
                claim_takes_expired_leases_oldest_expiry_first,
                claim_orders_by_wait_until_within_never_leased_tasks,
                claim_breaks_ties_by_created_at_then_id,
                claim_breaks_ties_of_keyed_tasks_as_the_backend_declares,
                an_expired_lease_is_reclaimed_with_one_more_attempt_and_a_new_token,
                a_live_lease_is_not_claimable,
                a_lease_ending_exactly_now_is_claimable,
                done_tasks_are_never_claimed,
                cancelled_tasks_are_claimable_and_count_a_cancellation_attempt,
                claim_honours_its_limit,
                claim_with_limit_zero_takes_nothing,
                claim_leaves_other_kinds_and_envs_untouched,
                claim_of_an_empty_store_returns_nothing,
                claim_skips_an_undecodable_document_reports_it_and_takes_the_next_task,
            }
            async finished {
                find_finished_selects_one_status_up_to_the_cutoff_in_finish_order,
                find_finished_pages_by_cursor_with_ties_by_id,
                a_tombstone_is_found_apart_and_still_holds_its_id,
            }
            async pause {
                pauses_are_stored_per_env_and_kind_and_report_changes,
                pausing_a_kind_with_odd_characters_pauses_only_it,
                a_pause_is_announced_as_a_change_touching_claimed_tasks,
            }
            async starts {
                starts_are_granted_up_to_the_limit_of_each_window,
                limiters_are_separate_per_env_kind_and_key,
                concurrent_takers_never_exceed_the_limit,
            }
            async storage {
                storage_stats_count_documents_per_status_with_tombstones_apart,
            }
            async claim_priority {
                a_claim_takes_higher_priorities_first_then_claim_order,
                an_oldest_claim_ignores_priority,
                a_high_priority_task_that_is_not_ready_does_not_hold_back_lower_ones,
                a_resource_key_is_exclusive_across_priorities,
                a_group_claim_picks_the_key_of_the_first_candidate_in_its_order,
            }
            async resource_keys {
                claim_skips_a_busy_resource_key_and_takes_the_next_ready_task,
                single_claim_never_takes_two_tasks_of_one_resource_key,
                a_resource_key_stays_busy_for_later_single_claims,
                an_expired_lease_does_not_hold_its_resource_key,
                a_done_task_does_not_hold_its_resource_key,
                other_kinds_sharing_a_resource_key_do_not_block,
                group_claim_takes_every_ready_task_of_the_first_free_key_in_wait_until_order,
                group_claim_is_capped_by_max_group_and_keeps_the_key_busy,
                group_claim_leaves_waiting_tasks_of_the_key_out,
                group_claim_takes_a_keyless_head_alone,
                group_claim_skips_a_key_with_a_live_lease,
                group_claim_includes_expired_leases_and_cancelled_tasks_of_the_key,
                group_claim_leaves_other_kinds_sharing_the_key_out,
                a_heartbeat_after_expiry_cannot_revive_a_lease_whose_key_moved_on,
                a_finished_member_whose_lease_was_extended_does_not_hold_its_key,
            }
            async outcome {
                success_swapped_with_the_claim_version_completes_the_task,
                retryable_failure_backs_off_and_the_task_is_claimable_after_the_delay,
                failure_at_max_attempts_is_permanent,
                stale_lease_token_cannot_complete_a_reclaimed_task,
                stale_failure_cannot_clear_the_new_lease,
                blind_swap_with_a_stale_version_conflicts_and_writes_nothing,
                a_lost_attempt_never_turns_a_permanent_failure_into_completed,
                swap_of_a_deleted_task_reports_not_found,
                release_makes_the_task_ready_at_once_without_an_error,
                extend_lease_keeps_the_task_from_being_reclaimed,
                stale_token_cannot_extend_a_reclaimed_lease,
                bulk_swap_reports_one_outcome_per_item_in_input_order,
                two_swaps_of_one_task_with_the_same_expected_version_apply_once,
                a_stale_write_from_a_deleted_incarnation_cannot_land_on_the_recreated_task,
                a_swap_onto_an_undecodable_document_fails_for_that_item_only,
            }
            async cancel {
                cancelling_a_pending_task_makes_it_cancellation_pending,
                cancelling_a_waiting_task_makes_it_ready_at_once,
                cancel_while_leased_keeps_the_lease,
                cancelled_task_finished_by_its_cancellation_handler_is_cancelled,
                success_of_a_task_cancelled_while_running_ends_cancelled_with_its_result,
                cancelling_a_done_task_is_not_applicable_and_writes_nothing,
                cancelling_twice_is_not_applicable,
                cancel_racing_a_completion_conflicts_and_never_turns_completed_into_cancelled,
            }
            async reset {
                reset_puts_each_terminal_status_back_to_pending_with_history_cleared,
                reset_keeps_structural_fields,
                reset_of_a_non_terminal_task_is_not_applicable,
                resetting_twice_is_not_applicable_the_second_time,
                a_stale_worker_cannot_complete_a_task_reset_after_its_lease_was_lost,
            }
            async delete {
                delete_removes_a_task,
                deleting_a_missing_id_reports_not_found,
                bulk_delete_reports_one_outcome_per_item_in_input_order,
                swap_after_delete_reports_not_found,
                a_deleted_id_can_be_created_again,
                deleting_a_leased_task_makes_its_completion_report_not_found,
                an_undecodable_document_can_be_deleted,
                a_versioned_delete_of_a_changed_task_conflicts_and_removes_nothing,
                only_an_unversioned_delete_removes_an_undecodable_document,
            }
            async read {
                get_returns_tasks_in_input_order_omitting_missing_and_duplicate_ids,
                get_of_no_ids_returns_nothing,
                get_reports_an_undecodable_document,
                find_filters_by_kind,
                find_filters_by_resource_key_across_kinds,
                find_filters_by_status_at_now,
                find_filters_by_priority,
                find_not_done_excludes_terminal_tasks,
                find_orders_by_created_at_then_id,
                find_pages_with_offset_and_limit,
                find_pages_with_a_cursor,
                count_by_status_counts_each_status_at_now,
                count_by_status_filters_by_kind,
                undecodable_documents_are_counted_apart_from_every_status,
                next_due_returns_the_earliest_wait_until_after_the_given_time,
                next_due_includes_lease_expiries,
                next_due_is_strictly_after_the_given_time,
                next_due_uses_the_later_of_wait_and_lease,
                next_due_ignores_done_tasks_other_kinds_and_envs,
            }
            async operator {
                every_store_serves_kind_key_open_tasks_and_a_time_range,
                a_filter_the_store_refuses_is_refused_by_find_too,
                find_filters_by_a_creation_time_range_inclusive_at_both_ends,
                find_filters_by_id_prefix,
                find_generators_lists_the_envs_generators_up_to_the_limit,
                open_resource_keys_groups_open_tasks_busiest_first,
                find_undecodable_lists_documents_that_are_not_tasks_with_reasons,
            }
            async inspect {
                kinds_lists_each_kind_of_the_env_once_in_order,
                an_undecodable_document_adds_no_kind,
                inspect_of_an_empty_env_reports_no_kinds,
                inspect_counts_each_kind_by_status_at_now,
                inspect_reports_when_the_longest_waiting_pending_task_became_ready,
                inspect_reports_each_kinds_next_due_time_after_now,
                inspect_sees_only_its_env,
            }
            async recurrence {
                a_generator_is_created_waiting_for_its_first_slot,
                advancing_a_claimed_generator_stores_its_occurrence_and_moves_to_the_next_slot,
                spawning_the_same_slot_twice_creates_no_duplicate_occurrence,
                a_late_generator_spawns_one_occurrence_and_skips_missed_slots,
                an_exhausted_generator_completes_after_spawning_its_last_occurrence,
                a_cancelled_generator_finishes_without_spawning,
                a_reset_generator_resumes_at_the_next_slot_without_a_bogus_occurrence,
                the_spawned_occurrence_is_claimable_like_any_task,
            }
            async env_isolation {
                claim_never_takes_tasks_of_another_env,
                a_live_lease_in_another_env_does_not_hold_a_resource_key,
                group_claim_never_mixes_envs,
                find_count_and_next_due_see_only_their_env,
                get_returns_a_task_whatever_its_env,
                ids_are_global_across_envs,
            }
            async concurrency {
                concurrent_claimers_never_lease_a_task_twice,
                concurrent_claimers_never_hold_two_live_leases_in_one_resource_key,
                concurrent_group_claimers_never_share_a_resource_key,
                concurrent_creates_of_one_id_create_it_once,
                concurrent_swaps_with_one_expected_version_apply_once,
            }
            async notify {
                a_subscriber_hears_about_new_tasks_of_its_env,
                an_operators_change_is_announced_as_touching_held_tasks,
            }
            async corruption {
                a_corrupted_record_is_reported_by_id_and_not_listed,
                a_corrupted_record_does_not_stop_its_kind,
                a_corrupted_record_can_only_be_deleted,
            }
            sync model {
                model_matches_store,
            }
            sync hostile {
                hostile_input_gets_a_typed_answer_and_changes_nothing_else,
                huge_values_get_a_typed_answer_and_change_nothing_else,
            }
            mod manager {
                async admin {
                    creating_the_same_task_twice_is_a_no_op,
                    create_many_reports_each_item,
                    invalid_tasks_are_rejected_with_typed_errors_and_nothing_is_stored,
                    a_second_handler_for_a_kind_is_rejected,
                    a_reset_failed_task_runs_again_and_completes,
                    a_running_task_cannot_be_deleted,
                    an_undecodable_document_can_be_deleted,
                    environments_are_isolated,
                    counts_reflect_statuses,
                }
                async cancellation {
                    a_cancelled_task_without_a_cancellation_handler_is_finished_without_running,
                    a_cancellation_handler_runs_and_is_retried_by_its_own_policy,
                    cancelling_a_running_task_lets_it_finish_and_ends_it_cancelled,
                    cancel_by_resource_key_cancels_only_that_key,
                    cancel_skips_done_cancelled_and_missing_tasks,
                }
                async execution {
                    failed_attempts_follow_the_default_backoff_schedule,
                    a_task_fails_permanently_after_max_attempts,
                    no_retry_fails_on_the_first_error,
                    a_panicking_handler_becomes_a_task_error,
                    a_result_too_deep_to_read_back_fails_the_attempt,
                    an_error_message_the_store_cannot_hold_still_fails_the_task,
                    a_handler_outliving_its_lease_is_timed_out,
                    a_heartbeat_keeps_a_long_handler_leased,
                    an_expired_lease_is_reclaimed_and_the_old_worker_is_fenced,
                    a_run_report_says_why_an_outcome_was_not_stored,
                    handlers_see_their_task_id_and_resource_key,
                    an_explicit_timeout_overrides_the_lease_derived_one,
                    a_sub_second_backoff_is_kept_to_the_millisecond,
                    the_error_history_is_capped,
                    an_undecodable_task_does_not_stop_its_kind,
                    an_undecodable_document_alone_is_reported_once,
                    a_panicking_retry_policy_still_records_the_failure,
                    a_slow_cancellation_handler_does_not_starve_the_rest_of_its_group,
                    a_permanent_error_fails_at_once_under_every_retry_policy,
                    a_permanent_error_of_a_cancellation_handler_ends_the_task_at_once,
                }
                async recurrence {
                    a_weekly_rule_over_three_weeks_gives_one_generator_and_three_occurrences,
                    a_late_generator_spawns_one_occurrence_and_skips_missed_slots,
                    an_exhausted_rule_completes_its_generator,
                    a_cancelled_generator_stops_spawning,
                    a_reset_generator_resumes_from_now_without_a_bogus_occurrence,
                    an_offset_dtstart_is_scheduled_in_utc,
                    a_sparse_rule_has_no_search_horizon,
                }
                async resource_keys {
                    eight_workers_never_run_two_tasks_of_one_resource_key_at_once,
                    a_group_handler_receives_the_ready_tasks_of_a_key_in_wait_until_order,
                    a_failing_group_fails_every_task_of_the_group,
                    a_group_larger_than_the_cap_is_split,
                }
                async isolation {
                    a_manager_cannot_touch_another_envs_tasks_by_id_or_resource_key,
                    injection_looking_names_are_stored_verbatim_and_harm_nothing,
                    a_refused_name_fails_only_its_own_item_of_a_bulk_create,
                }
                async shutdown {
                    shutdown_under_load_leaves_no_lease_and_runs_nothing_twice,
                    repeated_and_concurrent_shutdowns_are_harmless,
                }
                async typed {
                    a_typed_handler_gets_its_payload_and_context,
                    a_payload_that_does_not_decode_fails_at_once_naming_the_type,
                    a_permanent_handler_error_fails_at_once,
                    a_typed_cancellation_handler_gets_the_payload,
                    a_typed_group_handler_gets_the_whole_group,
                    a_producer_declares_the_types_it_creates,
                    a_malformed_task_fails_alone_and_its_group_runs,
                }
                async snooze {
                    a_snoozed_task_runs_again_later_without_counting_an_attempt,
                    a_snooze_leaves_the_retry_backoff_alone,
                    a_snooze_frees_the_resource_key_at_once,
                    a_group_handler_snoozes_its_whole_group,
                    a_snooze_to_the_past_runs_at_once_and_one_beyond_ten_years_fails,
                    a_snooze_returned_as_an_error_is_a_snooze,
                    a_snooze_after_a_cancel_ends_the_task_cancelled,
                }
                async cancel_running {
                    cancelling_a_running_task_signals_its_handler,
                    a_cancel_from_another_process_reaches_the_running_handler,
                    a_heartbeat_brings_a_cancel_made_elsewhere,
                    a_handler_that_ignores_the_cancel_still_ends_cancelled,
                    a_task_cancelled_after_its_claim_never_starts_its_main_handler,
                }
                async task_options {
                    a_tasks_own_max_attempts_overrides_the_handlers_policy,
                    bad_task_options_are_typed_errors_that_store_nothing,
                    task_options_are_stored_and_an_operator_can_reprioritize,
                    higher_priority_tasks_run_first,
                    a_low_priority_task_starts_within_n_claims_under_a_high_priority_stream,
                }
                async retention {
                    a_pruned_task_keeps_its_id_and_refuses_cancel_and_reset,
                    each_status_has_its_period_and_unfinished_tasks_stay,
                    a_dry_run_counts_and_changes_nothing,
                    concurrent_pruners_never_delete_twice_nor_touch_unfinished_tasks,
                    a_task_reset_after_the_pruner_read_it_is_left_alone,
                }
                async pause {
                    a_paused_kind_claims_nothing_in_any_manager_until_resumed,
                    a_resume_from_another_process_wakes_workers_at_once,
                    pausing_hands_back_tasks_claimed_ahead,
                }
                async rate_limit {
                    a_kind_rate_limit_holds_exactly_across_managers,
                    a_resource_key_limit_defers_the_extra_tasks_without_counting_attempts,
                    rate_limited_workers_start_each_window_as_it_opens,
                }
                async bulk {
                    failed_tasks_of_a_kind_or_key_are_counted_redriven_and_deleted,
                }
                async runtime {
                    a_create_wakes_idle_workers_at_once,
                    idle_workers_wake_at_the_next_due_time,
                    a_backoff_retry_runs_when_the_clock_passes_it,
                    shutdown_drains_running_handlers_and_records_their_outcomes,
                    shutdown_releases_handlers_that_outlive_the_grace_period,
                }
            }
        }
    };
}

/// Expands the registry for [`store_conformance_suite!`] (`tests`) or for
/// [`registered`] (`names`), one group at a time. A group is
/// `async module { fn, ... }`, `sync module { fn, ... }`, or
/// `mod parent { groups... }` for suite modules nested in a directory.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    (tests ($factory:expr) $($groups:tt)*) => {
        $crate::__conformance_expand!(@tests $factory; []; $($groups)*);
    };
    (names ($out:ident) $($groups:tt)*) => {
        $crate::__conformance_expand!(@names $out; []; $($groups)*);
    };

    (@tests $factory:expr; [$($prefix:ident)*];) => {};
    (@tests $factory:expr; [$($prefix:ident)*];
        mod $module:ident { $($inner:tt)* } $($rest:tt)*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_expand!(@tests $factory; [$($prefix)* $module]; $($inner)*);
        }
        $crate::__conformance_expand!(@tests $factory; [$($prefix)*]; $($rest)*);
    };
    (@tests $factory:expr; [$($prefix:ident)*];
        $flavor:ident $module:ident { $($test:ident),* $(,)? } $($rest:tt)*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_expand!(@fns $flavor; $factory; [$($prefix)* $module]; $($test),*);
        }
        $crate::__conformance_expand!(@tests $factory; [$($prefix)*]; $($rest)*);
    };

    (@names $out:ident; [$($prefix:ident)*];) => {};
    (@names $out:ident; [$($prefix:ident)*];
        mod $module:ident { $($inner:tt)* } $($rest:tt)*) => {
        $crate::__conformance_expand!(@names $out; [$($prefix)* $module]; $($inner)*);
        $crate::__conformance_expand!(@names $out; [$($prefix)*]; $($rest)*);
    };
    (@names $out:ident; [$($prefix:ident)*];
        $flavor:ident $module:ident { $($test:ident),* $(,)? } $($rest:tt)*) => {
        $crate::__conformance_expand!(
            @push $out;
            concat!($(stringify!($prefix), "::",)* stringify!($module));
            $($test),*
        );
        $crate::__conformance_expand!(@names $out; [$($prefix)*]; $($rest)*);
    };

    (@fns $flavor:ident; $factory:expr; $path:tt; $($test:ident),*) => {
        $( $crate::__conformance_test!($flavor, $factory, $path, $test); )*
    };
    (@push $out:ident; $module:expr; $($test:ident),*) => {
        $( $out.push(($module, stringify!($test))); )*
    };
}

/// One generated test.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    (async, $factory:expr, [$($path:ident)+], $test:ident) => {
        #[test]
        fn $test() {
            $crate::support::run_multi_thread(async {
                let factory = $factory;
                $crate $(::$path)+ ::$test(&factory).await;
            });
        }
    };
    (sync, $factory:expr, [$($path:ident)+], $test:ident) => {
        #[test]
        fn $test() {
            let factory = $factory;
            $crate $(::$path)+ ::$test(&factory);
        }
    };
}

/// Every registered suite function as `(module path, function)`, e.g.
/// `("claim", "a_live_lease_is_not_claimable")`, in registry order.
#[allow(clippy::vec_init_then_push)] // the pushes come from the registry macro
pub fn registered() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    __conformance_list!(names(out));
    out
}

/// The suite run against the reference model: checks that the suite's
/// expectations and the model's reading of the contract agree.
#[cfg(test)]
mod model_self_test {
    use crate::StoreFactory;
    use crate::model::ModelStore;

    struct ModelFactory;

    #[async_trait::async_trait]
    impl StoreFactory for ModelFactory {
        type Store = ModelStore;
        async fn new_store(&self) -> ModelStore {
            ModelStore::default()
        }
        async fn insert_undecodable(&self, _: &ModelStore, _: &str, _: &str, _: &str) -> bool {
            false
        }
    }

    crate::store_conformance_suite!(ModelFactory);
}

#[cfg(test)]
mod registry_tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The module path of a source file: `src/claim.rs` is `claim`,
    /// `src/manager/admin.rs` is `manager::admin`, `src/manager/mod.rs` is `manager`.
    fn module_path(relative: &Path) -> String {
        let mut parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        parts.join("::")
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read a source directory") {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                out.push(path);
            }
        }
    }

    /// `(module, function)` for every suite function in `src/`: a `pub fn`
    /// or `pub async fn` whose only parameter is `factory: &impl StoreFactory`
    /// and that returns nothing. (Helpers that take a factory return something
    /// or are not `pub`.)
    fn suite_functions() -> BTreeSet<(String, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut found = BTreeSet::new();
        for path in files {
            let relative = path.strip_prefix(&src).expect("a file under src/");
            let module = module_path(relative);
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a module");
            for (start, _) in text.match_indices("pub ") {
                let rest = &text[start + 4..];
                let rest = rest.strip_prefix("async ").unwrap_or(rest);
                let Some(rest) = rest.strip_prefix("fn ") else {
                    continue;
                };
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let signature: String = rest
                    .split('{')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let signature = signature.replace(",)", ")");
                if signature.ends_with("(factory:&implStoreFactory)") {
                    found.insert((module.clone(), name));
                }
            }
        }
        found
    }

    #[test]
    fn every_suite_function_is_registered() {
        let list = super::registered();
        let registered: BTreeSet<(String, String)> = list
            .iter()
            .map(|(m, f)| ((*m).to_owned(), (*f).to_owned()))
            .collect();
        let found = suite_functions();
        let missing: Vec<_> = found.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "suite functions missing from __conformance_list!: {missing:?}"
        );
        let unknown: Vec<_> = registered.difference(&found).collect();
        assert!(
            unknown.is_empty(),
            "__conformance_list! names functions that do not exist: {unknown:?}"
        );
        assert_eq!(
            registered.len(),
            list.len(),
            "a suite function is registered twice"
        );
    }
}
