//! The admin listener: what the operator asks the gateway, on an address clients do not reach
//! (`admin_listen`; loopback in the example config).
//!
//! `GET /metrics` lists every configured model with its traffic: which models the operator
//! serves is theirs to know, so the page is not on the port clients use. `GET /healthz`
//! answers here too, for probes that live beside the metrics scraper.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;

/// The admin endpoints, cheap to clone: one per connection.
#[derive(Clone)]
pub struct Admin {
    metrics: PrometheusHandle,
}

impl Admin {
    /// Serves `GET /metrics` from `metrics` (the layer's figures feed the `metrics` facade:
    /// whatever recorder the process installed, this one renders them for Prometheus).
    pub fn new(metrics: PrometheusHandle) -> Self {
        Admin { metrics }
    }

    /// Answers one request: `/metrics`, `/healthz`, or 404.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(self.metrics.render()),
            ),
            (&Method::GET | &Method::HEAD, "/healthz") => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"ok\n"),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"the admin listener serves GET /metrics and GET /healthz\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

impl crate::server::Handler for Admin {
    fn answer(
        &self,
        req: Request<crate::server::ClientBody>,
    ) -> impl std::future::Future<Output = Response<crate::proxy::GatewayBody>> + Send {
        let response = self.handle(&req).map(http_body_util::Either::Right);
        std::future::ready(response)
    }
}
