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

/// A gRPC service of discovery streams; `S` says which (see [`Methods`]).
pub(crate) struct Discovery<S> {
    pub streams: Arc<Streams>,
    /// The largest request message taken (`--xds-max-message`).
    pub max_message: usize,
    pub service: PhantomData<fn() -> S>,
}

impl<S> Clone for Discovery<S> {
    fn clone(&self) -> Self {
        Discovery {
            streams: self.streams.clone(),
            max_message: self.max_message,
            service: PhantomData,
        }
    }
}

/// The Aggregated Discovery Service: every type on one stream, SotW and delta.
pub(crate) type Ads = Discovery<AdsMethods>;
/// The Endpoint Discovery Service: `ClusterLoadAssignment`s only.
pub(crate) type Eds = Discovery<EdsMethods>;

/// What a service's method does.
pub(crate) enum Method {
    Sotw(&'static str, Option<Kind>),
    Delta(&'static str, Option<Kind>),
    Unimplemented(&'static str),
}

/// A service's name and methods (the protocol label each stream gets, and the one type an
/// EDS stream is bound to).
pub(crate) trait Methods {
    const NAME: &'static str;
    fn method(name: &str) -> Method;
}

pub(crate) struct AdsMethods;

impl Methods for AdsMethods {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
    fn method(name: &str) -> Method {
        match name {
            "StreamAggregatedResources" => Method::Sotw("ads", None),
            "DeltaAggregatedResources" => Method::Delta("ads-delta", None),
            _ => Method::Unimplemented(""),
        }
    }
}

pub(crate) struct EdsMethods;

impl Methods for EdsMethods {
    const NAME: &'static str = "envoy.service.endpoint.v3.EndpointDiscoveryService";
    fn method(name: &str) -> Method {
        let only = Some(Kind::Endpoints);
        match name {
            "StreamEndpoints" => Method::Sotw("eds", only),
            "DeltaEndpoints" => Method::Delta("eds-delta", only),
            "FetchEndpoints" => Method::Unimplemented(
                "FetchEndpoints is not served over gRPC: use StreamEndpoints, ADS, or the REST endpoint POST /v3/discovery:endpoints",
            ),
            _ => Method::Unimplemented(""),
        }
    }
}

impl<S: Methods> NamedService for Discovery<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S: Methods, B> Service<http::Request<B>> for Discovery<S>
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
        let name = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::NAME))
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or_default();
        let (streams, max) = (self.streams.clone(), self.max_message);
        match S::method(name) {
            Method::Sotw(label, only) => serve::<Sotw, B>(streams, label, only, max, request),
            Method::Delta(label, only) => serve::<Delta, B>(streams, label, only, max, request),
            Method::Unimplemented(why) => {
                let status = Status::unimplemented(why);
                Box::pin(async move { Ok(status.into_http()) })
            }
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
