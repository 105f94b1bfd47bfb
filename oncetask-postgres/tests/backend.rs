//! Postgres-specific tests beyond the shared conformance suite: several
//! managers on separate pools (as separate processes would have), wake-ups
//! across managers, transactional enqueue, and the claim's index use.
//!
//! Each test works in a schema of its own and drops it at the end. The server
//! is `ONCETASK_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! an unreachable server fails the tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use oncetask_conformance::fleet::{
    self, Fleet, Job, KIND, every_task_runs_once_across_managers, wait_for,
    wake_up_latencies_across_managers,
};
use oncetask_core::manager::handler_fn;
use oncetask_core::store::{TaskCursor, TaskFilter};
use oncetask_core::{HandlerOptions, Manager, Store, Task, TaskStatus};
use oncetask_postgres::PostgresStore;

mod common;

use common::{ENV, drop_schema, new_schema, store, unreachable_server, url};

fn manager(store: &PostgresStore, poll: Duration) -> Manager {
    fleet::manager(Arc::new(store.clone()), ENV, poll)
}

/// Three managers, each on its own pool with 8 workers, share 3000 tasks on
/// 40 resource keys (and some without a key): every task completes exactly
/// once, no two tasks of one key ever run at the same time, nothing stays leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_managers_run_every_task_once_and_never_overlap_a_key() {
    let schema = new_schema();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(store(&schema).await));
    }
    let fleet = Fleet {
        tasks: 3000,
        keys: 40,
        concurrency: 8,
        deadline: Duration::from_secs(240),
    };
    every_task_runs_once_across_managers(stores, ENV, fleet).await;
    drop_schema(&store(&schema).await).await;
}

/// A task created through one manager starts on another (its own pool, idle,
/// polling only every 60 s) at once: the LISTEN/NOTIFY wake-up. Prints the
/// latency; asserts only that it beat the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_on_one_manager_starts_on_another_without_waiting_for_a_poll() {
    let schema = new_schema();
    let (producer, worker) = (store(&schema).await, store(&schema).await);
    let latencies =
        wake_up_latencies_across_managers(Arc::new(producer.clone()), Arc::new(worker), ENV, 5)
            .await;
    eprintln!("cross-manager wake-up latencies (create -> handler start): {latencies:?}");
    drop_schema(&producer).await;
}

/// Tasks created in a caller's transaction exist only if it commits; a
/// committed one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_creates_tasks_only_when_the_transaction_commits() {
    let schema = new_schema();
    let store = store(&schema).await;
    let m = manager(&store, Duration::from_millis(200));
    let rolled_back = m.new_task(&Job { n: 1, key: None }).expect("task");
    let committed = m.new_task(&Job { n: 2, key: None }).expect("task");

    let mut tx = store.pool().begin().await.expect("begin");
    store
        .create_in(&mut tx, vec![rolled_back.clone()])
        .await
        .expect("create in tx");
    tx.rollback().await.expect("rollback");
    assert!(
        store
            .get(std::slice::from_ref(&rolled_back.id))
            .await
            .expect("get")
            .is_empty(),
        "a rolled-back create leaves no task"
    );

    let mut tx = store.pool().begin().await.expect("begin");
    store
        .create_in(&mut tx, vec![committed.clone()])
        .await
        .expect("create in tx");
    // Not visible to others before the commit.
    assert!(
        store
            .get(std::slice::from_ref(&committed.id))
            .await
            .expect("get")
            .is_empty()
    );
    tx.commit().await.expect("commit");

    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = ran.clone();
    m.register_dyn(
        KIND,
        handler_fn(move |task: Task| {
            let r = r.clone();
            async move {
                r.lock().expect("lock").push(task.id);
                Ok::<_, std::io::Error>(())
            }
        }),
        HandlerOptions::default(),
    )
    .expect("register");
    let id = committed.id.clone();
    wait_for(
        "the committed task to complete",
        Duration::from_secs(20),
        async || {
            m.get_task(&id)
                .await
                .expect("get")
                .is_some_and(|t| t.status(chrono::Utc::now()) == TaskStatus::Completed)
        },
    )
    .await;
    assert_eq!(*ran.lock().expect("lock"), vec![committed.id.clone()]);
    m.shutdown(Duration::from_secs(5)).await;
    drop_schema(&store).await;
}

/// 100k rows in `store` (most done or waiting, keys shared, most at
/// priority 0 and one in 11 at another of the 21), in one statement;
/// `analyze`: statistics taken afterwards.
async fn populate(store: &PostgresStore, analyze: bool) {
    let t = store.table();
    sqlx::query(&format!(
        "INSERT INTO {t} (id, kind, env, data, resource_key, wait_until, leased_until, \
           created_at, done_at, attempts, cancellation_attempts, errors, is_cancelled, version, \
           outcome, priority) \
         SELECT 'task-' || i, 'kind-' || (i % 4), 'env-' || (i % 2), '{{}}'::jsonb, \
           CASE WHEN i % 3 = 0 THEN NULL ELSE 'key-' || (i % 500) END, \
           CASE WHEN i % 5 = 0 THEN now() + interval '1 day' END, \
           CASE WHEN i % 7 = 0 THEN now() + interval '1 minute' END, \
           now() - (i || ' seconds')::interval, \
           CASE WHEN i % 10 < 8 THEN now() END, 1, 0, '[]'::jsonb, false, i, \
           CASE WHEN i % 10 < 8 THEN 'completed' END, \
           CASE WHEN i % 11 = 0 THEN i % 21 - 10 ELSE 0 END \
         FROM generate_series(1, 100000) AS i"
    ))
    .execute(store.pool())
    .await
    .expect("populate");
    // The claim rows of every key, as if each had been claimed, and as many
    // again of keys whose tasks are gone (the table is never tiny).
    sqlx::query(&format!(
        "INSERT INTO \"{}\".task_keys (env, kind, resource_key, claims) \
         SELECT DISTINCT env, kind, resource_key, 1 FROM {t} WHERE resource_key IS NOT NULL \
         UNION ALL \
         SELECT 'env-' || (i % 2), 'kind-' || (i % 4), 'gone-' || i, 1 \
         FROM generate_series(1, 100000) AS i",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .expect("populate the key rows");
    if analyze {
        sqlx::query(&format!("ANALYZE {t}, \"{}\".task_keys", store.schema()))
            .execute(store.pool())
            .await
            .expect("analyze");
    }
}

/// The plan of the statement under `-- <name>` in an `explain_claim` text.
fn plan_of<'a>(plans: &'a str, name: &str) -> &'a str {
    let start = plans
        .find(&format!("-- {name}\n"))
        .unwrap_or_else(|| panic!("no plan named {name}:\n{plans}"));
    let rest = &plans[start + name.len() + 4..];
    &rest[..rest.find("-- ").unwrap_or(rest.len())]
}

/// The hot-path statements that look tasks up by id (the claim's lease in
/// either order, the write-back, the swap and both creates) reach them
/// through the primary key.
fn assert_writes_by_primary_key(plans: &str) {
    for name in [
        "claim",
        "claim oldest",
        "write-back",
        "swap",
        "create",
        "create batch",
    ] {
        let plan = plan_of(plans, name);
        assert!(
            plan.contains("tasks_pkey"),
            "{name} skips the primary key:\n{plan}"
        );
    }
}

/// The index scans of the task and key tables in `plans` that read a whole index
/// (no `Index Cond`: only the partial index's predicate picks the entries),
/// which is a scan of the table's live rows in disguise.
fn whole_index_scans(plans: &str) -> Vec<String> {
    let lines: Vec<&str> = plans.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let scans_tasks = [
            "Index Scan using task",
            "Index Only Scan using task",
            "Bitmap Index Scan on task",
        ]
        .iter()
        .any(|scan| line.contains(scan));
        if !scans_tasks {
            continue;
        }
        let details = lines[i + 1..]
            .iter()
            .take_while(|l| !l.contains("->") && !l.starts_with("-- ") && l.starts_with(' '));
        if !details.clone().any(|l| l.contains("Index Cond:")) {
            found.push((*line).trim().to_owned());
        }
    }
    found
}

/// The `Index Cond` of each scan of `index` in `plan` (empty when a scan
/// has none).
fn index_scans(plan: &str, index: &str) -> Vec<String> {
    let lines: Vec<&str> = plan.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains(&format!("using {index} ")) {
            continue;
        }
        let cond = lines[i + 1..]
            .iter()
            .take_while(|l| !l.contains("->") && !l.starts_with("-- ") && l.starts_with(' '))
            .find(|l| l.contains("Index Cond:"))
            .map_or(String::new(), |l| l.trim().to_owned());
        found.push(cond);
    }
    found
}

