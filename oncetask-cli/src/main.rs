//! The `oncetask` command. Everything it does lives in the `oncetask_cli`
//! library; see `oncetask --help`.

fn main() -> std::process::ExitCode {
    oncetask_cli::main_from_env()
}
