//! `tasks list` and `tasks show`.

use chrono::{DateTime, Utc};
use oncetask::Task;
use oncetask::backend::{Fetched, TaskCursor};
use oncetask::display::standing;
use serde_json::{Value, json};

use super::Ctx;
use crate::args::ListArgs;
use crate::error::CliError;
use crate::render::{Table, relative, time, time_and_relative, truncate};

/// A task as JSON: every stored field (camelCase, as the library
/// serializes it) plus its `status` at `now`.
pub(crate) fn task_json(task: &Task, now: DateTime<Utc>) -> Value {
    let mut value = serde_json::to_value(task).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("status".into(), json!(task.status(now)));
    }
    value
}

/// `tasks list`: a page of the matching tasks, oldest first, from the
/// `--after` cursor; it prints the cursor of the next page.
pub(crate) async fn list(ctx: &mut Ctx<'_, '_>, args: &ListArgs) -> Result<(), CliError> {
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let offset = usize::try_from(args.offset).unwrap_or(usize::MAX);
    let mut filter = ctx.manager.filter();
    filter.kind = args.kind.clone();
    filter.resource_key = args.resource_key.clone();
    filter.statuses = args.status.clone();
    filter.priority = args.priority;
    filter.not_done = args.open;
    filter.id_prefix = args.id_prefix.clone();
    filter.created_until = args.created_until;
    if let Some(from) = args.created_from {
        filter = filter.created_from(from);
    }
    if let Some(after) = &args.after {
        filter.after = Some(after.clone());
    }
    filter.offset = offset;
    // One more than asked, to know whether another page follows.
    filter.limit = Some(limit.saturating_add(1));
    let now = filter.now;
    let mut tasks = ctx.manager.find(filter).await?;
    let more = tasks.len() > limit;
    tasks.truncate(limit);
    let next_offset = more.then(|| offset.saturating_add(limit));
    // The next page starts after this page's last task: keyset paging.
    let next_after = more
        .then(|| tasks.last().map(|t| TaskCursor::of(t).to_text()))
        .flatten();
    let env = ctx.env().to_owned();

    if ctx.json {
        let value = json!({
            "env": env,
            "now": now,
            "after": args.after.as_ref().map(TaskCursor::to_text),
            "offset": offset,
            "limit": limit,
            "nextAfter": next_after,
            "nextOffset": next_offset,
            "tasks": tasks.iter().map(|t| task_json(t, now)).collect::<Vec<_>>(),
        });
        return ctx.print_json(&value);
    }
    if tasks.is_empty() {
        let page = if offset > 0 {
            format!(" at offset {offset}")
        } else {
            String::new()
        };
        writeln!(ctx.io.out, "no matching tasks in environment {env:?}{page}")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "KIND",
        "STATUS",
        "WHEN",
        ">ATTEMPTS",
        "RESOURCE KEY",
        "CREATED",
        "LAST ERROR",
    ]);
    for task in &tasks {
        let status = task.status(now);
        table.row(vec![
            task.id.clone(),
            task.kind.clone(),
            status.to_string(),
            standing(task, now),
            task.attempts.to_string(),
            task.resource_key.clone().unwrap_or_default(),
            relative(task.created_at, now),
            task.errors
                .last()
                .map(|e| truncate(&e.error, 60))
                .unwrap_or_default(),
        ]);
    }
    table.write(ctx.io.out)?;
    let last = offset + tasks.len();
    let from = match &args.after {
        Some(after) => format!(" after {}", after.to_text()),
        None => String::new(),
    };
    match next_after {
        Some(next) => writeln!(
            ctx.io.out,
            "\ntasks {}-{last}{from} of environment {env:?}; next page: --after {next}",
            offset + 1
        )?,
        None if offset > 0 || args.after.is_some() => writeln!(
            ctx.io.out,
            "\ntasks {}-{last}{from} of environment {env:?} (last page)",
            offset + 1
        )?,
        None => writeln!(
            ctx.io.out,
            "\n{last} task{} in environment {env:?}",
            if last == 1 { "" } else { "s" }
        )?,
    }
    Ok(())
}

