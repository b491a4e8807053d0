//! Print what the probe reads from one binary: `cargo run -p caiclust-probe
//! --example read_binary -- FILE [--symbols]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: read_binary FILE [--symbols]");
        std::process::exit(2);
    };
    let with_symbols = args.any(|a| a == "--symbols");
    match caiclust_probe::read_binary(std::path::Path::new(&path)) {
        Ok(mut info) => {
            let (exports, imports) = (info.exports.len(), info.imports.len());
            if !with_symbols {
                info.exports.truncate(12);
                info.imports.truncate(12);
            }
            println!("exports: {exports}, imports: {imports}");
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
            let name = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Ok(full) = caiclust_probe::read_binary(std::path::Path::new(&path)) {
                println!("{:#?}", caiclust_probe::fingerprint(&name, &full));
            }
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
