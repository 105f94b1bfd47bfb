//! The `oncetask` command. Everything it does lives in the `oncetask_cli`
//! library; see `oncetask --help`.

/// mimalloc's per-thread heaps: the command's workers allocate tasks on
/// one thread and free them on another (see the dependency's comment).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    oncetask_cli::main_from_env()
}
