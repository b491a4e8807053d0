//! `caiclust`: see [`caiclust_cli::apps::caiclust`].
fn main() -> std::process::ExitCode {
    caiclust_cli::apps::serve_helpers_if_requested();
    caiclust_cli::apps::caiclust::main(std::env::args_os().collect()).into()
}
