//! How [`SqliteStore::connect_with`](crate::SqliteStore::connect_with)
//! opens the database: durability, busy timeout, pool size.

use std::time::Duration;

/// How durable a committed write is (SQLite's `synchronous` setting, in
/// WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL` (the default): every commit is synced to disk
    /// before it returns, so a committed claim or outcome survives a power
    /// loss or an OS crash.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the WAL is synced only at checkpoints. Much
    /// faster commits; a committed write still survives the process
    /// crashing, but the last commits may be lost to a power loss or an OS
    /// crash (the database stays consistent). A lost claim makes its task
    /// run again after the lease; a lost outcome makes it run again.
    Normal,
}

/// Options of [`SqliteStore::connect_with`](crate::SqliteStore::connect_with).
///
/// ```
/// use std::time::Duration;
/// use oncetask_sqlite::{Durability, SqliteOptions};
///
/// let options = SqliteOptions::new()
///     .durability(Durability::Normal)
///     .busy_timeout(Duration::from_secs(2))
///     .pool_size(4);
/// assert_eq!(options.durability, Durability::Normal);
/// assert_eq!(SqliteOptions::default().busy_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How durable a commit is; [`Durability::Full`] by default.
    pub durability: Durability,
    /// How long a statement waits for a lock another connection or process
    /// holds before it fails with
    /// [`StoreError::Unavailable`](oncetask_core::StoreError::Unavailable);
    /// 5 s by default. SQLite sleeps and retries meanwhile, so writers of
    /// several processes take turns instead of failing at once.
    pub busy_timeout: Duration,
    /// Most connections the pool keeps; [`SqliteOptions::DEFAULT_POOL_SIZE`]
    /// by default. Reads run in parallel on them (WAL); writes of one store
    /// take turns on one at a time.
    pub pool_size: u32,
    /// How often a store with subscribers looks for other processes'
    /// writes on the file ([`oncetask_core::Store::subscribe`]);
    /// [`SqliteOptions::DEFAULT_WATCH_INTERVAL`] by default, `None` to hear
    /// only this store's own writes. A look while nothing is written is one
    /// `stat` of the `-wal` file; the database is queried only for two
    /// seconds after a commit (and every 10 s).
    pub watch_interval: Option<Duration>,
    /// Whether [`SqliteStore::connect_with`](crate::SqliteStore::connect_with)
    /// creates a database file that does not exist (true by default);
    /// false makes a missing file an
    /// [`StoreError::InvalidConfig`](oncetask_core::StoreError::InvalidConfig),
    /// as a tool that only inspects an existing queue wants.
    pub create_if_missing: bool,
    /// Whether [`SqliteStore::connect_with`](crate::SqliteStore::connect_with)
    /// applies the embedded migrations (true by default). False only checks
    /// that the database's schema is the one this library writes, and fails
    /// with [`StoreError::InvalidConfig`](oncetask_core::StoreError::InvalidConfig)
    /// otherwise: for tools that must not change a schema the services on
    /// the file own (an older service would refuse the newer schema). An
    /// in-memory database, new by definition, is always migrated.
    pub migrate: bool,
}

impl SqliteOptions {
    /// The default busy timeout: 5 s.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

    /// The default pool size.
    pub const DEFAULT_POOL_SIZE: u32 = 4;

    /// The default watch interval: 5 ms. Another process's write reaches
    /// this store's workers 2.5 ms later on average, and an idle watcher
    /// costs about 1 % of a core (less at longer intervals: see the `watch`
    /// figures in `docs/sqlite.md`).
    pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(5);

    /// The defaults: same as [`SqliteOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`SqliteOptions::durability`]; [`Durability::Normal`] is the
    /// faster opt-in.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets [`SqliteOptions::pool_size`].
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`SqliteOptions::create_if_missing`].
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Sets [`SqliteOptions::migrate`].
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Sets [`SqliteOptions::watch_interval`]: `None` stops watching for
    /// other processes' writes. A zero interval counts as 1 ms.
    pub fn watch_interval(mut self, interval: Option<Duration>) -> Self {
        self.watch_interval = interval;
        self
    }
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            pool_size: Self::DEFAULT_POOL_SIZE,
            watch_interval: Some(Self::DEFAULT_WATCH_INTERVAL),
            create_if_missing: true,
            migrate: true,
        }
    }
}
