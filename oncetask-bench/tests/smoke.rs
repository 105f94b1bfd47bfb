//! Runs the whole bench at tiny sizes on memory, PostgreSQL
//! (`ONCETASK_POSTGRES_URL`) and Redis (`ONCETASK_REDIS_URL`): it must
//! produce its rows, summaries and JSON. Timings are never asserted. An
//! unreachable server fails the test, saying what to start.

use oncetask_bench::{Backend, BackendName, BenchArgs, Report, Scenario};

async fn run(backend: Backend) -> Report {
    let name = backend.name();
    oncetask_bench::run(&[backend], &BenchArgs::tiny(), &|line| eprintln!("{line}"))
        .await
        .unwrap_or_else(|e| panic!("the {name} bench failed: {e}"))
}

/// Every scenario that applies to the backend produced its rows, none of
/// them an error, and the report serializes.
fn check(report: &Report, backend: &str, scenarios: &[(&str, usize)]) {
    let failed: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.note.starts_with("error"))
        .map(|r| format!("{} {}: {}", r.scenario, r.config, r.note))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for (scenario, expected) in scenarios {
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.backend == backend && r.scenario == *scenario)
            .collect();
        assert_eq!(
            rows.len(),
            *expected,
            "{scenario} rows of {backend}: {rows:#?}"
        );
        for row in rows {
            assert!(row.tasks > 0, "{row:?}");
            assert!(
                row.per_second.is_some() || row.latency.is_some(),
                "a row without a measurement: {row:?}"
            );
        }
    }
    assert_eq!(report.summaries.len(), 1);
    let json = serde_json::to_value(report).expect("the report serializes");
    assert_eq!(
        json["rows"].as_array().map(Vec::len),
        Some(report.rows.len())
    );
    assert!(report.to_table().contains(backend));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let report = run(Backend::Memory).await;
    // Tiny sizes: 2 concurrencies x 2 manager counts; 2 scale sizes.
    check(
        &report,
        "memory",
        &[
            ("resources", 1),
            ("insert", 2),
            ("work", 4),
            ("latency", 2),
            ("lateness", 1),
            ("cancel", 2),
            ("raw", 2),
            ("scale", 2),
            // seeding, alone, and per pass the pass and the work beside it
            ("prune", 6),
            // the kind limit, per resource key
            ("rate", 2),
            // seeding, and 4 deep-page shapes
            ("list", 5),
        ],
    );
    let summary = &report.summaries[0];
    assert!(summary.bytes_per_task.is_some() && summary.best_work.is_some());
    assert!(summary.scale_ratio.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let report = run(Backend::from_name(BackendName::Postgres)).await;
    check(
        &report,
        "postgres",
        &[
            ("resources", 0),
            ("insert", 2),
            ("work", 4),
            ("latency", 2),
            ("lateness", 1),
            ("cancel", 2),
            // single, batch, batch on the store's table, insert
            ("raw", 4),
            ("scale", 2),
            // seeding, alone, and per pass the pass and the work beside it
            ("prune", 6),
            // the kind limit, per resource key
            ("rate", 2),
            // seeding, and 4 deep-page shapes
            ("list", 5),
        ],
    );
    let summary = &report.summaries[0];
    assert!(summary.fraction_of_raw.is_some(), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let report = run(Backend::from_name(BackendName::Redis)).await;
    check(
        &report,
        "redis",
        &[
            ("resources", 0),
            ("insert", 2),
            ("work", 4),
            ("latency", 2),
            ("lateness", 1),
            ("cancel", 2),
            ("raw", 2),
            ("scale", 2),
            // seeding, alone, and per pass the pass and the work beside it
            ("prune", 6),
            // the kind limit, per resource key
            ("rate", 2),
            // seeding, and 4 deep-page shapes
            ("list", 5),
        ],
    );
    let summary = &report.summaries[0];
    assert!(summary.fraction_of_raw.is_some(), "{summary:?}");
}

/// SQLite needs no server: a file in a temp dir, removed at the end. The
/// raw rows are the hand-written `BEGIN IMMEDIATE` cycle (single, batch),
/// the batch on the store's table, and single-row inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let backend = Backend::from_name(BackendName::Sqlite);
    let oncetask_bench::Backend::Sqlite { dir, .. } = &backend else {
        panic!("not a SQLite backend: {backend:?}");
    };
    let before = namespaces_in(dir);
    let args = BenchArgs {
        scenarios: vec![
            Scenario::Work,
            Scenario::Insert,
            Scenario::Latency,
            Scenario::Raw,
            Scenario::Scale,
        ],
        ..BenchArgs::tiny()
    };
    let report = oncetask_bench::run(std::slice::from_ref(&backend), &args, &|line| {
        eprintln!("{line}")
    })
    .await
    .unwrap_or_else(|e| panic!("the sqlite bench failed: {e}"));
    check(
        &report,
        "sqlite",
        &[
            ("insert", 2),
            ("work", 4),
            ("latency", 2),
            // single, batch, batch on the store's table, insert
            ("raw", 4),
            ("scale", 2),
        ],
    );
    let summary = &report.summaries[0];
    assert!(summary.fraction_of_raw.is_some(), "{summary:?}");
    assert_eq!(
        namespaces_in(dir),
        before,
        "the bench's directory was removed"
    );
}

/// The bench namespaces' directories in `dir`.
fn namespaces_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("oncetask_bench_"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
