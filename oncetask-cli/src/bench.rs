//! `oncetask bench`: runs [`oncetask_bench`] on the backends of
//! `--backends` and of `--store`, and prints its table (or JSON), with the
//! run's metrics on request.

use oncetask_bench::{Backend, BackendName, BenchError};

use crate::args::{BenchCommandArgs, GlobalArgs};
use crate::error::CliError;
use crate::store_url::StoreUrl;
use crate::{Io, prometheus};

/// Runs the bench and prints its report.
pub async fn run(
    global: &GlobalArgs,
    args: &BenchCommandArgs,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let backends = backends(global.store.as_ref(), &args.bench.backends)?;
    let metrics = if args.metrics {
        Some(prometheus::install()?)
    } else {
        None
    };
    if cfg!(debug_assertions) {
        writeln!(
            io.err,
            "note: a debug build; for real figures run `cargo run --release -p oncetask-cli -- bench …`"
        )?;
    }
    let progress = |line: &str| eprintln!("{line}");
    let report = oncetask_bench::run(&backends, &args.bench, &progress)
        .await
        .map_err(from_bench)?;
    let rendered = metrics.map(|handle| handle.render());
    if global.json {
        let mut value = serde_json::to_value(&report)
            .map_err(|e| CliError::failed(format!("cannot encode the report: {e}")))?;
        if let (Some(text), Some(object)) = (rendered, value.as_object_mut()) {
            object.insert("metrics".to_owned(), text.into());
        }
        serde_json::to_writer_pretty(&mut *io.out, &value)
            .map_err(|e| CliError::failed(format!("cannot write the report: {e}")))?;
        writeln!(io.out)?;
    } else {
        write!(io.out, "{}", report.to_table())?;
        if let Some(text) = rendered {
            writeln!(io.out, "\n# oncetask metrics (Prometheus text format)")?;
            write!(io.out, "{text}")?;
        }
    }
    Ok(())
}

/// `--backends`, then the server of `--store` (its schema, prefix or
/// collection is not used: the bench makes its own); memory when neither.
/// A `sqlite:` store is refused: `--backends sqlite` makes a file of its
/// own (in `ONCETASK_SQLITE_BENCH_DIR`, default the temp dir).
fn backends(store: Option<&StoreUrl>, names: &[BackendName]) -> Result<Vec<Backend>, CliError> {
    let mut out: Vec<Backend> = names.iter().map(|n| Backend::from_name(*n)).collect();
    if let Some(url) = store {
        let backend = match url {
            StoreUrl::Sqlite { .. } => {
                return Err(CliError::usage(
                    "the bench makes its own SQLite file: pass --backends sqlite (or \
                     sqlite-normal) instead of a sqlite: --store, and ONCETASK_SQLITE_BENCH_DIR \
                     to choose its directory",
                ));
            }
            StoreUrl::Memory => Backend::Memory,
            StoreUrl::Postgres { url, .. } => Backend::Postgres { url: url.clone() },
            StoreUrl::Redis { url, .. } => Backend::Redis { url: url.clone() },
            StoreUrl::Firestore { project, .. } => Backend::Firestore {
                project: project.clone(),
            },
        };
        if !out.contains(&backend) {
            out.push(backend);
        }
    }
    if out.is_empty() {
        out.push(Backend::Memory);
    }
    Ok(out)
}

fn from_bench(e: BenchError) -> CliError {
    match e {
        BenchError::Usage(m) => CliError::usage(m),
        BenchError::Unavailable(m) => CliError::store(m),
        BenchError::Store(e) => e.into(),
        other => CliError::failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_add_their_server_and_memory_is_the_default() {
        assert_eq!(backends(None, &[]).ok(), Some(vec![Backend::Memory]));
        let pg: StoreUrl = "postgres://u@h/db?schema=jobs".parse().expect("a URL");
        assert_eq!(
            backends(Some(&pg), &[BackendName::Memory]).ok(),
            Some(vec![
                Backend::Memory,
                Backend::Postgres {
                    url: "postgres://u@h/db".to_owned()
                }
            ])
        );
        assert_eq!(
            backends(Some(&StoreUrl::Memory), &[BackendName::Memory]).ok(),
            Some(vec![Backend::Memory])
        );
        let sqlite: StoreUrl = "sqlite://tasks.db".parse().expect("a URL");
        let err = backends(Some(&sqlite), &[]).expect_err("no SQLite --store");
        assert!(err.to_string().contains("--backends sqlite"), "{err}");
    }
}
