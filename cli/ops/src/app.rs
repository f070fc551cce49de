//! The process around a command: the config file, a quiet broken pipe, logging (and OTLP with
//! the `otlp` feature), the async runtime and the exit code. Shared by [`crate::Operator`] and by
//! any binary that mounts [`crate::OperatorCommand`] next to commands of its own (the `choreo`
//! application does).

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitCode;

use crate::CommandError;

/// The help text's last words on defaults, for a binary built on these commands.
pub const CONFIG_HELP: &str = "Defaults come from --config FILE, $CHOREO_CONFIG or ./choreo.toml \
     (keys: nats, namespace, partitions, data_dir); flags and CHOREO_* variables win.";

/// The log filter of a command-line run when `CHOREO_LOG` is not set: errors only, so output
/// meant for a pipe stays clean.
pub const DEFAULT_LOG_FILTER: &str = "error";

/// Ready the process's arguments: quiet exit on a broken pipe, then the defaults of
/// `choreo.toml` (`--config FILE`, `$CHOREO_CONFIG`, `./choreo.toml`) applied as environment
/// variables under flags. An unreadable or invalid config file is an error line and exit 1.
pub fn prepare_args<I, T>(args: I) -> Result<Vec<OsString>, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    quiet_on_broken_pipe();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    crate::config::apply(args).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// Print a completion script for `cmd` as `bin_name`.
pub fn print_completions(shell: clap_complete::Shell, cmd: &mut clap::Command, bin_name: &str) {
    clap_complete::generate(shell, cmd, bin_name, &mut std::io::stdout());
}

/// The name this program was started as (the file name of `args[0]`), for completions.
pub fn program_name(args: &[OsString], fallback: &str) -> String {
    args.first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map_or_else(|| fallback.to_owned(), str::to_owned)
}

/// Run `command` on a multi-threaded runtime with logging set up (filter in `CHOREO_LOG`,
/// default [`DEFAULT_LOG_FILTER`]); an error becomes one `error: …` line and exit 1.
pub fn execute<F>(service_name: &str, command: F) -> ExitCode
where
    F: Future<Output = Result<(), CommandError>>,
{
    let log_filter =
        std::env::var(choreo::logging::ENV_LOG).unwrap_or_else(|_| DEFAULT_LOG_FILTER.to_owned());
    #[cfg(feature = "otlp")]
    let telemetry = if choreo::Telemetry::configured() {
        match choreo::Telemetry::init(
            service_name,
            &log_filter,
            std::time::Duration::from_secs(10),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    #[cfg(not(feature = "otlp"))]
    let _ = service_name;
    // A bad filter falls back to errors only; a subscriber installed by the host binary wins.
    if choreo::logging::init_with(&log_filter).is_err() {
        let _ = choreo::logging::init_with(DEFAULT_LOG_FILTER);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(command);
    #[cfg(feature = "otlp")]
    if let Some(t) = telemetry {
        runtime.block_on(t.shutdown());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `choreo … | head`: when the reader goes away, printing fails with a broken pipe; that ends
/// the command quietly (exit 0, as `head` asked), not with a panic and exit 101.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::program_name;

    #[test]
    fn the_program_name_is_the_file_name_of_the_first_argument() {
        assert_eq!(program_name(&["/usr/bin/my-ops".into()], "x"), "my-ops");
        assert_eq!(program_name(&[], "choreo-ops"), "choreo-ops");
    }
}
