//! `feishu-bridge status` (being written).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml")]
    config: PathBuf,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{} is not available in this build", args.config.display())
}
