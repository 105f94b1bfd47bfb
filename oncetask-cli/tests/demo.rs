//! `oncetask demo`, through the real binary: the README's first command and
//! CI's demo step.

use std::process::{Command, Stdio};

#[test]
fn the_demo_runs_and_prints_prometheus_metrics_on_request() {
    let output = Command::new(env!("CARGO_BIN_EXE_oncetask"))
        .args(["demo", "--metrics"])
        .stdin(Stdio::null())
        .output()
        .expect("run the oncetask binary");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("oncetask demo: in-memory backend"), "{text}");
    for metric in [
        "oncetask_tasks_created_total{env=\"demo\",kind=\"charge_card\"} 1",
        "oncetask_tasks_retried_total{env=\"demo\",kind=\"charge_card\"} 2",
        "oncetask_tasks_succeeded_total{env=\"demo\",kind=\"charge_card\"} 1",
        "oncetask_tasks_failed_total{env=\"demo\",kind=\"import_file\"} 1",
        "oncetask_tasks_cancelled_total{env=\"demo\",kind=\"send_reminder\"} 1",
        "# TYPE oncetask_handler_duration_seconds histogram",
        "# TYPE oncetask_enqueue_to_start_seconds histogram",
        "oncetask_tasks_pending{env=\"demo\",kind=\"welcome_email\"} 0",
    ] {
        assert!(text.contains(metric), "{metric} in\n{text}");
    }
}

#[test]
fn the_demo_prints_no_metrics_unless_asked() {
    let output = Command::new(env!("CARGO_BIN_EXE_oncetask"))
        .arg("demo")
        .stdin(Stdio::null())
        .output()
        .expect("run the oncetask binary");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("total"), "the summary table: {text}");
    assert!(!text.contains("oncetask_tasks_"), "{text}");
}