/// The band walk of the priority-order statement `name` in `plans` keeps
/// its shape: the `CTE Scan on band` (the priorities present, in the order
/// the recursion finds them) is the outer side of a `Nested Loop` right
/// under a `Limit`. So rows leave in priority order and the walk stops at
/// the limit; a sort, hash or materialization in between would read every
/// priority's ranges, and a `LIMIT` over a reordered stream could keep
/// the wrong rows.
fn assert_band_walk(plans: &str, name: &str) {
    let plan = plan_of(plans, name);
    let lines: Vec<&str> = plan.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let node = |i: usize| lines[i].trim_start().trim_start_matches("->").trim_start();
    // The node a node line belongs under: the nearest node line above it
    // that is indented less (detail and `CTE`/`InitPlan` lines have no
    // arrow; the first line is the root).
    let parent = |i: usize| {
        (0..i)
            .rev()
            .find(|&j| {
                (j == 0 || lines[j].trim_start().starts_with("->"))
                    && indent(lines[j]) < indent(lines[i])
            })
            .unwrap_or_else(|| panic!("{name}: no parent of {}:\n{plan}", lines[i]))
    };
    let scan = lines
        .iter()
        .position(|l| l.contains("CTE Scan on band"))
        .unwrap_or_else(|| panic!("{name}: no band walk:\n{plan}"));
    let nested = parent(scan);
    assert!(
        node(nested).starts_with("Nested Loop"),
        "{name}: the band walk is not a nested loop over the bands:\n{plan}"
    );
    let first_child = (nested + 1..lines.len())
        .find(|&j| lines[j].trim_start().starts_with("->"))
        .expect("a child");
    assert_eq!(
        first_child, scan,
        "{name}: the bands are not the outer side:\n{plan}"
    );
    assert!(
        node(parent(nested)).starts_with("Limit"),
        "{name}: the band walk is not cut by its limit:\n{plan}"
    );
}

/// Each claim order reads its own index: the priority order (`claim`,
/// `candidates`) walks `tasks_priority_idx` by band, in the shape
/// [`assert_band_walk`] checks, and never `tasks_ready_idx` (whose ranges
/// would hold every priority, so a filter on one would walk the others);
/// the oldest order reads `tasks_ready_idx` alone, as before priorities,
/// and no other statement reads `tasks_priority_idx`.
fn assert_claim_orders(plans: &str) {
    for section in plans.split("-- ").filter(|s| !s.is_empty()) {
        let name = section.lines().next().unwrap_or_default();
        if !["claim", "candidates"].contains(&name) {
            assert!(
                !section.contains("tasks_priority_idx"),
                "{name} reads tasks_priority_idx:\n{section}"
            );
        }
    }
    for (name, uses, not) in [
        ("claim", "tasks_priority_idx", "tasks_ready_idx"),
        ("candidates", "tasks_priority_idx", "tasks_ready_idx"),
        ("claim oldest", "tasks_ready_idx", "tasks_priority_idx"),
        ("candidates oldest", "tasks_ready_idx", "tasks_priority_idx"),
    ] {
        let plan = plan_of(plans, name);
        // The set of busy keys reads the live leases, the end of
        // `tasks_ready_idx`'s range, in both orders: no band is read there.
        let reads_not = index_scans(plan, not)
            .iter()
            .any(|cond| !cond.contains("(leased_until > $3)"));
        assert!(
            plan.contains(uses) && !reads_not,
            "{name} should read {uses}, not {not}:\n{plan}"
        );
    }
    assert_band_walk(plans, "claim");
    assert_band_walk(plans, "candidates");
}

/// On 100k rows (most done or waiting, keys shared), the claim's candidate
/// query, its busy-key check, the group query, the lock of the chosen rows,
/// the bulk write-back and the swap are index scans, and each claim order
/// reads its own index ([`assert_claim_orders`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_queries_use_the_indexes_on_100k_rows() {
    let store = store(&new_schema()).await;
    populate(&store, true).await;
    let plan = store.explain_claim().await.expect("explain");
    eprintln!("{plan}");
    assert!(
        !plan.contains("Seq Scan"),
        "a claim query scans the table:\n{plan}"
    );
    for index in [
        "tasks_ready_idx",
        "tasks_priority_idx",
        "tasks_key_lease_idx",
        "tasks_key_group_idx",
        "tasks_due_idx",
        "tasks_pkey",
    ] {
        assert!(plan.contains(index), "{index} unused:\n{plan}");
    }
    assert_claim_orders(&plan);
    drop_schema(&store).await;
}

/// The band walk reads `tasks_priority_idx` even when statistics give the
/// planner no reason to prefer it: every task at priority 0 (so a band is
/// the whole kind) and the index twice the size of `tasks_ready_idx`
/// (churned, then the ready index rebuilt). A plan reading a band from
/// `tasks_ready_idx` with the priority as a filter would be as good for
/// this data, and would walk every other band's tasks once there are
/// several; a connection keeps its plan as the data changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_band_walk_reads_its_index_when_it_is_the_larger_one() {
    let store = store(&new_schema()).await;
    let t = store.table();
    let schema = store.schema().to_owned();
    for sql in [
        format!(
            "INSERT INTO {t} (id, kind, env, data, created_at, attempts, \
               cancellation_attempts, errors, is_cancelled, version) \
             SELECT 'task-' || i, 'kind', 'env', '{{}}'::jsonb, \
               now() - (i || ' seconds')::interval, 0, 0, '[]'::jsonb, false, 0 \
             FROM generate_series(1, 60000) AS i"
        ),
        format!("UPDATE {t} SET version = version + 1"),
        format!("UPDATE {t} SET version = version + 1"),
        format!("UPDATE {t} SET version = version + 1"),
        format!("UPDATE {t} SET version = version + 1"),
        format!("VACUUM {t}"),
        format!("REINDEX INDEX \"{schema}\".tasks_ready_idx"),
        format!("ANALYZE {t}"),
    ] {
        sqlx::raw_sql(&sql)
            .execute(store.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let size = |index: &'static str| {
        let (store, schema) = (store.clone(), schema.clone());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT pg_relation_size(format('%I.%I', $1::text, $2::text))",
            )
            .bind(schema)
            .bind(index)
            .fetch_one(store.pool())
            .await
            .expect("index size")
        }
    };
    let (priority, ready) = (
        size("tasks_priority_idx").await,
        size("tasks_ready_idx").await,
    );
    assert!(
        priority >= ready * 3 / 2,
        "the priority index ({priority} bytes) is not the larger ({ready} bytes)"
    );
    let plans = store.explain_claim().await.expect("explain");
    assert_claim_orders(&plans);
    drop_schema(&store).await;
}

/// The store's connections never compile a statement (JIT): even with
/// `jit_above_cost` at 0, no hot-path plan is compiled. (With statistics of
/// 100k ready tasks the claim's estimated cost passes the default
/// threshold, and compiling it took ~150 ms per claim.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connections_never_jit_compile() {
    let schema = new_schema();
    store(&schema).await;
    let pool = PostgresStore::pool_options()
        .max_connections(1)
        .connect(&url())
        .await
        .expect("connect");
    sqlx::query("SET jit_above_cost = 0")
        .execute(&pool)
        .await
        .expect("lower the threshold");
    let store = PostgresStore::from_pool(pool, &schema).expect("store");
    let plans = store.explain_claim().await.expect("explain");
    assert!(!plans.contains("JIT:"), "compiled:\n{plans}");
    drop_schema(&store).await;
}

/// A connection plans each statement once, often while the table is still
/// empty (a fresh deploy), and keeps that plan as the table grows: on an
/// empty table no hot-path statement may scan a table or a whole index, or
/// every later call would read all of it; each claim order reads its own
/// index ([`assert_claim_orders`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_made_on_an_empty_table_scan_no_table() {
    let store = store(&new_schema()).await;
    let plans = store.explain_claim().await.expect("explain");
    assert!(!plans.contains("Seq Scan"), "a table scan:\n{plans}");
    let whole = whole_index_scans(&plans);
    assert!(whole.is_empty(), "whole-index scans {whole:?}:\n{plans}");
    assert_writes_by_primary_key(&plans);
    assert_claim_orders(&plans);
    drop_schema(&store).await;
}

/// After a bulk load with no `ANALYZE` (autovacuum may be off), no
/// statement of the hot path scans the task table, the writes by id (the
/// claim's write-back and the swap) go through the primary key, and each
/// claim order reads its own index ([`assert_claim_orders`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_scans_no_table_without_fresh_statistics() {
    let store = store(&new_schema()).await;
    populate(&store, false).await;
    let plans = store.explain_claim().await.expect("explain");
    eprintln!("{plans}");
    assert!(
        plan_of(&plans, "claim").contains("(env = $1)"),
        "not the generic plan the store's connections run:\n{plans}"
    );
    assert!(
        !plans.contains("Seq Scan on tasks"),
        "a hot-path statement scans the table:\n{plans}"
    );
    let whole = whole_index_scans(&plans);
    assert!(
        whole.is_empty(),
        "a hot-path statement reads a whole index: {whole:?}\n{plans}"
    );
    assert_writes_by_primary_key(&plans);
    assert_claim_orders(&plans);
    drop_schema(&store).await;
}

