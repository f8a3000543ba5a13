//! Flare's executor: owns the deployed functions and runs invocations.
//!
//! [`Executor::run`] keeps the set of deployments equal to the functions in
//! the store: it lists them once, then applies every watch event, and
//! publishes the store revision it has caught up with ([`Executor::applied`])
//! so the API can answer a write only once the function is servable.
//!
//! [`Executor::invoke`] is the data path: look the function up, take a
//! concurrency permit (none left: 503, never an unbounded pile), read the
//! body within the function's limit (413), and run it in the runtime. The
//! permit is held until the guest has finished streaming its response.

mod deploy;
mod history;
mod invoke;
mod metrics;
mod share;
mod submit;
mod trace;

pub use deploy::{
    DEFAULT_BODY_TIMEOUT, DeploymentStatus, Executor, InstanceStatus, KeepAliveStatus,
};
pub use flare_runtime::{ResponseBody, Runtime, full_body};
pub use history::{MetricPoint, SPAN as HISTORY_SPAN, STEP as HISTORY_STEP, SharedPoint};
pub use invoke::{INVOCATION_HEADER, Invoked};
pub use share::Share;
pub use submit::{ASYNC_HEADER, CALLBACK_HEADER, RETRIES_HEADER, accepted};
