//! Flare's HTTP ingress.
//!
//! - [`RouteTable`] is plain data compiled from the HTTP triggers, and
//!   [`RouteTable::resolve`] a pure function from (method, host, path) to
//!   the function to run; both are unit-tested without sockets.
//! - [`Router`] holds the live table behind an [`arc_swap::ArcSwap`],
//!   rebuilds it from the store on every trigger change, and serves HTTP/1.1
//!   with hyper, handing each request to the executor.
//! - [`listen`] accepts connections, plain or TLS, for the router and the
//!   API alike.
//!
//! Every function is also reachable at `/fn/{name}/...` without a trigger;
//! there it sees the rest of the path. Through a trigger it sees the
//! original path, with parameters as `x-flare-param-{name}` headers.

pub mod listen;
mod server;
mod table;

pub use server::{Router, error_response};
pub use table::{Resolved, RouteTable};
