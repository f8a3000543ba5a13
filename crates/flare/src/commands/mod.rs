pub mod environment;
pub mod function;
pub mod httptrigger;
pub mod invocations;
pub mod mqtrigger;
pub mod server;
pub mod timetrigger;

use clap::Args;

/// Where the CLI finds the API.
#[derive(Args, Debug, Clone)]
pub struct ApiFlag {
    /// URL of the Flare API.
    #[arg(
        long = "api",
        env = "FLARE_API",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub api: String,
}

impl ApiFlag {
    pub fn client(&self) -> flare_api::Client {
        flare_api::Client::new(&self.api)
    }
}
