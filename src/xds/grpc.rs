//! The gRPC services, ADS and EDS, routed by hand as tonic's generated servers are: those fix
//! prost's codec for the responses, and ours writes a response around resources encoded once
//! per change ([`wire`](super::wire)). Requests are decoded by prost as before.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::protocol::{Delta, Sotw};
use super::resources::Kind;
use super::stream::{Outbound, Protocol, Streams};
use super::wire::Codec;

/// The Aggregated Discovery Service: every type on one stream, SotW and delta.
#[derive(Clone)]
pub(crate) struct Ads {
    pub streams: Arc<Streams>,
    /// The largest request message taken (`--xds-max-message`).
    pub max_message: usize,
}

/// The Endpoint Discovery Service: `ClusterLoadAssignment`s only.
#[derive(Clone)]
pub(crate) struct Eds {
    pub streams: Arc<Streams>,
    /// The largest request message taken (`--xds-max-message`).
    pub max_message: usize,
}

impl NamedService for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl NamedService for Eds {
    const NAME: &'static str = "envoy.service.endpoint.v3.EndpointDiscoveryService";
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<B> Service<http::Request<B>> for Ads
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Answer {
        let method = request
            .uri()
            .path()
            .strip_prefix("/envoy.service.discovery.v3.AggregatedDiscoveryService/");
        let streams = self.streams.clone();
        match method {
            Some("StreamAggregatedResources") => {
                serve::<Sotw, B>(streams, "ads", None, self.max_message, request)
            }
            Some("DeltaAggregatedResources") => {
                serve::<Delta, B>(streams, "ads-delta", None, self.max_message, request)
            }
            _ => refuse(Status::unimplemented("")),
        }
    }
}

impl<B> Service<http::Request<B>> for Eds
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Answer {
        let method = request
            .uri()
            .path()
            .strip_prefix("/envoy.service.endpoint.v3.EndpointDiscoveryService/");
        let streams = self.streams.clone();
        let only = Some(Kind::Endpoints);
        match method {
            Some("StreamEndpoints") => {
                serve::<Sotw, B>(streams, "eds", only, self.max_message, request)
            }
            Some("DeltaEndpoints") => {
                serve::<Delta, B>(streams, "eds-delta", only, self.max_message, request)
            }
            Some("FetchEndpoints") => refuse(Status::unimplemented(
                "FetchEndpoints is not served over gRPC: use StreamEndpoints, ADS, or the REST endpoint POST /v3/discovery:endpoints",
            )),
            _ => refuse(Status::unimplemented("")),
        }
    }
}

/// Serves one stream of protocol `P`.
fn serve<P: Protocol, B>(
    streams: Arc<Streams>,
    protocol: &'static str,
    only: Option<Kind>,
    max_message: usize,
    request: http::Request<B>,
) -> Answer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(Codec::<P::Response, P::Request>::default())
            .apply_max_message_size_config(Some(max_message), None);
        let open = Open::<P> {
            streams,
            protocol,
            only,
            kind: PhantomData,
        };
        Ok(grpc.streaming(open, request).await)
    })
}

fn refuse(status: Status) -> Answer {
    Box::pin(async move { Ok(status.into_http()) })
}

/// Opens a stream of protocol `P` (see [`Streams::open`]).
struct Open<P> {
    streams: Arc<Streams>,
    protocol: &'static str,
    only: Option<Kind>,
    kind: PhantomData<fn() -> P>,
}

impl<P: Protocol> StreamingService<P::Request> for Open<P> {
    type Response = P::Response;
    type ResponseStream = Outbound<P::Response>;
    type Future = std::future::Ready<Result<Response<Outbound<P::Response>>, Status>>;

    fn call(&mut self, request: Request<Streaming<P::Request>>) -> Self::Future {
        std::future::ready(self.streams.open::<P>(request, self.protocol, self.only))
    }
}
