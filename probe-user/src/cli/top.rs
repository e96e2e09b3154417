//! `probe top`: placeholder replaced below.
#[derive(Debug, clap::Args)]
pub struct TopArgs {}
pub fn run(_args: &TopArgs) -> Result<(), super::CliError> { Ok(()) }
