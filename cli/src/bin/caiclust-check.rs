//! `caiclust-check`: see [`caiclust_cli::apps::check`].
fn main() -> std::process::ExitCode {
    caiclust_cli::apps::serve_helpers_if_requested();
    caiclust_cli::apps::check::main(std::env::args_os().collect()).into()
}
