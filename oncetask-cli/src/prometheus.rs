//! Prometheus text output of oncetask's metrics ([`oncetask::metrics`]),
//! for `oncetask demo --metrics`.
//!
//! Installs `metrics-exporter-prometheus`'s recorder as the process's
//! global recorder (without its HTTP listener: the text is printed), with
//! histogram buckets for the `_seconds` metrics.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::CliError;

/// Bucket bounds, in seconds, of the duration histograms.
pub const SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs a Prometheus recorder for this process and describes the
/// metrics; render them later with [`PrometheusHandle::render`]. Fails if a
/// recorder is installed already.
pub fn install() -> Result<PrometheusHandle, CliError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
        .map_err(|e| CliError::failed(format!("cannot set up the metrics: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| CliError::failed(format!("cannot install the metrics recorder: {e}")))?;
    oncetask::metrics::describe_metrics();
    Ok(handle)
}
