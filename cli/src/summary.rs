//! The readable summary of a [`Facts`] document that `caiclust probe`
//! prints by default.

use std::fmt::Write as _;

use caiclust_core::probe::{Conclusion, Facts, Library, Subject, Vendor};
use colored::Colorize;

fn evidence_line<T>(c: &Conclusion<T>) -> String {
    c.evidence
        .iter()
        .map(|e| e.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A library's heading: its vendor, with the runtime file for an OpenMP
/// runtime (`GNU OpenMP (libgomp)`), or what it implements when the vendor
/// is unknown (`BLAS, LAPACK (unknown vendor)`).
fn library_name(lib: &Library) -> String {
    if lib.vendor.value == Vendor::Unknown && !lib.apis.is_empty() {
        let apis: Vec<String> = lib.apis.iter().map(ToString::to_string).collect();
        return format!("{} ({})", apis.join(", "), lib.vendor.value);
    }
    format!("{:#}", lib.vendor.value)
}

/// Shorten a path to the part below site-packages (or the tree root).
fn short_path(facts: &Facts, lib: &Library) -> String {
    let roots = &facts.scan.roots;
    for root in roots.iter().filter(|r| r.is_dir()) {
        if let Ok(rest) = lib.path.strip_prefix(root) {
            return rest.display().to_string();
        }
        if let Ok(canon) = caiclust_probe::canonicalize(root) {
            if let Ok(rest) = lib.path.strip_prefix(&canon) {
                return rest.display().to_string();
            }
        }
    }
    lib.path.display().to_string()
}

/// Render the summary. `verbose` adds the evidence of every conclusion and
/// how each library is reached.
pub fn render(facts: &Facts, verbose: bool) -> String {
    let mut out = String::new();
    let h = &facts.host;
    match &facts.subject {
        Subject::Python { executable } => {
            if let Some(py) = &facts.python {
                let _ = writeln!(
                    out,
                    "{} {} {} at {} (found via {})",
                    "Python".bold(),
                    py.version,
                    py.implementation,
                    executable.display(),
                    py.found_via
                );
                let _ = writeln!(
                    out,
                    "  prefix {}{}; default start method: {}",
                    py.prefix.display(),
                    if py.is_virtualenv {
                        " (virtualenv)"
                    } else if py.is_conda {
                        " (conda)"
                    } else {
                        ""
                    },
                    py.default_start_method.as_deref().unwrap_or("unknown")
                );
            }
        }
        Subject::Process { pid, executable } => {
            let _ = writeln!(
                out,
                "{} {} ({})",
                "Process".bold(),
                pid,
                executable.display()
            );
            if let Some(p) = &facts.process {
                if let Some(py) = &p.python {
                    let _ = writeln!(out, "  {} ({})", py.value, evidence_line(py));
                }
                if let Some(t) = p.threads {
                    let _ = writeln!(out, "  {t} threads running");
                }
                if let Some(rt) = &p.python_runtime {
                    let _ = writeln!(
                        out,
                        "  imported: {}; default start method: {}; active Python threads: {}",
                        rt.imported.join(", "),
                        rt.default_start_method.as_deref().unwrap_or("unknown"),
                        rt.active_threads
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "?".into())
                    );
                    for (m, e) in &rt.import_errors {
                        let _ = writeln!(out, "  {} {m}: {e}", "import failed:".red());
                    }
                    if let Some(n) = rt.cv2_num_threads {
                        let _ = writeln!(out, "  cv2.getNumThreads() = {n}");
                    }
                    if let Some(l) = &rt.numba_threading_layer {
                        let _ = writeln!(out, "  numba.threading_layer() = {l}");
                    }
                }
            }
        }
        Subject::Tree { root } => {
            let _ = writeln!(
                out,
                "{} {} (binaries for {})",
                "Tree".bold(),
                root.display(),
                facts.target_os
            );
        }
    }
    let usable = h
        .usable_cpus
        .as_ref()
        .map(|c| format!("{} usable ({})", c.value, evidence_line(c)))
        .unwrap_or_else(|| "usable unknown".into());
    let _ = writeln!(
        out,
        "{} {} {} {}, {} logical CPUs{}, {}",
        "Host".bold(),
        h.os_name.as_deref().unwrap_or("?"),
        h.os_version.as_deref().unwrap_or(""),
        h.arch,
        h.logical_cpus,
        h.physical_cpus
            .map(|p| format!(" ({p} physical)"))
            .unwrap_or_default(),
        usable
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} ({})",
        "Runtime libraries".bold(),
        facts.libraries.len()
    );
    for lib in &facts.libraries {
        let mut head = library_name(lib);
        if let Some(v) = &lib.version {
            head.push(' ');
            head.push_str(&v.value);
        }
        let mut tags = Vec::new();
        if let Some(t) = &lib.threading_layer {
            tags.push(format!("threading: {}", t.value));
        }
        if let Some(rt) = &lib.openmp_runtime {
            tags.push(format!("on {:#}", rt.value));
        }
        if let Some(fw) = &lib.parallel_framework {
            tags.push(format!("parallel framework: {}", fw.value));
        }
        if let Some(w) = &lib.int_width {
            tags.push(w.value.to_string());
        }
        if let Some(f) = &lib.forwards_to {
            tags.push(format!("interface to {}", f.display()));
        }
        if lib.format.is_none() {
            tags.push("system library, not present".into());
        }
        if let Some(rt) = &lib.runtime {
            if let Some(n) = rt.num_threads {
                tags.push(format!("{n} threads"));
            }
            if let Some(core) = &rt.corename {
                tags.push(format!("kernel {core}"));
            }
            if let Some(err) = &rt.error {
                tags.push(format!("runtime query failed: {err}"));
            }
            for d in &rt.disagreements {
                tags.push(format!("DISAGREEMENT {d}"));
            }
        }
        let _ = writeln!(out, "  {}  {}", head.green().bold(), tags.join(", "));
        let pulled = if lib.pulled_in_by.is_empty() {
            String::new()
        } else {
            format!("  [{}]", lib.pulled_in_by.join(", "))
        };
        let _ = writeln!(out, "    {}{}", short_path(facts, lib), pulled.dimmed());
        if !lib.load_roots.is_empty() {
            let roots: Vec<String> = lib.load_roots.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "    loaded from: {}", roots.join("; ").dimmed());
        }
        if verbose {
            let _ = writeln!(out, "    vendor: {}", evidence_line(&lib.vendor).dimmed());
            if let Some(t) = &lib.threading_layer {
                let _ = writeln!(out, "    threading: {}", evidence_line(t).dimmed());
            }
            if let Some(v) = &lib.version {
                let _ = writeln!(out, "    version: {}", evidence_line(v).dimmed());
            }
            for step in &lib.reached_via {
                let _ = writeln!(out, "    via {}", step.dimmed());
            }
        }
    }
    if !facts.duplicates.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            "Runtimes present in several copies (one thread pool per name the loader knows them by)"
                .yellow()
                .bold()
        );
        for d in &facts.duplicates {
            let _ = writeln!(out, "  {} ×{}", d.vendor, d.paths.len());
            let pools = d.pool_count();
            let _ = writeln!(
                out,
                "    {pools} thread pool{} in one process",
                if pools == 1 { "" } else { "s" }
            );
            if d.groups.is_empty() {
                for p in &d.paths {
                    let _ = writeln!(out, "    {}", p.display());
                }
            }
            for g in &d.groups {
                let _ = writeln!(out, "    {g}");
                for p in &g.paths {
                    let _ = writeln!(out, "      {}", p.display());
                }
            }
        }
    }
    if !facts.packages.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", "Packages".bold());
        for p in &facts.packages {
            let _ = writeln!(
                out,
                "  {} {}  {} binaries, {} runtime libraries",
                p.name,
                p.version.as_deref().unwrap_or(""),
                p.binaries,
                p.libraries.len()
            );
            for l in &p.threading_layers {
                let _ = writeln!(out, "    threading layer available: {}", l.value);
            }
        }
    }
    let thread_vars: Vec<String> = facts
        .env
        .iter()
        .filter(|(k, _)| k.contains("THREAD") || k.starts_with("KMP_") || k.starts_with("OMP_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(out);
    if thread_vars.is_empty() {
        let _ = writeln!(out, "{} none set", "Thread variables:".bold());
    } else {
        let _ = writeln!(
            out,
            "{} {}",
            "Thread variables:".bold(),
            thread_vars.join(" ")
        );
    }
    let s = &facts.scan;
    let _ = writeln!(
        out,
        "{} {} binaries read in {} ms{}; {} skipped; {} unresolved dependencies{}",
        "Scan:".bold(),
        s.binaries_read,
        s.elapsed_ms,
        if s.from_cache { " (cached)" } else { "" },
        s.skipped.len(),
        s.unresolved.len(),
        if verbose {
            ""
        } else {
            " (--verbose or --json for details)"
        }
    );
    if verbose {
        for sk in &s.skipped {
            let _ = writeln!(out, "  skipped {}: {}", sk.path.display(), sk.reason);
        }
        let mut by_name: std::collections::BTreeMap<&str, Vec<&std::path::Path>> =
            Default::default();
        for u in &s.unresolved {
            by_name
                .entry(u.name.as_str())
                .or_default()
                .push(&u.needed_by);
        }
        for (name, needers) in by_name {
            let first = needers
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let more = if needers.len() > 1 {
                format!(" and {} more", needers.len() - 1)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  unresolved {name} (needed by {first}{more})");
        }
    }
    out
}
