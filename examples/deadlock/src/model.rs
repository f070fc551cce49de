//! The agents' "model": scripted and deterministic, pure text from the task and the input.
//! Because it does no I/O and uses no clock or randomness, it runs inside the pure saga
//! handler, and a replay writes exactly the same artifacts (a real model would run in a
//! reactor, its answers recorded on the log, as the release example does).

use crate::wiring::{Artifact, Role};

/// What `role` writes for `task`, given the artifact it received (none: at the start).
pub fn write(role: Role, task: &str, input: Option<(Artifact, &str)>) -> String {
    let words = input.map_or(0, |(_, text)| text.split_whitespace().count());
    let from = input.map_or("the task", |(a, _)| a.as_str());
    match role {
        Role::Planner => format!("spec for {task}: read the input, validate it, report errors"),
        Role::Coder => format!("code for {task} implementing the {from} ({words} words)"),
        Role::Tester => format!("tests for {task} checking the {from} ({words} words)"),
        Role::Docs => format!("docs for {task} describing the {from} ({words} words)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_input_writes_the_same_text() {
        let spec = write(Role::Planner, "a parser", None);
        let a = write(Role::Coder, "a parser", Some((Artifact::Spec, &spec)));
        let b = write(Role::Coder, "a parser", Some((Artifact::Spec, &spec)));
        assert_eq!(a, b);
        assert_eq!(a, "code for a parser implementing the spec (11 words)");
    }
}
