//! How facts read in messages: `Display` for the enums of [`super`]
//! (vendors, threading layers, discovery sources, evidence sources, ...),
//! the one spelling every user-facing text uses (never a Debug name).

use std::fmt;

use super::*;

/// The family's name as people write it: `Linux`, `macOS`, `Windows`,
/// `other OS`. The command line spells them [`OsFamily::as_str`].
impl fmt::Display for OsFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Linux => "Linux",
            Self::Macos => "macOS",
            Self::Windows => "Windows",
            Self::Other => "other OS",
        })
    }
}

/// Where the evidence came from, in words: `static`, `file name`,
/// `runtime`, `environment`, `system`, `source code`.
impl fmt::Display for EvidenceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Static => "static",
            Self::FileName => "file name",
            Self::Runtime => "runtime",
            Self::Environment => "environment",
            Self::System => "system",
            Self::SourceCode => "source code",
        })
    }
}

/// `low`, `medium` or `high`.
impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        })
    }
}

/// What led to the interpreter, as a user would name it: `--python`,
/// `VIRTUAL_ENV`, `CONDA_PREFIX` or `PATH` (reads after "found via").
impl fmt::Display for PythonSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Explicit => "--python",
            Self::VirtualEnv => "VIRTUAL_ENV",
            Self::CondaPrefix => "CONDA_PREFIX",
            Self::SearchPath => "PATH",
        })
    }
}

/// The interface's usual name: `BLAS`, `LAPACK`, `OpenMP`, `TBB`, `OpenCV`,
/// `GPU`.
impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Blas => "BLAS",
            Self::Lapack => "LAPACK",
            Self::Openmp => "OpenMP",
            Self::Tbb => "TBB",
            Self::Opencv => "OpenCV",
            Self::Gpu => "GPU",
        })
    }
}

/// The product's name as its makers write it: `OpenBLAS`, `Intel MKL`,
/// `GNU OpenMP`, ... The alternate form (`{:#}`) adds the library an OpenMP
/// runtime is known by: `GNU OpenMP (libgomp)`, `LLVM OpenMP (libomp)`,
/// `Intel OpenMP (libiomp5)`, `MSVC OpenMP (vcomp)`; for the other vendors
/// it is the same as the plain form.
impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Openblas => "OpenBLAS",
            Self::Mkl => "Intel MKL",
            Self::Blis => "BLIS",
            Self::Flexiblas => "FlexiBLAS",
            Self::Accelerate => "Apple Accelerate",
            Self::Atlas => "ATLAS",
            Self::Reference => "reference BLAS",
            Self::GnuOpenmp => "GNU OpenMP",
            Self::LlvmOpenmp => "LLVM OpenMP",
            Self::IntelOpenmp => "Intel OpenMP",
            Self::MsvcOpenmp => "MSVC OpenMP",
            Self::Tbb => "Intel TBB",
            Self::Opencv => "OpenCV",
            Self::Cuda => "CUDA runtime",
            Self::Unknown => "unknown vendor",
        };
        let library = match self {
            Self::GnuOpenmp => Some("libgomp"),
            Self::LlvmOpenmp => Some("libomp"),
            Self::IntelOpenmp => Some("libiomp5"),
            Self::MsvcOpenmp => Some("vcomp"),
            _ => None,
        };
        match library {
            Some(library) if f.alternate() => f.pad(&format!("{name} ({library})")),
            _ => f.pad(name),
        }
    }
}

/// The layer in words: `pthreads`, `OpenMP`, `TBB`, `single-threaded`,
/// `Intel OpenMP`, `GNU OpenMP`, `sequential`, `Grand Central Dispatch`,
/// `Concurrency Runtime`, `selected at run time`. Data (advisories,
/// threadpoolctl) uses [`ThreadingLayer::threadpoolctl_name`] instead.
impl fmt::Display for ThreadingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Pthreads => "pthreads",
            Self::Openmp => "OpenMP",
            Self::Tbb => "TBB",
            Self::Disabled => "single-threaded",
            Self::Intel => "Intel OpenMP",
            Self::Gnu => "GNU OpenMP",
            Self::Sequential => "sequential",
            Self::Gcd => "Grand Central Dispatch",
            Self::Concurrency => "Concurrency Runtime",
            Self::RuntimeSelected => "selected at run time",
        })
    }
}

/// How a process maps a load root: `extension module (import)`,
/// `package library (ctypes/dlopen)`, `runtime folder`, `mapped`.
impl fmt::Display for RootKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::ExtensionModule => "extension module (import)",
            Self::PackageLibrary => "package library (ctypes/dlopen)",
            Self::RuntimeFolder => "runtime folder",
            Self::Mapped => "mapped",
        })
    }
}

/// `extension module (import) sklearn/.../_loss.so and 68 more [sklearn]`:
/// the kind, the first root's file name, how many more, the package.
impl fmt::Display for LoadRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        write!(f, "{} {name}", self.kind)?;
        if self.count > 1 {
            write!(f, " and {} more", self.count - 1)?;
        }
        if let Some(p) = &self.package {
            write!(f, " [{p}]")?;
        }
        Ok(())
    }
}