/// Restarts the server (`pg_ctlcluster --skip-systemctl-redirect <version>
/// main restart`) while two managers work through 400 tasks: no task is
/// lost, the workers resume, and a subscriber from before the restart hears
/// notices after it (the listener reconnected). Ignored by default because it
/// restarts the shared local server; run it with
/// `cargo test -p oncetask-postgres --test backend -- --ignored restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "restarts the local PostgreSQL server"]
async fn restarting_postgres_while_workers_run_loses_no_task() {
    const TASKS: u32 = 400;
    let schema = new_schema();
    let stores = [store(&schema).await, store(&schema).await];
    let runs = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let managers: Vec<Manager> = stores
        .iter()
        .map(|s| manager(s, Duration::from_millis(200)))
        .collect();
    for m in &managers {
        let runs = runs.clone();
        m.register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let runs = runs.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    *runs.lock().expect("lock").entry(task.id).or_default() += 1;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default()
                .concurrency(4)
                .lease_duration(Duration::from_secs(5)),
        )
        .expect("register");
    }
    let jobs: Vec<Job> = (0..TASKS)
        .map(|n| Job {
            n,
            key: Some(format!("key-{}", n % 20)),
        })
        .collect();
    // A subscriber from before the restart must hear notices after it.
    let mut notices = stores[1].subscribe(ENV).expect("notifications");
    managers[0].create_many(&jobs).await.expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL installation")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a cluster version");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "restart failed");
    eprintln!(
        "restarted PostgreSQL with {} tasks run so far",
        runs.lock().expect("lock").len()
    );
    let first = stores[0].clone();
    wait_for(
        "every task to complete",
        Duration::from_secs(180),
        async || {
            first
                .count_by_status(ENV, Some(KIND), chrono::Utc::now())
                .await
                .is_ok_and(|c| c.get(&TaskStatus::Completed).copied() == Some(u64::from(TASKS)))
        },
    )
    .await;
    // Drain what was heard so far, then create until a fresh notice arrives.
    while tokio::time::timeout(Duration::from_millis(50), notices.next())
        .await
        .is_ok()
    {}
    let mut heard = false;
    for n in 0..100 {
        managers[0]
            .create(&Job {
                n: TASKS + n,
                key: None,
            })
            .await
            .expect("create after the restart");
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), notices.next()).await
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "the listener did not reconnect after the restart");
    for m in &managers {
        m.shutdown(Duration::from_secs(10)).await;
    }
    {
        let runs = runs.lock().expect("lock");
        assert!(runs.len() >= TASKS as usize, "every task ran");
        // A handler that finished while the server was down could not record
        // its outcome: its lease expires and the task runs again. That is the
        // at-least-once contract, so report rather than fail on it.
        let again: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
        eprintln!("tasks run more than once (outcome lost in the restart): {again:?}");
    }
    drop_schema(&first).await;
}

/// Several processes starting at once may all call `migrate()` on a new
/// schema: each succeeds and the table exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_of_one_schema_all_succeed() {
    let schema = new_schema();
    let mut stores = Vec::new();
    for _ in 0..4 {
        let url = url();
        stores.push(
            PostgresStore::connect(&url, &schema)
                .await
                .unwrap_or_else(|e| unreachable_server(&url, e)),
        );
    }
    let results =
        futures::future::join_all(stores.iter().map(|s| async move { s.migrate().await })).await;
    for r in results {
        r.expect("migrate");
    }
    assert!(
        stores[0]
            .get(&["x".to_owned()])
            .await
            .expect("get")
            .is_empty()
    );
    drop_schema(&stores[0]).await;
}

/// A swap sends a notice only when other workers can act on it: a released
/// task is ready again, while a heartbeat and the end of a task without a
/// resource key free nothing. Notices arrive in commit order, so the kinds
/// heard between the listener's first notice and the closing one say which
/// writes sent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_notify_only_when_work_becomes_available() {
    use oncetask_conformance::notify::notices_of_writes;
    use oncetask_core::lifecycle;
    use oncetask_core::store::Change;

    let store = store(&new_schema()).await;
    let now = chrono::Utc::now();
    let later = now + chrono::TimeDelta::minutes(20);
    let heard = notices_of_writes(
        &store,
        now,
        &["heartbeat", "finish", "release"],
        |held, grant| {
            let token = &grant.token;
            vec![
                (
                    Change::Heartbeat,
                    lifecycle::extend_lease(&held[0], token, now, later).expect("live lease"),
                ),
                (
                    Change::Outcome,
                    lifecycle::succeed(&held[1], token, now, None).expect("leased"),
                ),
                (
                    Change::Release,
                    lifecycle::release(&held[2], token).expect("leased"),
                ),
            ]
        },
    )
    .await;
    // Creates, heartbeats, outcomes and releases are work, not changes
    // to held tasks: none makes workers re-read what they claimed.
    for notice in &heard {
        assert!(!notice.may_touch_claimed, "{notice:?}");
    }
    // The listening probes are of the conformance suite's kind.
    let heard: Vec<String> = heard
        .into_iter()
        .map(|n| n.kind)
        .filter(|k| k != oncetask_conformance::support::KIND)
        .collect();
    // The creates of the three tasks, then the release only.
    assert_eq!(
        heard.iter().filter(|k| *k == "release").count(),
        2,
        "{heard:?}"
    );
    assert_eq!(
        heard.iter().filter(|k| *k == "heartbeat").count(),
        1,
        "{heard:?}"
    );
    assert_eq!(
        heard.iter().filter(|k| *k == "finish").count(),
        1,
        "{heard:?}"
    );
    drop_schema(&store).await;
}

