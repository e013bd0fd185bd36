//! The gateway's Prometheus metrics (`floe_gateway_*`): requests by route, method and status,
//! latency to the response head, bytes in and out, requests in flight and refused.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub bytes: IntCounterVec,
    pub in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("floe_gateway_requests_total", "HTTP requests answered"),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "floe_gateway_request_duration_seconds",
                "Time from a request to its response head",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["route", "method"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "floe_gateway_bytes_total",
                "Blob bytes received (in) and sent (out)",
            ),
            &["direction"],
        )?;
        let in_flight = IntGauge::new(
            "floe_gateway_requests_in_flight",
            "Requests being served now",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            bytes,
            in_flight,
        })
    }

    pub fn bytes_in(&self, n: u64) {
        self.bytes.with_label_values(&["in"]).inc_by(n);
    }
    pub fn bytes_out(&self, n: u64) {
        self.bytes.with_label_values(&["out"]).inc_by(n);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
