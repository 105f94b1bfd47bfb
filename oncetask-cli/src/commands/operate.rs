//! `prune`, `pause` and `resume`: operating a queue over time
//! ([`oncetask::Manager::prune`], [`oncetask::Manager::pause`]).

use oncetask::Retention;
use oncetask::manager::{PruneCounts, PrunePlan, PruneReport};
use serde_json::json;

use super::Ctx;
use super::action::confirm;
use crate::args::{PauseArgs, PruneArgs, ResumeArgs};
use crate::error::CliError;

/// The retention `args` describe.
fn retention(args: &PruneArgs) -> Result<Retention, CliError> {
    let mut retention = Retention::default();
    if let Some(period) = args.finished {
        retention = retention.finished(period);
    }
    if let Some(period) = args.completed {
        retention = retention.completed(period);
    }
    if let Some(period) = args.failed {
        retention = retention.failed(period);
    }
    if let Some(period) = args.cancelled {
        retention = retention.cancelled(period);
    }
    if let Some(period) = args.tombstones {
        retention = retention.tombstones_for(period);
    }
    if args.no_tombstones {
        retention = retention.without_tombstones();
    }
    if retention.keeps_everything() && retention.tombstone_period().is_none() {
        return Err(CliError::usage(
            "nothing to prune: give a period with --completed, --failed, --cancelled, \\
             --finished or --tombstones",
        ));
    }
    retention
        .validate()
        .map_err(|e| CliError::usage(e.to_string()))?;
    Ok(retention)
}

/// `prune`: counts first (a dry run stops there), confirms, prunes.
pub(crate) async fn prune(ctx: &mut Ctx<'_, '_>, args: &PruneArgs) -> Result<(), CliError> {
    let retention = retention(args)?;
    let plan = PrunePlan::kind(args.kind.as_str(), retention)
        .batch_size(usize::try_from(args.batch).unwrap_or(usize::MAX))
        .rest(args.rest);
    let counted = ctx.manager.prune(plan.clone().dry_run()).await?;
    let would = counted.total();
    if args.dry_run || would.tombstoned + would.deleted == 0 {
        return print(ctx, &args.kind, &counted);
    }
    let question = format!(
        "Prune {} task{} of kind {:?} in environment {:?} ({} to tombstones, {} deleted)?",
        would.tombstoned + would.deleted,
        if would.tombstoned + would.deleted == 1 {
            ""
        } else {
            "s"
        },
        args.kind,
        ctx.env(),
        would.tombstoned,
        would.deleted,
    );
    confirm(ctx, &question, args.yes)?;
    let report = ctx.manager.prune(plan).await?;
    print(ctx, &args.kind, &report)?;
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "prune: {} task(s) failed",
            report.failed.len()
        )))
    }
}

fn print(ctx: &mut Ctx<'_, '_>, kind: &str, report: &PruneReport) -> Result<(), CliError> {
    let counts: PruneCounts = report.kinds.get(kind).copied().unwrap_or_default();
    if ctx.json {
        let value = json!({
            "env": ctx.env(),
            "kind": kind,
            "dryRun": report.dry_run,
            "tombstoned": counts.tombstoned,
            "deleted": counts.deleted,
            "skipped": counts.skipped,
            "failed": report
                .failed
                .iter()
                .map(|(id, e)| json!({ "id": id, "error": e.to_string() }))
                .collect::<Vec<_>>(),
        });
        return ctx.print_json(&value);
    }
    let out = &mut ctx.io.out;
    if report.dry_run {
        writeln!(
            out,
            "dry run: would turn {} task(s) of kind {kind:?} into tombstones and delete {}; \
             nothing was changed",
            counts.tombstoned, counts.deleted
        )?;
    } else {
        writeln!(
            out,
            "pruned kind {kind:?}: {} turned into tombstones, {} deleted, {} skipped \
             (changed since they were read)",
            counts.tombstoned, counts.deleted, counts.skipped
        )?;
    }
    for (id, e) in &report.failed {
        writeln!(out, "  failed {id}: {e}")?;
    }
    Ok(())
}

/// `pause KIND`, or `pause` to list the paused kinds.
pub(crate) async fn pause(ctx: &mut Ctx<'_, '_>, args: &PauseArgs) -> Result<(), CliError> {
    let Some(kind) = &args.kind else {
        let paused = ctx.manager.paused_kinds().await?;
        if ctx.json {
            return ctx.print_json(&json!({ "env": ctx.env(), "paused": paused }));
        }
        if paused.is_empty() {
            let env = ctx.env().to_owned();
            writeln!(ctx.io.out, "no kind is paused in environment {env:?}")?;
        }
        for kind in paused {
            writeln!(ctx.io.out, "{kind}")?;
        }
        return Ok(());
    };
    let changed = ctx.manager.pause(kind.as_str()).await?;
    said(ctx, kind, "paused", changed)
}

/// `resume KIND`.
pub(crate) async fn resume(ctx: &mut Ctx<'_, '_>, args: &ResumeArgs) -> Result<(), CliError> {
    let changed = ctx.manager.resume(args.kind.as_str()).await?;
    said(ctx, &args.kind, "resumed", changed)
}

fn said(ctx: &mut Ctx<'_, '_>, kind: &str, done: &str, changed: bool) -> Result<(), CliError> {
    if ctx.json {
        return ctx.print_json(&json!({
            "env": ctx.env(),
            "kind": kind,
            done: true,
            "changed": changed,
        }));
    }
    let note = if changed { "" } else { " (it already was)" };
    let env = ctx.env().to_owned();
    writeln!(
        ctx.io.out,
        "{done} kind {kind:?} in environment {env:?}{note}"
    )?;
    Ok(())
}
