//! `cancel`, `reset`, `delete` and `reprioritize`: pick the tasks (by id,
//! or by resource key, kind and status), confirm (or only count, with
//! `--dry-run`), then call the manager's bulk operator action and report
//! each id.

use std::collections::HashSet;
use std::io::Write;

use oncetask::TaskFilter;
use oncetask::manager::BulkReport;
use serde_json::json;

use super::Ctx;
use crate::args::ActionArgs;
use crate::error::CliError;

/// Which operator action a command runs (the manager's own type).
pub use oncetask::BulkAction as Action;

/// What an action did to the tasks it changed, for the report.
fn past(action: Action) -> &'static str {
    match action {
        // Finished by the kind's cancellation path, not by this write.
        Action::Cancel => "marked for cancellation",
        Action::Reset => "reset",
        Action::Delete => "deleted",
        Action::Reprioritize(_) => "reprioritized",
    }
}

/// Ids listed in a confirmation prompt before it says "and N more".
const PROMPT_IDS: usize = 10;

/// Ids listed per line of a report (a bulk action may touch thousands;
/// `--json` lists them all).
const REPORT_IDS: usize = 50;

/// Runs `action` on the tasks `args` selects: ids, or a selection by
/// resource key, kind and status (each optional), acted on in batches.
pub(crate) async fn act(
    ctx: &mut Ctx<'_, '_>,
    action: Action,
    args: &ActionArgs,
) -> Result<(), CliError> {
    if args.ids.is_empty() {
        return act_on_selection(ctx, action, args).await;
    }
    let mut seen = HashSet::new();
    let ids: Vec<String> = args
        .ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    let what = match ids.as_slice() {
        [one] => format!("task {one:?}"),
        many => format!("{} tasks", many.len()),
    };
    if args.dry_run {
        return dry_run(ctx, action, ids.len() as u64, &what);
    }
    let mut question = format!(
        "{} {what} in environment {:?}",
        capitalized(action),
        ctx.env()
    );
    if let Action::Reprioritize(priority) = action {
        question.push_str(&format!(" to priority {priority}"));
    }
    if ids.len() > 1 {
        question.push_str(&format!(" ({})", shown(&ids)));
    }
    question.push('?');
    confirm(ctx, &question, args.yes)?;
    let report_ = ctx.manager.act_many(action, &ids).await?;
    report(ctx, action, &report_, None)
}

/// The selection's filter: what `args` names, narrowed to the tasks
/// `action` applies to when no status is named ([`oncetask::Manager::applicable`]).
fn selection(ctx: &Ctx<'_, '_>, action: Action, args: &ActionArgs) -> TaskFilter {
    let mut filter = ctx.manager.filter();
    filter.resource_key = args.resource_key.clone();
    filter.kind = args.kind.clone();
    filter.statuses = args.status.clone();
    ctx.manager.applicable(action, filter)
}

/// Says what a selection is, for prompts and notes.
fn describe(args: &ActionArgs) -> String {
    let mut parts = Vec::new();
    if !args.status.is_empty() {
        let names: Vec<&str> = args.status.iter().map(|s| s.as_str()).collect();
        parts.push(format!("with status {}", names.join(" or ")));
    }
    if let Some(key) = &args.resource_key {
        parts.push(format!("with resource key {key:?}"));
    }
    if let Some(kind) = &args.kind {
        parts.push(format!("of kind {kind:?}"));
    }
    parts.join(" ")
}

/// `action` on every task a selection picks: counted first (the dry run
/// stops there), confirmed with that count, then done in batches.
async fn act_on_selection(
    ctx: &mut Ctx<'_, '_>,
    action: Action,
    args: &ActionArgs,
) -> Result<(), CliError> {
    let filter = selection(ctx, action, args);
    let selected = describe(args);
    let count = ctx.manager.count_matching(&filter).await?;
    let what = format!("{count} task{} {selected}", plural(count as usize));
    if args.dry_run {
        return dry_run(ctx, action, count, &what);
    }
    if count == 0 {
        let message = format!(
            "nothing to {}: no task {selected} in environment {:?} {}",
            action.name(),
            ctx.env(),
            action.applies_to()
        );
        return report(ctx, action, &BulkReport::default(), Some(&message));
    }
    let mut question = format!(
        "{} {what} in environment {:?}",
        capitalized(action),
        ctx.env()
    );
    if let Action::Reprioritize(priority) = action {
        question.push_str(&format!(" to priority {priority}"));
    }
    question.push('?');
    confirm(ctx, &question, args.yes)?;
    let report_ = ctx.manager.act_matching(action, filter).await?;
    report(ctx, action, &report_, None)
}