/// The race a one-statement claim must win: 16 claimers on 4 pools race
/// 200 rounds each over 4 resource keys and some keyless tasks, with 100 ms
/// leases. Each round claims up to 2 tasks and checks that no lease of the
/// same key that has not been given back overlaps its own (from the claim's
/// `now` to its expiry; claims whose `now`s are out of their commit order
/// have disjoint leases).
/// Then, in turn, it releases the tasks, or completes them and creates a new
/// task of the same key and priority (which goes ahead of the key's
/// released ones of that priority, so claimers whose snapshots straddle the
/// create disagree on the key's first task), or (one round in 8) abandons
/// them to expire. A key's tasks have several priorities and every tenth
/// claim is in the oldest order, so both claim statements race and a key's
/// tasks lie in several bands of the priority walk. Afterwards every
/// keyed lease is counted in its key's claim row: each was granted by a
/// statement that bumped or created that row, which in single mode only the
/// one-statement claim does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_statement_claims_never_grant_two_live_leases_in_one_key() {
    use chrono::{DateTime, TimeDelta, Utc};
    use oncetask_core::lifecycle::{self, LeaseGrant};
    use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Swap, SwapOutcome};
    use std::sync::atomic::{AtomicU64, Ordering};

    const CLAIMERS: usize = 16;
    const ROUNDS: usize = 200;
    // Keyed leases come at the pace the keys free up, not of the rounds: on
    // a slow machine the claimers go on past ROUNDS until the race has
    // granted this many (up to MAX_ROUNDS), so a slow run is not a vacuous one.
    const KEYED_TARGET: u64 = 200;
    const MAX_ROUNDS: usize = 2_000;
    const KEYS: usize = 4;
    let lease = Duration::from_millis(100);
    let schema = new_schema();
    let stores: Vec<PostgresStore> =
        futures::future::join_all((0..4).map(|_| store(&schema))).await;
    let start = Utc::now();
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        for i in 0..5 {
            let mut task = Task::new(format!("k{k}-{i}"), KIND, ENV, start);
            task.resource_key = Some(format!("K{k}"));
            task.wait_until = Some(start - TimeDelta::seconds(1));
            // A key's tasks over several priorities: exclusion spans them.
            task.priority = i8::try_from(i).expect("small") * 3 - 6;
            tasks.push(task);
        }
    }
    for i in 0..8 {
        let mut task = Task::new(format!("n-{i}"), KIND, ENV, start);
        task.priority = i8::try_from(i % 3).expect("small") - 1;
        tasks.push(task);
    }
    stores[0].create(tasks).await.expect("create");

    /// A lease granted: claimer, start (the claim's `now`), end, given back.
    type Lease = (usize, DateTime<Utc>, DateTime<Utc>, bool);
    let live: Arc<Mutex<HashMap<String, Vec<Lease>>>> = Arc::default();
    let keyed_leases = Arc::new(AtomicU64::new(0));
    let keyless_leases = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for claimer in 0..CLAIMERS {
        let store = stores[claimer % stores.len()].clone();
        let (live, barrier) = (live.clone(), barrier.clone());
        let (keyed_leases, keyless_leases) = (keyed_leases.clone(), keyless_leases.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            for round in 0..MAX_ROUNDS {
                if round >= ROUNDS && keyed_leases.load(Ordering::Relaxed) > KEYED_TARGET {
                    break;
                }
                let now = Utc::now();
                let grant = LeaseGrant::new(now, lease);
                let request = ClaimRequest {
                    env: ENV.into(),
                    kind: KIND.into(),
                    now,
                    grant: grant.clone(),
                    mode: ClaimMode::Single { limit: 2 },
                    // Both statements race: every tenth claim in the oldest order.
                    order: if (round + claimer) % 10 == 0 {
                        oncetask_core::store::ClaimOrder::Oldest
                    } else {
                        oncetask_core::store::ClaimOrder::Priority
                    },
                };
                let claimed = store.claim(&request).await.expect("claim").tasks;
                for task in &claimed {
                    let Some(key) = &task.resource_key else {
                        keyless_leases.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    keyed_leases.fetch_add(1, Ordering::Relaxed);
                    let until = grant.leased_until;
                    let mut live = live.lock().expect("live map");
                    let leases = live.entry(key.clone()).or_default();
                    leases.retain(|l| l.2 > now - TimeDelta::seconds(10));
                    // As stored: in whole microseconds.
                    let us = |t: &DateTime<Utc>| t.timestamp_micros();
                    for (other, from, to, given_back) in leases.iter() {
                        assert!(
                            *given_back || us(to) <= us(&now) || us(&until) <= us(from),
                            "claimer {claimer} got {} of key {key} for {now}..{until} while \
                             claimer {other} holds a lease of it for {from}..{to}",
                            task.id
                        );
                    }
                    leases.push((claimer, now, until, false));
                }
                tokio::task::yield_now().await;
                if round % 8 == 7 {
                    continue; // abandoned: the leases expire
                }
                let finish = round % 2 == 1;
                let mut swaps = Vec::new();
                let mut fresh = Vec::new();
                for task in &claimed {
                    if let Some(key) = &task.resource_key {
                        // Given back before the swap that frees the key.
                        let mut live = live.lock().expect("live map");
                        for lease in live.get_mut(key).into_iter().flatten() {
                            if (lease.0, lease.2) == (claimer, grant.leased_until) {
                                lease.3 = true;
                            }
                        }
                    }
                    let (change, next) = if finish {
                        let mut new = Task::new(
                            format!("{}+{claimer}.{round}", task.id),
                            KIND,
                            ENV,
                            Utc::now(),
                        );
                        new.resource_key.clone_from(&task.resource_key);
                        new.priority = task.priority;
                        fresh.push(new);
                        let done = lifecycle::succeed(task, &grant.token, Utc::now(), None);
                        (Change::Outcome, done.expect("held"))
                    } else {
                        let released = lifecycle::release(task, &grant.token);
                        (Change::Release, released.expect("held"))
                    };
                    swaps.push(Swap::new(task, change, &next));
                }
                if !swaps.is_empty() {
                    for outcome in store.swap(&swaps).await.expect("swap") {
                        // A claim whose `now` was taken long before its
                        // statement ran may get a lease that expires at once,
                        // and another claimer may take the task over.
                        assert!(
                            matches!(outcome, SwapOutcome::Applied { .. })
                                || Utc::now() >= grant.leased_until,
                            "a release of a live lease failed: {outcome:?}"
                        );
                    }
                }
                if !fresh.is_empty() {
                    store.create(fresh).await.expect("create");
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a claimer panicked");
    }
    let keyed = keyed_leases.load(Ordering::Relaxed);
    let keyless = keyless_leases.load(Ordering::Relaxed);
    eprintln!("leases granted: {keyed} keyed, {keyless} keyless");
    assert!(
        keyed > KEYED_TARGET && keyless > 200,
        "the race hardly ran: {keyed} keyed and {keyless} keyless leases"
    );
    let counted: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(claims), 0)::bigint FROM \"{schema}\".task_keys"
    ))
    .fetch_one(stores[0].pool())
    .await
    .expect("sum the key claims");
    assert_eq!(
        u64::try_from(counted).expect("a count"),
        keyed,
        "every keyed lease went through its key's claim row"
    );
    drop_schema(&stores[0]).await;
}

/// The stale snapshot, made to happen: claim B's statement takes its
/// snapshot, then spends a while checking a huge error history of a keyless
/// candidate. Meanwhile a new task of key K is created and claim A (whose
/// `now` leaves the huge row out) leases it. B's candidate of K is an older
/// task, still ready in B's snapshot, which shows K free: B must see that
/// K's claim row moved on since its snapshot and leave K alone, leasing
/// only the keyless task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_snapshot_missed_a_lease_of_its_key_leaves_the_key_alone() {
    use chrono::{TimeDelta, Utc};
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest};

    let store = store(&new_schema()).await;
    let t = store.table();
    let now = Utc::now();
    let secs = TimeDelta::seconds;
    let mut old = Task::new("old", KIND, ENV, now - secs(60));
    old.resource_key = Some("K".into());
    old.wait_until = Some(now - secs(10));
    let mut heavy = Task::new("heavy", KIND, ENV, now - secs(60));
    heavy.wait_until = Some(now);
    store.create(vec![old, heavy]).await.expect("create");
    sqlx::query(&format!(
        "UPDATE {t} SET errors = (SELECT jsonb_agg(jsonb_build_object( \
           'at', '2020-01-01T00:00:00Z', 'error', 'slow to check')) \
         FROM generate_series(1, 400000)) WHERE id = 'heavy'"
    ))
    .execute(store.pool())
    .await
    .expect("a huge error history");
    // K has been claimed before: its claim row exists, among many others
    // (so the claim finds it by a TID scan, as on a real table).
    sqlx::query(&format!(
        "INSERT INTO \"{}\".task_keys (env, kind, resource_key, claims) \
         SELECT $1, $2, 'K', 1 UNION ALL \
         SELECT $1, $2, 'gone-' || i, 1 FROM generate_series(1, 100000) AS i",
        store.schema()
    ))
    .bind(ENV)
    .bind(KIND)
    .execute(store.pool())
    .await
    .expect("the key's claim row");
    let request = |at, limit| ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now: at,
        grant: LeaseGrant::new(at, Duration::from_secs(600)),
        mode: ClaimMode::Single { limit },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let slow = {
        let (store, request) = (store.clone(), request(now + secs(1), 2));
        tokio::spawn(async move { store.claim(&request).await.expect("claim B") })
    };
    // B's statement is running (its snapshot taken) once the server says so.
    wait_for(
        "claim B's statement to run",
        Duration::from_secs(10),
        async || {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE state = 'active' \
                 AND pid <> pg_backend_pid() AND query LIKE 'WITH pool AS%')",
            )
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_activity")
        },
    )
    .await;
    let mut new = Task::new("new", KIND, ENV, now);
    new.resource_key = Some("K".into());
    store.create(vec![new]).await.expect("create the new task");
    let fast = store
        .claim(&request(now - secs(1), 1))
        .await
        .expect("claim A");
    let slow = slow.await.expect("claim B panicked");
    let ids = |c: &oncetask_core::store::Claimed| -> Vec<String> {
        c.tasks.iter().map(|t| t.id.clone()).collect()
    };
    eprintln!("A leased {:?}; B leased {:?}", ids(&fast), ids(&slow));
    assert_eq!(ids(&fast), ["new"], "A takes the new task of K");
    assert_eq!(
        ids(&slow),
        ["heavy"],
        "B must not lease a second task of K while A holds one"
    );
    drop_schema(&store).await;
}

/// The claim rows of a schema: (key, claims), by key.
async fn claim_rows(store: &PostgresStore) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "SELECT resource_key, claims FROM \"{}\".task_keys ORDER BY resource_key",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .expect("read the claim rows")
}

/// A claim creates its key's claim row and later claims bump it; a delete
/// removes the row with the key's last task, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_claim_row_lives_as_long_as_the_key_has_tasks() {
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest, Delete};

    let store = store(&new_schema()).await;
    let now = chrono::Utc::now();
    let keyed = |id: &str, key: &str| {
        let mut task = Task::new(id, KIND, ENV, now);
        task.resource_key = Some(key.into());
        task
    };
    store
        .create(vec![keyed("a1", "A"), keyed("a2", "A"), keyed("b1", "B")])
        .await
        .expect("create");
    let claim = |at| ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now: at,
        grant: LeaseGrant::new(at, Duration::from_secs(1)),
        mode: ClaimMode::Single { limit: 10 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let first = store.claim(&claim(now)).await.expect("claim").tasks;
    assert_eq!(first.len(), 2, "one task of each key");
    assert_eq!(claim_rows(&store).await, [("A".into(), 1), ("B".into(), 1)]);
    let later = now + chrono::TimeDelta::seconds(2);
    let second = store.claim(&claim(later)).await.expect("claim").tasks;
    assert_eq!(second.len(), 2, "the expired leases free both keys");
    assert_eq!(claim_rows(&store).await, [("A".into(), 2), ("B".into(), 2)]);
    store
        .delete(&[Delete::any("a1"), Delete::any("b1")])
        .await
        .expect("delete");
    assert_eq!(
        claim_rows(&store).await,
        [("A".into(), 2)],
        "B lost its last task, A still has one"
    );
    store.delete(&[Delete::any("a2")]).await.expect("delete");
    assert!(claim_rows(&store).await.is_empty());
    drop_schema(&store).await;
}

