//! `whale version` / `whale --version`: the client's version, and the server's when one
//! answers (without starting one: asking a version should not start a daemon).

use crate::daemon::{self, Probe};
use crate::error::Error;
use crate::output;

/// This client's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn run() -> Result<(), Error> {
    output::data(&format!("whale version {VERSION}\n"))?;
    let client = daemon::client()?;
    let address = client.host().clone();
    match daemon::check(&client, &address).await {
        Ok(server) => {
            output::data(&format!("whaled version {}\n", server.version))?;
            if server.version != VERSION {
                output::note(&format!(
                    "warning: client version is {VERSION}, whaled's is {}",
                    server.version
                ));
            }
        }
        Err(Probe::Refused(_)) => output::note(&format!(
            "warning: could not connect to whaled at {address}"
        )),
        Err(Probe::Failed(error)) => output::note(&format!("warning: {error}")),
    }
    Ok(())
}
