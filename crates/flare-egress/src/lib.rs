//! Where code a tenant wrote may connect, and how it gets there.
//!
//! Every way a tenant can make Flare open a connection goes through here:
//! a wasm function's outbound HTTP ([`send`]), a process function's
//! outbound HTTP(S) through the proxy its sandbox reaches over a Unix
//! socket ([`proxy`]), and an async invocation's callback
//! ([`EgressPolicy::resolve`]). One [`EgressPolicy`] decides for all of
//! them, on the address actually connected to: a name is resolved once,
//! every address it gave is checked, and the connection goes to exactly
//! those addresses, so a name that changes its answer between check and
//! connect (DNS rebinding) gains nothing.

mod client;
mod policy;
pub mod proxy;

pub use client::{CONNECT_TIMEOUT, FIRST_BYTE_TIMEOUT, SendError, send};
pub use policy::{EgressError, EgressPolicy, is_public};