/// A row that SQL takes for a task but that does not decode (an error time
/// that is not a time) is reported by the claim and its lease taken back at
/// once: it holds neither a lease nor its key (whose next task the claim
/// takes instead), and its counters are as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_row_that_does_not_decode_is_reported_and_left_unleased() {
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest};

    let store = store(&new_schema()).await;
    let t = store.table();
    let now = chrono::Utc::now();
    let mut odd = Task::new("odd", KIND, ENV, now - chrono::TimeDelta::seconds(10));
    odd.resource_key = Some("K".into());
    let mut next = Task::new("next", KIND, ENV, now);
    next.resource_key = Some("K".into());
    store.create(vec![odd, next]).await.expect("create");
    sqlx::query(&format!(
        "UPDATE {t} SET errors = '[{{\"at\": \"not a time\", \"error\": \"x\"}}]'::jsonb \
         WHERE id = 'odd'"
    ))
    .execute(store.pool())
    .await
    .expect("break the error time");
    let request = ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(600)),
        mode: ClaimMode::Single { limit: 1 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let claimed = store.claim(&request).await.expect("claim");
    let ids: Vec<&str> = claimed.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["next"], "the key's next task is claimed instead");
    let reported: Vec<&str> = claimed.undecodable.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(reported, ["odd"]);
    let (leased_until, token, attempts): (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
        i32,
    ) = sqlx::query_as(&format!(
        "SELECT leased_until, lease_token, attempts FROM {t} WHERE id = 'odd'"
    ))
    .fetch_one(store.pool())
    .await
    .expect("read the row");
    assert_eq!((leased_until, token, attempts), (None, None, 0));
    drop_schema(&store).await;
}

/// Ten rows that are not tasks at the head of the queue do not stop a
/// claim of one task: it reports them and takes the task behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_rows_that_are_not_tasks_does_not_stop_a_claim() {
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest};

    let store = store(&new_schema()).await;
    let t = store.table();
    let now = chrono::Utc::now();
    let bad: Vec<Task> = (0..10)
        .map(|i| {
            Task::new(
                format!("bad-{i}"),
                KIND,
                ENV,
                now - chrono::TimeDelta::seconds(60),
            )
        })
        .collect();
    let good = Task::new("good", KIND, ENV, now);
    store
        .create(bad.into_iter().chain([good]).collect())
        .await
        .expect("create");
    sqlx::query(&format!(
        "UPDATE {t} SET data = '\"not a task\"'::jsonb WHERE id LIKE 'bad-%'"
    ))
    .execute(store.pool())
    .await
    .expect("spoil the payloads");
    let request = ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 1 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let claimed = store.claim(&request).await.expect("claim");
    let ids: Vec<&str> = claimed.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["good"]);
    let mut reported: Vec<&str> = claimed.undecodable.iter().map(|u| u.id.as_str()).collect();
    reported.sort_unstable();
    assert_eq!(reported.len(), 10, "{reported:?}");
    drop_schema(&store).await;
}

/// The hot path keeps connections between its statements, detached from
/// the pool (module `reuse`): far more concurrent statements than the
/// pool's size all complete; the store holds at most twice the pool's size
/// of server connections; closing the pool does not wait for the kept
/// connections, and the store's statements then fail as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_connections_neither_outnumber_nor_outlive_the_pool() {
    use oncetask_core::StoreError;
    use oncetask_core::store::CreateOutcome;
    use sqlx::postgres::PgConnectOptions;

    let schema = new_schema();
    let url = url();
    let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    let pool = PostgresStore::pool_options()
        .max_connections(2)
        .connect_with(options.application_name(&schema))
        .await
        .unwrap_or_else(|e| unreachable_server(&url, e));
    let store = PostgresStore::from_pool(pool, &schema).expect("store");
    store.migrate().await.expect("migrate");
    let now = chrono::Utc::now();
    let creates = (0..32).map(|i| {
        let store = store.clone();
        async move {
            store
                .create(vec![Task::new(format!("t{i}"), "bench", ENV, now)])
                .await
        }
    });
    for outcome in futures::future::join_all(creates).await {
        let outcome = outcome.expect("a create while 31 others run");
        assert!(matches!(outcome.as_slice(), [CreateOutcome::Created]));
    }
    let observer = self::store(&new_schema()).await;
    let connections: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&schema)
            .fetch_one(observer.pool())
            .await
            .expect("count the connections");
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections for a pool of 2"
    );
    drop_schema(&store).await;
    drop_schema(&observer).await;
    tokio::time::timeout(Duration::from_secs(10), store.pool().close())
        .await
        .expect("closing the pool waits for no kept connection");
    let after = store
        .create(vec![Task::new("late", "bench", ENV, now)])
        .await;
    assert!(
        matches!(after, Err(StoreError::Unavailable(_))),
        "a create after the pool closed: {after:?}"
    );
}

/// The task with `priority`, `max_attempts` and `snoozes` set, the rest as `task`.
fn with_fields(task: Task, priority: i8, max_attempts: Option<u32>, snoozes: u32) -> Task {
    use oncetask_core::task::TaskParts;

    Task::from(TaskParts {
        priority,
        max_attempts,
        snoozes,
        ..task.into_parts()
    })
}

/// Snoozes, priority and the attempt limit are stored by both creates (one
/// task, a batch), read back by `get` and the claims, written by snooze and
/// reprioritize swaps (and a group claim's write-back), and kept by swaps
/// that do not write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoozes_priority_and_max_attempts_round_trip() {
    use oncetask_core::lifecycle::{self, HandlerPath, LeaseGrant};
    use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Fetched, Swap, SwapOutcome};

    let store = store(&new_schema()).await;
    // In milliseconds, so that the times the grant computes (lease ends)
    // are stored exactly.
    let now = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .expect("a time");
    let get = |id: &'static str| {
        let store = store.clone();
        async move {
            match store.get(&[id.to_owned()]).await.expect("get").pop() {
                Some(Fetched::Task(task)) => task,
                other => panic!("{id}: {other:?}"),
            }
        }
    };
    let earlier = now - chrono::TimeDelta::seconds(10);
    let mut one = with_fields(Task::new("one", KIND, ENV, earlier), 7, Some(3), 0);
    one.resource_key = Some("K".into());
    let batch = vec![
        with_fields(Task::new("b1", KIND, ENV, now), -10, None, 5),
        with_fields(
            Task::new("b2", KIND, ENV, now),
            10,
            Some(u32::from(u16::MAX)),
            0,
        ),
    ];
    store.create(vec![one.clone()]).await.expect("create one");
    store.create(batch.clone()).await.expect("create a batch");
    assert_eq!(get("one").await, one);
    for task in &batch {
        let id: &'static str = if task.id == "b1" { "b1" } else { "b2" };
        assert_eq!(&get(id).await, task);
    }

    // Two claims, each followed by a snooze: the first in group mode (its
    // write-back stores whole rows), the second in single mode.
    let mut at = now;
    for (round, mode) in [
        ClaimMode::ResourceGroup { max_group: 1 },
        ClaimMode::Single { limit: 3 },
    ]
    .into_iter()
    .enumerate()
    {
        let grant = LeaseGrant::new(at, Duration::from_secs(60));
        let request = ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now: at,
            grant: grant.clone(),
            mode,
            // The oldest order: `one`, created first, heads the queue for
            // the group claim (in priority order `b2` would); the single
            // claim (after the snooze) takes the batch too.
            order: oncetask_core::store::ClaimOrder::Oldest,
        };
        let claimed = store.claim(&request).await.expect("claim");
        for task in &claimed.tasks {
            if let Some(created) = batch.iter().find(|b| b.id == task.id) {
                assert_eq!(
                    (task.priority, task.max_attempts, task.snoozes),
                    (created.priority, created.max_attempts, created.snoozes),
                    "{}",
                    task.id
                );
            }
        }
        let held = claimed
            .tasks
            .into_iter()
            .find(|t| t.id == "one")
            .unwrap_or_else(|| panic!("round {round}: `one` not claimed"));
        assert_eq!(
            (held.priority, held.max_attempts, held.snoozes),
            (7, Some(3), u32::try_from(round).expect("small")),
            "round {round}: as claimed"
        );
        assert_eq!(
            get("one").await,
            held,
            "round {round}: as stored after the claim"
        );
        let until = at + chrono::TimeDelta::seconds(1);
        let snoozed =
            lifecycle::snooze(&held, &grant.token, at, until, HandlerPath::Main).expect("leased");
        let outcomes = store
            .swap(&[Swap::new(&held, Change::Snooze, &snoozed)])
            .await
            .expect("swap");
        assert!(
            matches!(outcomes.as_slice(), [SwapOutcome::Applied { .. }]),
            "{outcomes:?}"
        );
        assert_eq!(get("one").await, snoozed, "round {round}: as snoozed");
        at = until + chrono::TimeDelta::seconds(1);
    }
    let snoozed = get("one").await;
    assert_eq!(
        (
            snoozed.snoozes,
            snoozed.attempts,
            snoozed.priority,
            snoozed.max_attempts
        ),
        (2, 0, 7, Some(3))
    );

    let moved = lifecycle::reprioritize(&snoozed, -4).expect("not done");
    let outcomes = store
        .swap(&[Swap::new(&snoozed, Change::Reprioritize, &moved)])
        .await
        .expect("swap");
    assert!(
        matches!(outcomes.as_slice(), [SwapOutcome::Applied { .. }]),
        "{outcomes:?}"
    );
    let stored = get("one").await;
    assert_eq!(stored, moved);
    assert_eq!(
        (stored.snoozes, stored.priority, stored.max_attempts),
        (2, -4, Some(3))
    );

    // A swap whose change writes neither keeps them (a cancel here).
    let cancelled = lifecycle::cancel(&stored, at).expect("not done");
    store
        .swap(&[Swap::new(&stored, Change::Cancel, &cancelled)])
        .await
        .expect("swap");
    let stored = get("one").await;
    assert_eq!(
        (
            stored.snoozes,
            stored.priority,
            stored.max_attempts,
            stored.is_cancelled
        ),
        (2, -4, Some(3), true)
    );
    drop_schema(&store).await;
}

