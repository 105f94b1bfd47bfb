//! What each command does, over an operator's [`Manager`] of the store
//! (no worker loops; every kind accepted).
//!
//! Reads go through the manager's inspection API ([`Manager::find`],
//! [`Manager::inspect`], ...) and changes through its operator actions
//! ([`Manager::cancel_many`], [`Manager::reset_many`],
//! [`Manager::delete_many`], [`Manager::reprioritize_many`],
//! [`Manager::reset_matching`], [`Manager::prune`], [`Manager::pause`]),
//! so the CLI decides nothing the library would decide differently.

mod action;
pub mod doctor;
mod operate;
mod stats;
mod tasks;

use oncetask::Manager;

use crate::Io;
use crate::args::{Command, TasksCommand};
use crate::error::CliError;

pub use action::Action;

/// What a command works with.
pub struct Ctx<'a, 'io> {
    /// The operator's manager over the store, in the chosen environment.
    pub manager: Manager,
    /// `--json`: print JSON instead of tables.
    pub json: bool,
    /// Output and confirmations.
    pub io: &'a mut Io<'io>,
}

impl Ctx<'_, '_> {
    /// The environment the command works in.
    pub fn env(&self) -> &str {
        self.manager.env()
    }

    /// Prints `value` as pretty JSON on the output.
    pub fn print_json(&mut self, value: &serde_json::Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::failed(format!("cannot encode the output: {e}")))?;
        writeln!(self.io.out, "{text}")?;
        Ok(())
    }
}

/// Runs `command` (any but `demo`, `bench` and `doctor`).
pub async fn dispatch(ctx: &mut Ctx<'_, '_>, command: &Command) -> Result<(), CliError> {
    match command {
        Command::Tasks(TasksCommand::List(args)) => tasks::list(ctx, args).await,
        Command::Tasks(TasksCommand::Show(args)) => tasks::show(ctx, &args.id).await,
        Command::Stats(args) => stats::stats(ctx, args).await,
        Command::Cancel(args) => action::act(ctx, Action::Cancel, args).await,
        Command::Reset(args) => action::act(ctx, Action::Reset, args).await,
        Command::Delete(args) => action::act(ctx, Action::Delete, args).await,
        Command::Reprioritize(args) => {
            action::act(ctx, Action::Reprioritize(args.priority), &args.target).await
        }
        Command::Prune(args) => operate::prune(ctx, args).await,
        Command::Pause(args) => operate::pause(ctx, args).await,
        Command::Resume(args) => operate::resume(ctx, args).await,
        Command::Demo(_) => Err(CliError::usage(
            "the demo brings its own store: run it with `oncetask demo`",
        )),
        Command::Bench(_) => Err(CliError::usage(
            "the bench opens its own namespaces: run it with `oncetask bench`",
        )),
        Command::Doctor(_) => Err(CliError::usage(
            "the doctor connects on its own: run it with `oncetask doctor`",
        )),
        Command::Ui(_) => Err(CliError::usage(
            "the dashboard serves until stopped: run it with `oncetask ui`",
        )),
    }
}
