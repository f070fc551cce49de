//! `choreo`: the command line of the choreo engine.

fn main() -> std::process::ExitCode {
    choreo_cli::Operator::new().main()
}
