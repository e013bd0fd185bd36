//! The gateway's Prometheus metrics (`floe_gateway_*`): requests by route, method and status,
//! latency to the response head, bytes in and out, requests in flight and refused; and what the
//! publisher's account paid (registrations by outcome, units, the balance left), so running dry
//! can be alerted on before PUTs answer 402.

use floe_node::client::control::{Refused, Registered};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub bytes: IntCounterVec,
    pub in_flight: IntGauge,
    pub registrations: IntCounterVec,
    pub paid_units: IntCounter,
    pub balance: IntGauge,
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
        let registrations = IntCounterVec::new(
            Opts::new(
                "floe_gateway_registrations_total",
                "Blobs the publisher registered with the control plane, by outcome \
                 (registered, insufficient_balance, refused, unavailable)",
            ),
            &["outcome"],
        )?;
        let paid_units = IntCounter::new(
            "floe_gateway_paid_units_total",
            "Units the publisher's account paid for storage",
        )?;
        let balance = IntGauge::new(
            "floe_gateway_publisher_balance_units",
            "The publisher account's balance after its last registration",
        )?;
        registry.register(Box::new(registrations.clone()))?;
        registry.register(Box::new(paid_units.clone()))?;
        registry.register(Box::new(balance.clone()))?;
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
            registrations,
            paid_units,
            balance,
        })
    }

    pub fn bytes_in(&self, n: u64) {
        self.bytes.with_label_values(&["in"]).inc_by(n);
    }
    pub fn bytes_out(&self, n: u64) {
        self.bytes.with_label_values(&["out"]).inc_by(n);
    }

    /// Count one registration's outcome (and what it cost, and the balance it left).
    pub fn registration(&self, r: &Result<Registered, Refused>) {
        let outcome = match r {
            Ok(reg) => {
                self.paid_units.inc_by(reg.cost);
                self.balance
                    .set(i64::try_from(reg.balance).unwrap_or(i64::MAX));
                "registered"
            }
            Err(e) => match e.code {
                tonic::Code::FailedPrecondition => "insufficient_balance",
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Aborted
                | tonic::Code::Cancelled => "unavailable",
                _ => "refused",
            },
        };
        self.registrations.with_label_values(&[outcome]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
