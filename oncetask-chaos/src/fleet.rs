//! The workers of a run and what the coordinator does to them: start, kill
//! (SIGKILL, or dropping an in-process worker's runtime), pause (SIGSTOP /
//! SIGCONT, or stalling an in-process worker's runtime) and stop gracefully.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use oncetask::Store;

use crate::ChaosError;
use crate::backend::Target;
use crate::ledger::{LedgerWriter, now_micros};
use crate::worker::{self, WorkerSpec};

/// One worker as the coordinator sees it.
enum Slot {
    Process(Child),
    InProcess {
        kill: Option<tokio::sync::oneshot::Sender<bool>>,
        thread: Option<JoinHandle<()>>,
        stall_until: Arc<AtomicU64>,
    },
}

/// How workers are made.
pub enum Spawner {
    /// Real OS processes running this executable's `worker` subcommand.
    Processes {
        /// This executable.
        exe: std::path::PathBuf,
        /// The store, as the workers open it.
        target: Target,
    },
    /// Threads with a runtime each, sharing one store (the memory backend).
    InProcess {
        /// The shared store.
        store: Arc<dyn Store>,
    },
}

/// The live workers, and when each dead one died.
pub struct Fleet {
    spawner: Spawner,
    base: WorkerSpec,
    live: Vec<(u32, Slot)>,
    next: u32,
    /// (worker, µs) of every worker killed.
    pub deaths: Vec<(u32, i64)>,
}

impl Fleet {
    /// A fleet with no workers yet; `base` is copied for each (its `worker`
    /// number is replaced).
    pub fn new(spawner: Spawner, base: WorkerSpec) -> Self {
        Self {
            spawner,
            base,
            live: Vec::new(),
            next: 1,
            deaths: Vec::new(),
        }
    }

    /// Number of live workers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no worker is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Starts one more worker.
    pub fn spawn(&mut self) -> Result<(), ChaosError> {
        let n = self.next;
        self.next += 1;
        let spec = WorkerSpec {
            worker: n,
            ..self.base.clone()
        };
        let slot = match &self.spawner {
            Spawner::Processes { exe, target } => Slot::Process(spawn_process(exe, target, &spec)?),
            Spawner::InProcess { store } => spawn_thread(store.clone(), spec)?,
        };
        self.live.push((n, slot));
        Ok(())
    }

    /// Kills the worker at `index` (mod the live count) without letting it
    /// clean up; returns its number.
    pub fn kill(&mut self, index: usize) -> Option<u32> {
        if self.live.is_empty() {
            return None;
        }
        let (n, slot) = self.live.remove(index % self.live.len());
        match slot {
            Slot::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Slot::InProcess { kill, thread, .. } => {
                if let Some(kill) = kill {
                    let _ = kill.send(false);
                }
                if let Some(thread) = thread {
                    let _ = thread.join();
                }
            }
        }
        self.deaths.push((n, now_micros()));
        Some(n)
    }

    /// Freezes the worker at `index` for `pause`, all of it at once (its
    /// leases run out meanwhile); returns its number. Waits out `pause` for
    /// a process; an in-process worker stalls on its own when its handler
    /// next returns.
    pub async fn pause(
        &mut self,
        index: usize,
        pause: Duration,
    ) -> Result<Option<u32>, ChaosError> {
        if self.live.is_empty() {
            return Ok(None);
        }
        let i = index % self.live.len();
        let (n, slot) = &self.live[i];
        match slot {
            Slot::Process(child) => {
                let pid = child.id().to_string();
                signal("-STOP", &pid)?;
                tokio::time::sleep(pause).await;
                signal("-CONT", &pid)?;
            }
            Slot::InProcess { stall_until, .. } => {
                let until = now_micros() + i64::try_from(pause.as_micros()).unwrap_or(i64::MAX);
                stall_until.store(u64::try_from(until).unwrap_or(0), Ordering::SeqCst);
            }
        }
        Ok(Some(*n))
    }

    /// Stops every worker gracefully and waits for them.
    pub fn stop_all(&mut self) -> Result<(), ChaosError> {
        for (n, slot) in self.live.drain(..) {
            match slot {
                Slot::Process(mut child) => {
                    drop(child.stdin.take()); // EOF: the worker shuts down
                    let status = child
                        .wait()
                        .map_err(|e| ChaosError::io(format!("wait for worker {n}"), e))?;
                    if !status.success() {
                        return Err(ChaosError::Run(format!("worker {n} exited with {status}")));
                    }
                }
                Slot::InProcess { kill, thread, .. } => {
                    if let Some(kill) = kill {
                        let _ = kill.send(true);
                    }
                    if let Some(thread) = thread {
                        thread
                            .join()
                            .map_err(|_| ChaosError::Run(format!("worker {n} panicked")))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, slot) in &mut self.live {
            if let Slot::Process(child) = slot {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn_process(exe: &Path, target: &Target, spec: &WorkerSpec) -> Result<Child, ChaosError> {
    let target = serde_json::to_string(target)
        .map_err(|e| ChaosError::Run(format!("encode target: {e}")))?;
    Command::new(exe)
        .arg("worker")
        .args(["--target", &target, "--env", &spec.env, "--ledger"])
        .arg(&spec.ledger)
        .args(["--worker", &spec.worker.to_string()])
        .args(["--concurrency", &spec.concurrency.to_string()])
        .args(["--lease-ms", &spec.lease.as_millis().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| ChaosError::io(format!("start worker {}", spec.worker), e))
}

fn spawn_thread(store: Arc<dyn Store>, spec: WorkerSpec) -> Result<Slot, ChaosError> {
    let ledger = Arc::new(LedgerWriter::open(&spec.ledger, spec.worker)?);
    let (kill, killed) = tokio::sync::oneshot::channel::<bool>();
    let stall_until = Arc::new(AtomicU64::new(0));
    let stall_flag = stall_until.clone();
    // Blocking the runtime's only thread freezes the whole worker, timers
    // and all, as SIGSTOP freezes a process.
    let stall: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let until = i64::try_from(stall_flag.swap(0, Ordering::SeqCst)).unwrap_or(0);
        let left = until - now_micros();
        if left > 0 {
            std::thread::sleep(Duration::from_micros(u64::try_from(left).unwrap_or(0)));
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ChaosError::io("build a worker runtime".into(), e))?;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
            let work = worker::run(store, &spec, ledger, stall, async {
                let _ = graceful_rx.await;
            });
            tokio::pin!(work);
            tokio::select! {
                result = &mut work => {
                    if let Err(e) = result {
                        eprintln!("worker {}: {e}", spec.worker);
                    }
                }
                graceful = killed => {
                    if graceful.unwrap_or(false) {
                        let _ = graceful_tx.send(());
                        if let Err(e) = work.await {
                            eprintln!("worker {}: {e}", spec.worker);
                        }
                    }
                    // Otherwise: a kill. Returning drops the runtime with
                    // every worker loop and handler in it, mid-flight.
                }
            }
        });
        runtime.shutdown_background();
    });
    Ok(Slot::InProcess {
        kill: Some(kill),
        thread: Some(thread),
        stall_until,
    })
}

fn signal(which: &str, pid: &str) -> Result<(), ChaosError> {
    let status = Command::new("kill")
        .args([which, pid])
        .status()
        .map_err(|e| ChaosError::io(format!("kill {which} {pid}"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(ChaosError::Run(format!(
            "kill {which} {pid} failed: {status}"
        )))
    }
}
