//! The per-request state of a store: WASI context, HTTP context, limits.

use std::sync::Arc;

use flare_model::FunctionSpec;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

pub(crate) struct Host {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: OutboundPolicy,
    pub limits: StoreLimits,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound HTTP: only to the hosts the function lists, and only to
/// addresses the server's egress policy allows.
pub(crate) struct OutboundPolicy {
    pub allowed_hosts: Arc<[String]>,
    pub egress: Arc<flare_model::EgressPolicy>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        if !FunctionSpec::allows_host(&self.allowed_hosts, &authority) {
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let egress = self.egress.clone();
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = request.uri().host().unwrap_or_default().to_string();
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        Box::new(async move {
            use http_body_util::BodyExt;
            // Every address the name resolves to must be allowed. The
            // connection resolves the name again: a name that changes its
            // answer in between (DNS rebinding) is a gap this check leaves.
            if let Err(why) = egress.resolve(&host, port).await {
                tracing::debug!("outbound request to {host}:{port} refused: {why}");
                return Err(HttpError::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
