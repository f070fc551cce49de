//! `choreo`: the command line of the choreo engine.

fn main() -> std::process::ExitCode {
    // The shipped binary can replay the example swarms' sagas; a team mounts its own.
    choreo_cli::Operator::new()
        .saga(choreo_example_travel::TripSaga::new(
            choreo_example_travel::TravelOptions::new(0, 0, Default::default()).step_timeout,
        ))
        .saga(choreo_example_release::ReleaseSaga {
            step_timeout: std::time::Duration::from_secs(30),
            approval_timeout: std::time::Duration::from_millis(1500),
        })
        .main()
}
