//! A load client for the gRPC `Check` service (issue 16): sends COUNT
//! Envoy-shaped `CheckRequest`s for Dr. Ali's break-glass read of
//! `obs-1` through the FHIR mapper, CONCURRENCY at a time over one HTTP/2
//! connection (as one Envoy worker does), and prints how many were allowed.
//! It measures nothing itself: `ext_authz_cpu.sh` reads the server's CPU
//! time around it, which is what a shared machine cannot disturb.
//!
//! Usage: `cargo bench --bench grpc_check_load -- URL [COUNT] [CONCURRENCY]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use tokio::task::JoinSet;

fn check_request() -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "fhir.example"),
        (":method", "GET"),
        (":path", "/fhir/Observation/obs-1"),
        ("x-principal", "Practitioner/dr-ali"),
        ("x-purpose-of-use", "BTG"),
        ("x-justification", "unconscious on arrival"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/fhir+json"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect();
    let http = HttpRequest {
        method: "GET".to_owned(),
        path: "/fhir/Observation/obs-1".to_owned(),
        host: "fhir.example".to_owned(),
        headers,
        ..HttpRequest::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Request::default() }),
            ..AttributeContext::default()
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let url = args.first().expect("usage: grpc_check_load URL [COUNT] [CONCURRENCY]").clone();
    let count: usize = args.get(1).map_or(20_000, |c| c.parse().unwrap());
    let concurrency: usize = args.get(2).map_or(16, |c| c.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let allowed = runtime.block_on(async move {
        let client = AuthorizationClient::connect(url).await.unwrap();
        let mut tasks = JoinSet::new();
        for worker in 0..concurrency {
            let mut client = client.clone();
            let share = count / concurrency + usize::from(worker < count % concurrency);
            tasks.spawn(async move {
                let mut allowed = 0;
                for _ in 0..share {
                    let answer = client.check(check_request()).await.unwrap().into_inner();
                    allowed += usize::from(answer.status.is_some_and(|s| s.code == 0));
                }
                allowed
            });
        }
        tasks.join_all().await.into_iter().sum::<usize>()
    });
    println!("{count} requests, {allowed} allowed");
}