/// `alternatives known as libgomp-e985bcbb.so.1.0.0: one is mapped, the
/// first loaded serves the others` for a group of several copies; the
/// name (or nothing) for a single copy.
impl fmt::Display for CopyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.as_deref().unwrap_or("one name");
        if self.paths.len() > 1 {
            write!(
                f,
                "alternatives known as {name}: one is mapped, the first loaded serves the others"
            )
        } else {
            write!(f, "{name}: a pool of its own")
        }
    }
}

/// `LP64` or `ILP64`.
impl fmt::Display for IntWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Lp64 => "LP64",
            Self::Ilp64 => "ILP64",
        })
    }
}

/// `ELF`, `Mach-O` or `PE`.
impl fmt::Display for BinaryFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Elf => "ELF",
            Self::MachO => "Mach-O",
            Self::Pe => "PE",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant of an enum, as a list; the exhaustive `match` makes a
    /// new variant a compile error here until it is listed.
    macro_rules! every {
        ($t:ident: $($v:ident),+ $(,)?) => {{
            fn _exhaustive(x: $t) {
                match x {
                    $($t::$v)|+ => {}
                }
            }
            vec![$($t::$v),+]
        }};
    }

    /// Debug names that are already how people write the name: Display may
    /// repeat them.
    const SPELLED_RIGHT: &[&str] = &["Linux", "Windows"];

    /// Display is set, unique within its enum, and never the Debug name
    /// (`GnuOpenmp`, `SearchPath`) unless that is already the right spelling.
    fn check<T: fmt::Display + fmt::Debug>(variants: &[T]) {
        let mut seen = std::collections::BTreeSet::new();
        for v in variants {
            let shown = v.to_string();
            let debug = format!("{v:?}");
            assert!(!shown.trim().is_empty(), "{debug} has no Display text");
            assert!(
                shown != debug || SPELLED_RIGHT.contains(&debug.as_str()),
                "{debug} is displayed as its Debug name"
            );
            assert!(
                seen.insert(shown.clone()),
                "{shown:?} is shown for two variants"
            );
        }
    }

    #[test]
    fn every_variant_displays_a_name_for_people_not_its_debug_name() {
        check(&every!(OsFamily: Linux, Macos, Windows, Other));
        check(&every!(
            EvidenceSource: Static,
            FileName,
            Runtime,
            Environment,
            System,
            SourceCode
        ));
        check(&every!(Confidence: Low, Medium, High));
        check(&every!(PythonSource: Explicit, VirtualEnv, CondaPrefix, SearchPath));
        check(&every!(Api: Blas, Lapack, Openmp, Tbb, Opencv, Gpu));
        let vendors = every!(
            Vendor: Openblas,
            Mkl,
            Blis,
            Flexiblas,
            Accelerate,
            Atlas,
            Reference,
            GnuOpenmp,
            LlvmOpenmp,
            IntelOpenmp,
            MsvcOpenmp,
            Tbb,
            Opencv,
            Cuda,
            Unknown
        );
        check(&vendors);
        check(&every!(
            ThreadingLayer: Pthreads,
            Openmp,
            Tbb,
            Disabled,
            Intel,
            Gnu,
            Sequential,
            Gcd,
            Concurrency,
            RuntimeSelected
        ));
        check(&every!(IntWidth: Lp64, Ilp64));
        check(&every!(
            RootKind: ExtensionModule,
            PackageLibrary,
            RuntimeFolder,
            Mapped
        ));
        check(&every!(BinaryFormat: Elf, MachO, Pe));

        // The alternate form names an OpenMP runtime's library; it is the
        // plain name for every other vendor.
        for v in vendors {
            let (plain, long) = (format!("{v}"), format!("{v:#}"));
            if v.is_openmp() {
                assert!(long.starts_with(&plain) && long.ends_with(')'), "{long}");
            } else {
                assert_eq!(long, plain);
            }
        }
    }

    #[test]
    fn product_names_are_spelled_as_their_makers_do() {
        assert_eq!(Vendor::Openblas.to_string(), "OpenBLAS");
        assert_eq!(Vendor::GnuOpenmp.to_string(), "GNU OpenMP");
        assert_eq!(format!("{:#}", Vendor::GnuOpenmp), "GNU OpenMP (libgomp)");
        assert_eq!(ThreadingLayer::Openmp.to_string(), "OpenMP");
        assert_eq!(PythonSource::SearchPath.to_string(), "PATH");
        assert_eq!(OsFamily::Macos.to_string(), "macOS");
        assert_eq!(EvidenceSource::FileName.to_string(), "file name");
        // Width and alignment apply, as for a str.
        assert_eq!(format!("[{:<10}]", Vendor::Blis), "[BLIS      ]");
    }

    #[test]
    fn serde_names_are_unchanged() {
        let json = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        assert_eq!(json(serde_json::json!(Vendor::GnuOpenmp)), "gnu_openmp");
        assert_eq!(json(serde_json::json!(Vendor::Openblas)), "openblas");
        assert_eq!(
            json(serde_json::json!(PythonSource::SearchPath)),
            "search_path"
        );
        assert_eq!(
            json(serde_json::json!(ThreadingLayer::RuntimeSelected)),
            "runtime_selected"
        );
        assert_eq!(
            json(serde_json::json!(EvidenceSource::FileName)),
            "file_name"
        );
        assert_eq!(json(serde_json::json!(OsFamily::Macos)), "macos");
    }
}
