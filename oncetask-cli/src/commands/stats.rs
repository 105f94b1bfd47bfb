//! `stats`: the queue inspector ([`oncetask::Manager::inspect`]).

use oncetask::{KindStats, QueueStats, TaskStatus};
use serde_json::{Map, Value, json};

use super::Ctx;
use crate::args::StatsArgs;
use crate::error::CliError;
use crate::render::{Table, duration, relative};

/// Column headers of the status counts, in [`TaskStatus::ALL`] order.
const STATUS_HEADERS: [&str; 7] = [
    ">WAITING",
    ">PENDING",
    ">LEASED",
    ">CANCELLING",
    ">COMPLETED",
    ">FAILED",
    ">CANCELLED",
];

fn kind_json(stats: &QueueStats, k: &KindStats) -> Value {
    let counts: Map<String, Value> = TaskStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), json!(k.count(*s))))
        .collect();
    json!({
        "counts": counts,
        "total": k.total(),
        "undecodable": k.undecodable(),
        "oldestPendingSince": k.oldest_pending_since,
        "oldestPendingAgeSeconds": k.oldest_pending_age(stats.now).map(|d| d.as_secs_f64()),
        "nextDue": k.next_due,
        "nextDueInSeconds": k.next_due.map(|t| (t - stats.now).to_std().unwrap_or_default().as_secs_f64()),
    })
}

/// `stats`: counts by kind and status (undecodable documents apart),
/// oldest pending age, next due time.
pub(crate) async fn stats(ctx: &mut Ctx<'_, '_>, args: &StatsArgs) -> Result<(), CliError> {
    if args.storage {
        return storage(ctx).await;
    }
    let mut stats = ctx.manager.inspect().await?;
    if let Some(kind) = &args.kind {
        if !stats.kinds.contains_key(kind) {
            let known: Vec<&str> = stats.kinds.keys().map(String::as_str).collect();
            return Err(CliError::failed(format!(
                "no tasks of kind {kind:?} in environment {:?} (kinds there: {})",
                ctx.env(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        stats.kinds.retain(|k, _| k == kind);
    }
    if ctx.json {
        let kinds: Map<String, Value> = stats
            .kinds
            .iter()
            .map(|(name, k)| (name.clone(), kind_json(&stats, k)))
            .collect();
        let totals = stats.totals();
        let value = json!({
            "env": stats.env,
            "now": stats.now,
            "kinds": kinds,
            "totals": TaskStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), json!(totals.get(s).copied().unwrap_or(0))))
                .collect::<Map<String, Value>>(),
            "total": totals.tasks(),
            "undecodable": totals.undecodable,
        });
        return ctx.print_json(&value);
    }
    if stats.kinds.is_empty() {
        writeln!(ctx.io.out, "no tasks in environment {:?}", stats.env)?;
        return Ok(());
    }
    let mut headers = vec!["KIND"];
    headers.extend(STATUS_HEADERS);
    // Undecodable documents have no status: a column of their own, outside TOTAL.
    headers.extend([">TOTAL", ">UNDECODABLE", "OLDEST PENDING", "NEXT DUE"]);
    let mut table = Table::new(&headers);
    let now = stats.now;
    for (name, k) in &stats.kinds {
        let mut row = vec![name.clone()];
        row.extend(TaskStatus::ALL.iter().map(|s| k.count(*s).to_string()));
        row.push(k.total().to_string());
        row.push(k.undecodable().to_string());
        row.push(
            k.oldest_pending_age(now)
                .map(duration)
                .unwrap_or_else(|| "-".into()),
        );
        row.push(
            k.next_due
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "-".into()),
        );
        table.row(row);
    }
    if stats.kinds.len() > 1 {
        let totals = stats.totals();
        let mut row = vec!["(all)".to_owned()];
        row.extend(
            TaskStatus::ALL
                .iter()
                .map(|s| totals.get(s).copied().unwrap_or(0).to_string()),
        );
        row.push(totals.tasks().to_string());
        row.push(totals.undecodable.to_string());
        row.push(
            stats
                .oldest_pending_since()
                .map(|t| duration((now - t).to_std().unwrap_or_default()))
                .unwrap_or_else(|| "-".into()),
        );
        row.push(
            stats
                .next_due()
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "-".into()),
        );
        table.row(row);
    }
    table.write(ctx.io.out)?;
    writeln!(
        ctx.io.out,
        "\nenvironment {:?} at {}",
        stats.env,
        crate::render::time(now)
    )?;
    Ok(())
}

/// `stats --storage`: documents and bytes per status, tombstones apart,
/// the backend's figures, and how each was obtained.
async fn storage(ctx: &mut Ctx<'_, '_>) -> Result<(), CliError> {
    let stats = ctx.manager.storage_stats().await?;
    if ctx.json {
        let by_status: Map<String, Value> = stats
            .by_status
            .iter()
            .map(|(s, size)| {
                (
                    s.as_str().to_owned(),
                    json!({ "documents": size.documents, "bytes": size.bytes }),
                )
            })
            .collect();
        let value = json!({
            "env": ctx.env(),
            "byStatus": by_status,
            "tombstones": { "documents": stats.tombstones.documents, "bytes": stats.tombstones.bytes },
            "documents": stats.documents(),
            "bytes": stats.bytes(),
            "method": stats.method,
            "figures": stats
                .figures
                .iter()
                .map(|f| json!({ "label": f.label, "bytes": f.bytes }))
                .collect::<Vec<_>>(),
        });
        return ctx.print_json(&value);
    }
    let bytes = |b: Option<u64>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
    let mut table = Table::new(&["STATUS", ">DOCUMENTS", ">BYTES"]);
    for (status, size) in &stats.by_status {
        table.row(vec![
            status.as_str().to_owned(),
            size.documents.to_string(),
            bytes(size.bytes),
        ]);
    }
    table.row(vec![
        "(tombstones)".to_owned(),
        stats.tombstones.documents.to_string(),
        bytes(stats.tombstones.bytes),
    ]);
    table.row(vec![
        "(all)".to_owned(),
        stats.documents().to_string(),
        bytes(stats.bytes()),
    ]);
    table.write(ctx.io.out)?;
    writeln!(ctx.io.out, "\nper status: {}", stats.method)?;
    for figure in &stats.figures {
        writeln!(ctx.io.out, "{}: {} bytes", figure.label, figure.bytes)?;
    }
    let env = ctx.env().to_owned();
    writeln!(ctx.io.out, "environment {env:?}")?;
    Ok(())
}