/// Rows whose new columns hold what no task can (a priority outside `i8`,
/// negative snoozes or attempt limit, written in SQL) are reported
/// undecodable by `get` with the column named, counted as undecodable and
/// never leased by a claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_out_of_range_snoozes_priority_or_max_attempts_are_undecodable() {
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest, Fetched};

    let store = store(&new_schema()).await;
    let t = store.table();
    let now = chrono::Utc::now();
    let before = now - chrono::TimeDelta::seconds(10);
    let tasks = ["high", "low", "snoozes", "limit"]
        .into_iter()
        .map(|id| Task::new(id, KIND, ENV, before))
        .chain([Task::new("good", KIND, ENV, now)])
        .collect();
    store.create(tasks).await.expect("create");
    for (id, set) in [
        ("high", "priority = 300"),
        ("low", "priority = -129"),
        ("snoozes", "snoozes = -1"),
        ("limit", "max_attempts = -2"),
    ] {
        sqlx::query(&format!("UPDATE {t} SET {set} WHERE id = $1"))
            .bind(id)
            .execute(store.pool())
            .await
            .expect("spoil the row");
    }
    let ids: Vec<String> = ["high", "low", "snoozes", "limit", "good"]
        .into_iter()
        .map(String::from)
        .collect();
    let fetched = store.get(&ids).await.expect("get");
    let reasons: Vec<(String, String)> = fetched
        .iter()
        .filter_map(|f| match f {
            Fetched::Undecodable(u) => Some((u.id.clone(), u.reason.clone())),
            Fetched::Task(_) => None,
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (id, column) in [
        ("high", "priority"),
        ("low", "priority"),
        ("snoozes", "snoozes"),
        ("limit", "max_attempts"),
    ] {
        let (_, reason) = reasons
            .iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("{id} not reported: {reasons:?}"));
        assert!(
            reason.contains(&format!("column {column}")),
            "{id}: {reason}"
        );
    }
    assert!(
        fetched
            .iter()
            .any(|f| matches!(f, Fetched::Task(t) if t.id == "good"))
    );
    let counts = store
        .count_by_status(ENV, Some(KIND), now)
        .await
        .expect("count");
    assert_eq!(counts.undecodable, 4);
    assert_eq!(counts.tasks(), 1);
    let request = ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 5 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let claimed = store.claim(&request).await.expect("claim");
    let ids: Vec<&str> = claimed.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["good"]);
    let mut reported: Vec<&str> = claimed.undecodable.iter().map(|u| u.id.as_str()).collect();
    reported.sort_unstable();
    assert_eq!(reported, ["high", "limit", "low", "snoozes"]);
    drop_schema(&store).await;
}

/// A store on a new schema migrated only up to `version` (as an earlier
/// release left it), holding the rows `insert` writes; `migrate()` has not
/// run on it yet.
async fn store_at_migration(version: i64, insert: &str) -> PostgresStore {
    let schema = new_schema();
    let url = url();
    let store = PostgresStore::connect(&url, &schema)
        .await
        .unwrap_or_else(|e| unreachable_server(&url, e));
    let mut old = sqlx::migrate!("./migrations");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(
        old.migrations.len(),
        usize::try_from(version).expect("small")
    );
    let mut conn = store.pool().acquire().await.expect("connection").detach();
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
    ))
    .execute(&mut conn)
    .await
    .expect("schema");
    old.run_direct(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("migrations up to {version}: {e}"));
    sqlx::raw_sql(insert)
        .execute(&mut conn)
        .await
        .expect("an old row");
    sqlx::Connection::close(conn).await.expect("close");
    store
}

/// A schema migrated by an earlier version (migrations 0001-0003) is
/// migrated forward by `migrate()`: its rows read as no snoozes, priority
/// 0 and no attempt limit, and new tasks store all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_of_migration_0003_is_migrated_forward() {
    use oncetask_core::store::Fetched;

    // A row as an earlier version writes it: its 21 columns.
    let store = store_at_migration(
        3,
        "INSERT INTO tasks (id, kind, env, data, created_at, attempts, \
         cancellation_attempts, errors, is_cancelled, version) \
         VALUES ('old', 'k', 'test', '{}'::jsonb, now(), 2, 0, '[]'::jsonb, false, 5)",
    )
    .await;
    store.migrate().await.expect("migrate forward");
    store.migrate().await.expect("migrate again: a no-op");
    let fetched = store.get(&["old".to_owned()]).await.expect("get");
    let old = match fetched.as_slice() {
        [Fetched::Task(task)] => task,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (old.attempts, old.snoozes, old.priority, old.max_attempts),
        (2, 0, 0, None)
    );
    let new = with_fields(
        Task::new("new", "k", ENV, chrono::Utc::now()),
        3,
        Some(9),
        1,
    );
    store.create(vec![new.clone()]).await.expect("create");
    let fetched = store.get(&["new".to_owned()]).await.expect("get");
    assert!(
        matches!(fetched.as_slice(), [Fetched::Task(task)] if *task == new),
        "{fetched:?}"
    );
    drop_schema(&store).await;
}

/// A schema of migration 0005 (the version before retention) is migrated
/// forward by `migrate()`: its rows read as full documents (no
/// `pruned_at`), can be pruned and found by a pruner, and the pause and
/// rate-limiter tables work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_of_migration_0005_is_migrated_forward() {
    use oncetask_core::lifecycle;
    use oncetask_core::store::{Change, Fetched, FinishedQuery, StartsRequest, Swap};

    // A finished row as the previous version writes it: its 24 columns.
    let store = store_at_migration(
        5,
        "INSERT INTO tasks (id, kind, env, data, created_at, done_at, attempts, \
         cancellation_attempts, errors, result, is_cancelled, version, outcome, snoozes, \
         priority, max_attempts) \
         VALUES ('old', 'k', 'test', '{\"to\": 1}'::jsonb, now() - interval '2 days', \
                 now() - interval '1 day', 1, 0, '[]'::jsonb, '\"ok\"'::jsonb, false, 3, \
                 'completed', 0, 0, NULL)",
    )
    .await;
    store.migrate().await.expect("migrate forward");
    store.migrate().await.expect("migrate again: a no-op");
    let fetched = store.get(&["old".to_owned()]).await.expect("get");
    let old = match fetched.as_slice() {
        [Fetched::Task(task)] => task.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        !old.is_tombstone() && old.data.contains_key("to"),
        "{old:?}"
    );
    // Microseconds, as PostgreSQL stores times.
    let now = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
        .expect("a time");
    let query = FinishedQuery::new(ENV, "k", TaskStatus::Completed, now);
    let page = store.find_finished(&query).await.expect("find_finished");
    assert_eq!(page, std::slice::from_ref(&old));
    let pruned = lifecycle::prune(&old, now).expect("finished");
    store
        .swap(&[Swap::new(&old, Change::Prune, &pruned)])
        .await
        .expect("prune");
    assert!(store.find_finished(&query).await.expect("full").is_empty());
    let tombstones = store
        .find_finished(&query.clone().tombstones())
        .await
        .expect("tombstones");
    assert_eq!(tombstones, [pruned]);
    assert!(store.set_paused(ENV, "k", true).await.expect("pause"));
    assert_eq!(store.paused_kinds(ENV).await.expect("paused"), ["k"]);
    let request = StartsRequest::new(ENV, "k", None, now, 1_000, 5, 9);
    assert_eq!(store.take_starts(&[request]).await.expect("take"), [5]);
    drop_schema(&store).await;
}

