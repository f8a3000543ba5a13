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
    /// `wasi:config/store`: the function's configs and secrets.
    pub config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
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
    pub egress: Arc<flare_egress::EgressPolicy>,
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
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(flare_egress::CONNECT_TIMEOUT);
        let first_byte_timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(flare_egress::FIRST_BYTE_TIMEOUT);
        Box::new(async move {
            use http_body_util::BodyExt;
            // The name is resolved once and the connection goes to the
            // addresses that were checked (no DNS-rebinding gap).
            let (response, io) =
                flare_egress::send(&egress, request, connect_timeout, first_byte_timeout)
                    .await
                    .map_err(outbound_error)?;
            let io = async move { io.await.map_err(HttpError::from) };
            Ok((
                response.map(|body| body.map_err(HttpError::from).boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// The `wasi:http` error a guest sees for an outbound request that failed.
fn outbound_error(e: flare_egress::SendError) -> HttpError {
    use flare_egress::SendError;
    match e {
        SendError::Denied(why) => {
            tracing::debug!("outbound request refused: {why}");
            HttpError::HttpRequestDenied
        }
        SendError::Unreachable(why) => {
            tracing::debug!("outbound request failed: {why}");
            HttpError::DestinationUnavailable
        }
        SendError::NoHost => HttpError::HttpRequestUriInvalid,
        SendError::Tls { source, .. } => HttpError::Tls(source),
        SendError::Timeout => HttpError::ConnectionTimeout,
        SendError::Http(e) => HttpError::from(e),
    }
}