/// `tasks show ID`: every field of one task.
pub(crate) async fn show(ctx: &mut Ctx<'_, '_>, id: &str) -> Result<(), CliError> {
    let now = ctx.manager.clock().now();
    let fetched = ctx.manager.store().get(&[id.to_owned()]).await?;
    let task = match fetched.into_iter().next() {
        None => {
            return Err(CliError::failed(format!(
                "no task {id:?} (in any environment)"
            )));
        }
        Some(Fetched::Undecodable(u)) => {
            return Err(CliError::failed(format!(
                "the stored document {id:?} is not a valid task: {}",
                u.reason
            )));
        }
        Some(Fetched::Task(task)) if task.env != ctx.env() => {
            return Err(CliError::failed(format!(
                "no task {id:?} in environment {:?}; it is in environment {:?} (use --env {})",
                ctx.env(),
                task.env,
                task.env
            )));
        }
        Some(Fetched::Task(task)) => task,
    };
    if ctx.json {
        return ctx.print_json(&task_json(&task, now));
    }
    let status = task.status(now);
    let opt_time =
        |t: Option<DateTime<Utc>>| t.map(|t| time_and_relative(t, now)).unwrap_or("-".into());
    let or_dash = |s: Option<&String>| s.cloned().unwrap_or_else(|| "-".into());
    let mut fields: Vec<(&str, String)> = vec![
        ("id", task.id.clone()),
        ("kind", task.kind.clone()),
        ("env", task.env.clone()),
        ("status", format!("{status} ({})", standing(&task, now))),
        ("resource key", or_dash(task.resource_key.as_ref())),
        ("created", time_and_relative(task.created_at, now)),
        ("wait until", opt_time(task.wait_until)),
        ("leased until", opt_time(task.leased_until)),
        ("done", opt_time(task.done_at)),
        (
            "attempts",
            match task.max_attempts {
                Some(max) => format!("{} of at most {max} (the task's own limit)", task.attempts),
                None => task.attempts.to_string(),
            },
        ),
        ("snoozes", task.snoozes.to_string()),
        ("priority", task.priority.to_string()),
        (
            "cancelled",
            match task.cancelled_at {
                Some(at) if task.is_cancelled => time_and_relative(at, now),
                _ if task.is_cancelled => "yes".into(),
                _ => "no".into(),
            },
        ),
    ];
    if task.is_cancelled {
        fields.push((
            "cancellation attempts",
            task.cancellation_attempts.to_string(),
        ));
    }
    if let Some(recurrence) = &task.recurrence {
        let rule = serde_json::to_string(recurrence).unwrap_or_default();
        fields.push(("recurrence", rule));
    }
    if let Some(parent) = &task.parent_recurrence_id {
        fields.push(("generator", parent.clone()));
        fields.push((
            "occurrence of",
            task.occurrence_timestamp.map(time).unwrap_or_default(),
        ));
    }
    fields.push(("version", task.version.to_string()));
    if let Some(result) = &task.result {
        fields.push(("result", result.to_string()));
    }
    let label_width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    for (label, value) in &fields {
        writeln!(ctx.io.out, "{:<label_width$} {value}", format!("{label}:"))?;
    }
    let data = serde_json::to_string_pretty(&task.data).unwrap_or_default();
    writeln!(ctx.io.out, "data:")?;
    for line in data.lines() {
        writeln!(ctx.io.out, "  {line}")?;
    }
    if task.errors.is_empty() {
        writeln!(ctx.io.out, "errors: none")?;
    } else {
        writeln!(ctx.io.out, "errors ({}, oldest first):", task.errors.len())?;
        for e in &task.errors {
            writeln!(ctx.io.out, "  {}  {}", time(e.at), e.error)?;
        }
    }
    Ok(())
}
