//! `cancel`, `reset`, `delete` and `reprioritize`: pick the tasks, confirm, then call the
//! manager's bulk operator action and report each id.

use std::collections::HashSet;
use std::io::Write;

use oncetask::TaskStatus;
use oncetask::manager::BulkReport;
use serde_json::json;

use super::Ctx;
use crate::args::ActionArgs;
use crate::error::CliError;

/// Which operator action a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// [`oncetask::Manager::cancel_many`].
    Cancel,
    /// [`oncetask::Manager::reset_many`].
    Reset,
    /// [`oncetask::Manager::delete_many`].
    Delete,
    /// [`oncetask::Manager::reprioritize_many`] to this priority.
    Reprioritize(i8),
}

impl Action {
    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Reset => "reset",
            Action::Delete => "delete",
            Action::Reprioritize(_) => "reprioritize",
        }
    }

    fn past(self) -> &'static str {
        match self {
            // Finished by the kind's cancellation path, not by this write.
            Action::Cancel => "marked for cancellation",
            Action::Reset => "reset",
            Action::Delete => "deleted",
            Action::Reprioritize(_) => "reprioritized",
        }
    }

    /// Why the manager skips an id for this action.
    fn skipped_because(self) -> &'static str {
        match self {
            Action::Cancel => "already finished or cancelled, or repeated",
            Action::Reset => "not finished, or repeated",
            Action::Delete => "repeated",
            Action::Reprioritize(_) => "already finished, or repeated",
        }
    }
}

/// Ids listed in a confirmation prompt before it says "and N more".
const PROMPT_IDS: usize = 10;

/// Runs `action` on the tasks `args` selects.
pub(crate) async fn act(
    ctx: &mut Ctx<'_, '_>,
    action: Action,
    args: &ActionArgs,
) -> Result<(), CliError> {
    let (ids, what) = match &args.resource_key {
        Some(key) => {
            let ids = by_resource_key(ctx, action, key, args.kind.as_deref()).await?;
            let kind = args
                .kind
                .as_ref()
                .map(|k| format!(" of kind {k:?}"))
                .unwrap_or_default();
            let what = format!(
                "{} task{} with resource key {key:?}{kind}",
                ids.len(),
                plural(ids.len())
            );
            if ids.is_empty() {
                let message = format!(
                    "nothing to {}: no task with resource key {key:?}{kind} in environment {:?} {}",
                    action.name(),
                    ctx.env(),
                    match action {
                        Action::Cancel => "is open and not cancelled yet",
                        Action::Reset => "is finished",
                        Action::Delete => "exists",
                        Action::Reprioritize(_) => "is open",
                    }
                );
                return report(ctx, action, &BulkReport::default(), Some(&message));
            }
            (ids, what)
        }
        None => {
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
            (ids, what)
        }
    };
    let mut question = format!(
        "{} {what} in environment {:?}",
        capitalized(action),
        ctx.env()
    );
    if let Action::Reprioritize(priority) = action {
        question.push_str(&format!(" to priority {priority}"));
    }
    if ids.len() > 1 {
        let shown: Vec<&str> = ids.iter().take(PROMPT_IDS).map(String::as_str).collect();
        let more = ids.len().saturating_sub(PROMPT_IDS);
        question.push_str(&format!(" ({}", shown.join(", ")));
        if more > 0 {
            question.push_str(&format!(" and {more} more"));
        }
        question.push(')');
    }
    question.push('?');
    confirm(ctx, &question, args.yes)?;
    let report_ = match action {
        Action::Cancel => ctx.manager.cancel_many(&ids).await?,
        Action::Reset => ctx.manager.reset_many(&ids).await?,
        Action::Delete => ctx.manager.delete_many(&ids).await?,
        Action::Reprioritize(priority) => ctx.manager.reprioritize_many(&ids, priority).await?,
    };
    report(ctx, action, &report_, None)
}

/// The ids of the tasks with `key` that `action` applies to.
async fn by_resource_key(
    ctx: &Ctx<'_, '_>,
    action: Action,
    key: &str,
    kind: Option<&str>,
) -> Result<Vec<String>, CliError> {
    let mut filter = ctx.manager.filter();
    filter.resource_key = Some(key.to_owned());
    filter.kind = kind.map(str::to_owned);
    match action {
        Action::Cancel | Action::Reprioritize(_) => filter.not_done = true,
        Action::Reset => {
            filter.statuses = vec![
                TaskStatus::Completed,
                TaskStatus::Failed,
                TaskStatus::Cancelled,
            ]
        }
        Action::Delete => {}
    }
    let tasks = ctx.manager.find(filter).await?;
    Ok(tasks
        .into_iter()
        .filter(|t| action != Action::Cancel || !t.is_cancelled)
        .map(|t| t.id)
        .collect())
}

/// Asks `question` unless `yes`; refuses when there is no terminal to ask.
fn confirm(ctx: &mut Ctx<'_, '_>, question: &str, yes: bool) -> Result<(), CliError> {
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
            if !ids.is_empty() {
                writeln!(out, "{label} {}: {}", ids.len(), ids.join(", "))?;
            }
            Ok(())
        };
        line(*out, action.past().to_owned(), &report.succeeded)?;
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