/// Finished rows that do not decode (here a payload that is not an
/// object) are left out of a pruner's page, and the page is read on past
/// them: it comes back short only at the end of the range, so a pass does
/// not stop at them.
#[tokio::test]
async fn a_pruner_page_reads_on_past_rows_that_do_not_decode() {
    use oncetask_core::store::FinishedQuery;

    let schema = new_schema();
    let store = store(&schema).await;
    let mut values = Vec::new();
    for i in 0..6 {
        let data = if i % 2 == 1 { "'[1]'" } else { "'{}'" };
        values.push(format!(
            "('f{i}', 'k', '{ENV}', {data}::jsonb, now() - interval '2 days', \
             now() - interval '1 day' + interval '{i} seconds', 1, 0, '[]'::jsonb, NULL, \
             false, 1, 'completed', 0, 0, NULL)"
        ));
    }
    // A time sqlx cannot decode (it would panic), first in the range.
    values.push(format!(
        "('fneg', 'k', '{ENV}', '{{}}'::jsonb, now() - interval '2 days', '-infinity', 1, 0, \
         '[]'::jsonb, NULL, false, 1, 'completed', 0, 0, NULL)"
    ));
    insert_rows(&store, &values).await;
    let mut query = FinishedQuery::new(ENV, "k", TaskStatus::Completed, chrono::Utc::now());
    query.limit = 2;
    let first = store.find_finished(&query).await.expect("first page");
    let ids: Vec<&str> = first.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["f0", "f2"], "a full page, past f1");
    let Some(last) = first.last() else {
        panic!("a page")
    };
    let second = store
        .find_finished(&query.clone().after_task(last))
        .await
        .expect("second page");
    let ids: Vec<&str> = second.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["f4"], "short: the end of the range");
    drop_schema(&store).await;
}

/// A pruner's pages (first and next) read `tasks_finished_idx` on 100k
/// rows: every condition is part of the index range (no filter walks
/// entries of other statuses, tombstones or earlier pages) and the rows
/// come out in `(done_at, id)` order with no sort; and a page holds what
/// it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruner_pages_read_the_finished_index_on_100k_rows() {
    use oncetask_core::store::FinishedQuery;

    let store = store(&new_schema()).await;
    populate(&store, true).await;
    let plans = store.explain_claim().await.expect("explain");
    for name in ["find finished", "find finished after"] {
        let plan = plan_of(&plans, name);
        eprintln!("-- {name}\n{plan}");
        assert!(
            plan.contains("Index Scan using tasks_finished_idx"),
            "{name} skips tasks_finished_idx:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "{name} sorts:\n{plan}");
        let cond = plan
            .lines()
            .find(|l| l.contains("Index Cond:"))
            .unwrap_or_else(|| panic!("{name}: no index condition:\n{plan}"));
        for part in ["env = $1", "kind = $2", "= $3", "= $4", "done_at <= $5"] {
            assert!(cond.contains(part), "{name}: {part} not in {cond}");
        }
        if name.ends_with("after") {
            assert!(
                cond.contains("ROW(done_at, id) > ROW($7, $8)"),
                "{name}: the cursor is not in the range: {cond}"
            );
        }
    }
    let query =
        FinishedQuery::new("env-0", "kind-0", TaskStatus::Completed, chrono::Utc::now()).limit(50);
    let page = store.find_finished(&query).await.expect("a page");
    assert_eq!(page.len(), 50);
    assert!(page.iter().all(|t| query.matches(t)));
    let next = store
        .find_finished(&query.clone().after_task(&page[49]))
        .await
        .expect("the next page");
    assert_eq!(next.len(), 50);
    assert!((page[49].done_at, &page[49].id) < (next[0].done_at, &next[0].id));
    drop_schema(&store).await;
}

/// Inserts rows written as SQL tuples of `(id, kind, env, data, created_at,
/// done_at, attempts, cancellation_attempts, errors, result, is_cancelled,
/// version, outcome, snoozes, priority, max_attempts)`, bypassing the store
/// (rows it would never write, to see how it reads them).
async fn insert_rows(store: &PostgresStore, values: &[String]) {
    sqlx::raw_sql(&format!(
        "INSERT INTO {} (id, kind, env, data, created_at, done_at, attempts, \
         cancellation_attempts, errors, result, is_cancelled, version, outcome, snoozes, \
         priority, max_attempts) VALUES {}",
        store.table(),
        values.join(", ")
    ))
    .execute(store.pool())
    .await
    .expect("rows");
}

/// A listing's page after its cursor (the dashboard's deep pages) starts at
/// the cursor in an index on 100k rows, with no sort: of a kind through
/// `tasks_created_idx`, of a resource key through `tasks_resource_key_idx`;
/// and pages of a kind follow each other in listing order, each full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_start_at_their_cursor_on_100k_rows() {
    let store = store(&new_schema()).await;
    populate(&store, true).await;
    let plans = store.explain_claim().await.expect("explain");
    for (name, index) in [
        ("list kind after", "tasks_created_idx"),
        ("list key after", "tasks_resource_key_idx"),
    ] {
        let plan = plan_of(&plans, name);
        eprintln!("-- {name}\n{plan}");
        assert!(
            plan.contains(&format!("Index Scan using {index}")),
            "{name} skips {index}:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "{name} sorts:\n{plan}");
        let cond = plan
            .lines()
            .find(|l| l.contains("Index Cond:"))
            .unwrap_or_else(|| panic!("{name}: no index condition:\n{plan}"));
        assert!(
            cond.contains("ROW(created_at, id) > ROW("),
            "{name}: the cursor is not in the range: {cond}"
        );
    }
    let now = chrono::Utc::now();
    let filter = TaskFilter::env("env-0", now).kind("kind-0").limit(50);
    let page = store.find(&filter).await.expect("a page");
    assert_eq!(page.len(), 50);
    assert!(page.iter().all(|t| t.env == "env-0" && t.kind == "kind-0"));
    let next = store
        .find(&filter.clone().after(TaskCursor::of(&page[49])))
        .await
        .expect("the next page");
    assert_eq!(next.len(), 50);
    assert!(TaskCursor::of(&page[49]) < TaskCursor::of(&next[0]));
    drop_schema(&store).await;
}

/// A listing page reads on past rows that do not decode: a page is full
/// while the listing goes on, and short only at its end.
#[tokio::test]
async fn a_listing_page_reads_on_past_rows_that_do_not_decode() {
    let schema = new_schema();
    let store = store(&schema).await;
    let mut values = Vec::new();
    for i in 0..6 {
        let data = if i % 2 == 1 { "'[1]'" } else { "'{}'" };
        values.push(format!(
            "('l{i}', 'k', '{ENV}', {data}::jsonb, now() - interval '2 days' + interval '{i} seconds', \
             NULL, 0, 0, '[]'::jsonb, NULL, false, 1, NULL, 0, 0, NULL)"
        ));
    }
    // A time sqlx cannot decode (it would panic), first in the listing.
    values.push(format!(
        "('lneg', 'k', '{ENV}', '{{}}'::jsonb, '-infinity', NULL, 0, 0, '[]'::jsonb, NULL, \
         false, 1, NULL, 0, 0, NULL)"
    ));
    insert_rows(&store, &values).await;
    let filter = TaskFilter::env(ENV, chrono::Utc::now()).kind("k").limit(2);
    let first = store.find(&filter).await.expect("first page");
    let ids: Vec<&str> = first.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["l0", "l2"], "a full page, past l1");
    let second = store
        .find(&filter.clone().after(TaskCursor::of(&first[1])))
        .await
        .expect("second page");
    let ids: Vec<&str> = second.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["l4"], "short: the end of the listing");
    // An offset counts only tasks that decode.
    let offset = store
        .find(
            &TaskFilter::env(ENV, chrono::Utc::now())
                .kind("k")
                .offset(1)
                .limit(2),
        )
        .await
        .expect("offset page");
    let ids: Vec<&str> = offset.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["l2", "l4"]);
    drop_schema(&store).await;
}

