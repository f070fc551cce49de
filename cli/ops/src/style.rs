//! Colour on a terminal. On when stdout is a terminal; off with `NO_COLOR` (any non-empty
//! value, <https://no-color.org>) or when stdout is piped or redirected; `CLICOLOR_FORCE`
//! (non-empty, not `0`) turns it on anyway, for a pager that understands it (`less -R`).

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::sync::OnceLock;

/// What a piece of text is, and so its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// Table headers: bold.
    Header,
    /// Event types: cyan.
    Type,
    /// A good outcome (completed): green.
    Good,
    /// On its way or undone (compensating, compensated): yellow.
    Warn,
    /// Failed, dead-lettered, not an event: red.
    Bad,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Self::Header => "1",
            Self::Type => "36",
            Self::Good => "32",
            Self::Warn => "33",
            Self::Bad => "31",
        }
    }
}

/// Whether this process colours its output (decided once).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        decide(
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("CLICOLOR_FORCE").as_deref(),
            std::io::stdout().is_terminal(),
        )
    })
}

/// The rule, without the environment: `NO_COLOR` wins, then `CLICOLOR_FORCE`, then the
/// terminal.
fn decide(no_color: Option<&OsStr>, force: Option<&OsStr>, terminal: bool) -> bool {
    let set = |v: Option<&OsStr>| v.is_some_and(|v| !v.is_empty());
    if set(no_color) {
        return false;
    }
    if set(force) && force != Some(OsStr::new("0")) {
        return true;
    }
    terminal
}

/// `text` in `style` when `colour`, else unchanged.
pub(crate) fn paint_if(colour: bool, text: &str, style: Style) -> String {
    if colour && !text.is_empty() {
        format!("\x1b[{}m{text}\x1b[0m", style.code())
    } else {
        text.to_owned()
    }
}

/// `text` in `style` when this process colours its output.
pub(crate) fn paint(text: &str, style: Style) -> String {
    paint_if(enabled(), text, style)
}

/// The style of a saga status as printed (`completed`, `compensated`, `faulted`, ...).
pub(crate) fn of_status(status: &str) -> Option<Style> {
    match status {
        "completed" => Some(Style::Good),
        "compensating" | "compensated" => Some(Style::Warn),
        "faulted" | "failed" => Some(Style::Bad),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_wins_then_force_then_the_terminal() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert!(decide(None, None, true));
        assert!(!decide(None, None, false));
        assert!(!decide(s("1"), None, true), "NO_COLOR turns it off");
        assert!(
            !decide(s("1"), s("1"), true),
            "NO_COLOR beats CLICOLOR_FORCE"
        );
        assert!(decide(s(""), None, true), "an empty NO_COLOR is not set");
        assert!(decide(None, s("1"), false), "CLICOLOR_FORCE on a pipe");
        assert!(
            !decide(None, s("0"), false),
            "CLICOLOR_FORCE=0 does not force"
        );
    }

    #[test]
    fn painting_wraps_in_an_sgr_sequence_and_resets() {
        assert_eq!(paint_if(true, "done", Style::Good), "\x1b[32mdone\x1b[0m");
        assert_eq!(paint_if(false, "done", Style::Good), "done");
        assert_eq!(paint_if(true, "", Style::Bad), "", "nothing to colour");
    }
}