/// Prints what `action` would touch and changes nothing.
fn dry_run(ctx: &mut Ctx<'_, '_>, action: Action, count: u64, what: &str) -> Result<(), CliError> {
    if ctx.json {
        let value = json!({
            "action": action.name(),
            "env": ctx.env(),
            "dryRun": true,
            "count": count,
        });
        return ctx.print_json(&value);
    }
    let env = ctx.env().to_owned();
    writeln!(
        ctx.io.out,
        "dry run: would {} {what} in environment {env:?}; nothing was changed",
        action.name(),
    )?;
    Ok(())
}

/// The first ids of a list, and how many more there are.
fn shown(ids: &[String]) -> String {
    let first: Vec<&str> = ids.iter().take(PROMPT_IDS).map(String::as_str).collect();
    let more = ids.len().saturating_sub(PROMPT_IDS);
    if more > 0 {
        format!("{} and {more} more", first.join(", "))
    } else {
        first.join(", ")
    }
}

/// Asks `question` unless `yes`; refuses when there is no terminal to ask.
pub(super) fn confirm(ctx: &mut Ctx<'_, '_>, question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let Some(input) = ctx.io.input.as_mut() else {
        return Err(CliError::usage(format!(
            "{question} Not confirmed: stdin is not a terminal, so there is no one to ask; \
             pass --yes to confirm. Nothing was changed."
        )));
    };
    write!(ctx.io.err, "{question} [y/N] ")?;
    ctx.io.err.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::failed("not confirmed: nothing was changed")),
    }
}

/// Prints the per-id outcome; an error when an id failed or was not found.
fn report(
    ctx: &mut Ctx<'_, '_>,
    action: Action,
    report: &BulkReport,
    note: Option<&str>,
) -> Result<(), CliError> {
    if ctx.json {
        let value = json!({
            "action": action.name(),
            "env": ctx.env(),
            "succeeded": report.succeeded,
            "skipped": report.skipped,
            "notFound": report.not_found,
            "failed": report
                .failed
                .iter()
                .map(|(id, e)| json!({ "id": id, "error": e.to_string() }))
                .collect::<Vec<_>>(),
        });
        ctx.print_json(&value)?;
    } else {
        let out = &mut ctx.io.out;
        if let Some(note) = note {
            writeln!(out, "{note}")?;
        }
        let line = |out: &mut dyn Write, label: String, ids: &[String]| -> std::io::Result<()> {
            if ids.len() > REPORT_IDS {
                let first: Vec<&str> = ids.iter().take(REPORT_IDS).map(String::as_str).collect();
                writeln!(out, "{label} {}: {}, …", ids.len(), first.join(", "))?;
            } else if !ids.is_empty() {
                writeln!(out, "{label} {}: {}", ids.len(), ids.join(", "))?;
            }
            Ok(())
        };
        line(*out, past(action).to_owned(), &report.succeeded)?;
        line(
            *out,
            format!("skipped ({})", action.skipped_because()),
            &report.skipped,
        )?;
        line(*out, "not found".to_owned(), &report.not_found)?;
        if !report.failed.is_empty() {
            writeln!(out, "failed {}:", report.failed.len())?;
            for (id, e) in &report.failed {
                writeln!(out, "  {id}: {e}")?;
            }
        }
        if note.is_none()
            && report.succeeded.is_empty()
            && report.skipped.is_empty()
            && report.not_found.is_empty()
            && report.failed.is_empty()
        {
            writeln!(out, "nothing to {}", action.name())?;
        }
    }
    let (failed, missing) = (report.failed.len(), report.not_found.len());
    if failed + missing == 0 {
        return Ok(());
    }
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if missing > 0 {
        parts.push(format!(
            "{missing} not found in environment {:?}",
            ctx.env()
        ));
    }
    Err(CliError::failed(format!(
        "{}: {}",
        action.name(),
        parts.join(", ")
    )))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn capitalized(action: Action) -> &'static str {
    match action {
        Action::Cancel => "Cancel",
        Action::Reset => "Reset",
        Action::Delete => "Delete",
        Action::Reprioritize(_) => "Reprioritize",
    }
}