/// What a claim at `now` in `order` takes from `tasks` (the rows as stored
/// before it), in the order it returns them: the ready tasks by priority
/// (highest first, in [`ClaimOrder::Priority`]) and claim order, leaving out
/// keys with a live lease; single mode takes up to `limit`, one per key; a
/// group claim is decided by the first candidate (alone when keyless, else
/// the key's ready tasks in group order, up to `max_group`).
fn reference_claim(
    tasks: &[Task],
    now: chrono::DateTime<chrono::Utc>,
    mode: oncetask_core::store::ClaimMode,
    order: oncetask_core::store::ClaimOrder,
) -> Vec<String> {
    use oncetask_core::store::{ClaimMode, ClaimOrder};
    use std::collections::HashSet;

    let busy: HashSet<&str> = tasks
        .iter()
        .filter(|t| t.is_leased_at(now))
        .filter_map(|t| t.resource_key.as_deref())
        .collect();
    let mut ready: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.is_ready_at(now))
        .filter(|t| t.resource_key.as_deref().is_none_or(|k| !busy.contains(k)))
        .collect();
    ready.sort_by(|a, b| {
        let oldest = a.claim_order_key().cmp(&b.claim_order_key());
        match order {
            ClaimOrder::Oldest => oldest,
            ClaimOrder::Priority => b.priority.cmp(&a.priority).then(oldest),
        }
    });
    match mode {
        ClaimMode::Single { limit } => {
            let mut keys = HashSet::new();
            ready
                .iter()
                .filter(|t| t.resource_key.as_deref().is_none_or(|k| keys.insert(k)))
                .take(limit)
                .map(|t| t.id.clone())
                .collect()
        }
        ClaimMode::ResourceGroup { max_group } => match ready.first() {
            None => Vec::new(),
            Some(head) if head.resource_key.is_none() => vec![head.id.clone()],
            Some(head) => {
                let mut group: Vec<&&Task> = ready
                    .iter()
                    .filter(|t| t.resource_key == head.resource_key)
                    .collect();
                group.sort_by_key(|t| (t.wait_until, t.created_at, t.id.clone()));
                group
                    .into_iter()
                    .take(max_group)
                    .map(|t| t.id.clone())
                    .collect()
            }
        },
    }
}

/// Claims over every priority against [`reference_claim`]: 400 tasks over
/// the 21 priorities (the two highest holding only tasks that wait for
/// later, so the walk steps over them), on keys shared across priorities,
/// with waits past and future, expired and live leases and done tasks.
/// Every claim, single (limits 1, 2, 5) or group, in the priority order
/// and every third in the oldest, takes exactly what the reference picks
/// from the rows as stored before it, in its order, until nothing is left
/// (every other claim's tasks are then marked done, freeing their keys):
/// the band walk's cut (at twice the limit) keeps the first tasks of the
/// priority order, and the busy-key check spans the priorities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_by_priority_take_what_a_reference_picks() {
    use chrono::{DateTime, TimeDelta};
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest, Fetched};

    const TASKS: i64 = 400;
    let store = store(&new_schema()).await;
    let now = DateTime::from_timestamp(1_900_000_000, 0).expect("a time");
    // xorshift64: the same tasks on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut draw = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        i64::try_from(state % n).expect("small")
    };
    let mut tasks = Vec::new();
    let (mut expired, mut live, mut done) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..TASKS {
        let created = now - TimeDelta::milliseconds(draw(3_600_000)) - TimeDelta::microseconds(i);
        let mut task = Task::new(format!("t{i:03}"), KIND, ENV, created);
        task.priority = i8::try_from(draw(21) - 10).expect("a priority");
        if draw(5) >= 2 {
            task.resource_key = Some(format!("K{}", draw(40)));
        }
        task.wait_until = match draw(4) {
            0 => Some(now - TimeDelta::seconds(draw(600) + 1)),
            1 => Some(now + TimeDelta::seconds(draw(600) + 1)),
            _ => None,
        };
        if task.priority >= 9 {
            task.wait_until = Some(now + TimeDelta::days(1));
        }
        match draw(20) {
            0..=1 => expired.push(task.id.clone()),
            2 => live.push(task.id.clone()),
            3 => done.push(task.id.clone()),
            _ => {}
        }
        tasks.push(task);
    }
    store.create(tasks).await.expect("create");
    let table = store.table();
    for (ids, set) in [
        (
            &expired,
            "leased_until = $2 - interval '5 seconds', lease_token = 'old', attempts = 1",
        ),
        (
            &live,
            "leased_until = $2 + interval '1 hour', lease_token = 'live', attempts = 1",
        ),
        (
            &done,
            "done_at = $2 - interval '1 second', outcome = 'completed', attempts = 1",
        ),
    ] {
        sqlx::query(&format!("UPDATE {table} SET {set} WHERE id = ANY($1)"))
            .bind(ids)
            .bind(now)
            .execute(store.pool())
            .await
            .expect("set leases and outcomes");
    }
    let all: Vec<String> = (0..TASKS).map(|i| format!("t{i:03}")).collect();
    let modes = [
        ClaimMode::Single { limit: 1 },
        ClaimMode::Single { limit: 2 },
        ClaimMode::ResourceGroup { max_group: 3 },
        ClaimMode::Single { limit: 5 },
    ];
    let (mut claims, mut taken) = (0, 0);
    for round in 0.. {
        let stored: Vec<Task> = store
            .get(&all)
            .await
            .expect("get")
            .into_iter()
            .map(|f| match f {
                Fetched::Task(task) => task,
                other => panic!("{other:?}"),
            })
            .collect();
        let mode = modes[round % modes.len()];
        let order = if round % 3 == 2 {
            ClaimOrder::Oldest
        } else {
            ClaimOrder::Priority
        };
        let expected = reference_claim(&stored, now, mode, order);
        let request = ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(600)),
            mode,
            order,
        };
        let claimed = store.claim(&request).await.expect("claim");
        assert!(claimed.undecodable.is_empty(), "{:?}", claimed.undecodable);
        let got: Vec<String> = claimed.tasks.iter().map(|t| t.id.clone()).collect();
        assert_eq!(got, expected, "round {round}: {mode:?} in {order:?}");
        if got.is_empty() {
            let ready = stored.iter().filter(|t| t.is_ready_at(now)).count();
            eprintln!("{claims} claims took {taken} tasks; {ready} ready tasks left (keys busy)");
            break;
        }
        claims += 1;
        taken += got.len();
        if round % 2 == 1 {
            // Done: their keys are free again.
            sqlx::query(&format!(
                "UPDATE {table} SET done_at = $2, outcome = 'completed' WHERE id = ANY($1)"
            ))
            .bind(&got)
            .bind(now)
            .execute(store.pool())
            .await
            .expect("finish the claimed tasks");
        }
    }
    assert!(
        claims > 60 && taken > 150,
        "{claims} claims took only {taken} tasks"
    );
    drop_schema(&store).await;
}

/// The busy-key check reads the statement's set of busy keys when few keys
/// hold a live lease and looks each candidate's key up when many do (more
/// than the 32 live keyed leases the set holds): both leave every busy
/// key's tasks alone, in both claim orders and in the group claim's
/// candidates, and take the free key's head and the keyless task behind
/// the busy keys' backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_the_backlog_of_busy_keys_whether_few_or_many_are_busy() {
    use chrono::{TimeDelta, Utc};
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest};

    for busy in [3usize, 40] {
        let store = store(&new_schema()).await;
        let start = Utc::now() - TimeDelta::minutes(10);
        let at = |n: usize| start + TimeDelta::milliseconds(i64::try_from(n).expect("small"));
        // The busy keys' backlog first in claim order (10 tasks each,
        // interleaved), then the free key's tasks, then a keyless one.
        let mut tasks = Vec::new();
        for i in 0..10 {
            for k in 0..busy {
                let mut task = Task::new(format!("b{k}-{i}"), "k", ENV, at(i * busy + k));
                task.resource_key = Some(format!("B{k}"));
                tasks.push(task);
            }
        }
        for i in 0..3 {
            let mut task = Task::new(format!("free-{i}"), "k", ENV, at(10 * busy + i));
            task.resource_key = Some("F".to_owned());
            tasks.push(task);
        }
        tasks.push(Task::new("keyless", "k", ENV, at(10 * busy + 3)));
        store.create(tasks).await.expect("create");
        let request = |mode, order| {
            let now = Utc::now();
            ClaimRequest {
                env: ENV.to_owned(),
                kind: "k".to_owned(),
                now,
                grant: LeaseGrant::new(now, Duration::from_secs(600)),
                mode,
                order,
            }
        };
        // Every busy key's first task leased: one per key.
        let first = store
            .claim(&request(
                ClaimMode::Single { limit: busy },
                ClaimOrder::Oldest,
            ))
            .await
            .expect("claim");
        let mut keys: Vec<String> = first
            .tasks
            .iter()
            .filter_map(|t| t.resource_key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), busy, "{busy} busy keys: {keys:?}");
        assert!(keys.iter().all(|k| k.starts_with('B')), "{keys:?}");

        // Behind their backlog: the free key, taken as a group; then the
        // keyless task; then nothing, every key being busy.
        let group = store
            .claim(&request(
                ClaimMode::ResourceGroup { max_group: 10 },
                ClaimOrder::Priority,
            ))
            .await
            .expect("group claim");
        let ids: Vec<&str> = group.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["free-0", "free-1", "free-2"], "{busy} busy keys");
        for (order, expected) in [
            (ClaimOrder::Priority, vec!["keyless"]),
            (ClaimOrder::Oldest, vec![]),
        ] {
            let got = store
                .claim(&request(ClaimMode::Single { limit: 100 }, order))
                .await
                .expect("claim");
            let ids: Vec<&str> = got.tasks.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, expected, "{busy} busy keys, {order:?}");
        }
        drop_schema(&store).await;
    }
}
