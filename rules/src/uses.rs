//! Whether the code that will run uses a runtime library, as far as its
//! scripts show ([`crate::Plan::usage`]): the evidence that decides how
//! serious a fork hazard is (issue #14). A GNU OpenMP pool hangs forked
//! workers only when the parent ran it before the fork and a worker runs
//! it again; a runtime that is only installed, or that the scripts never
//! reach, hangs nothing.
//!
//! A library is reached from the Python packages whose modules load it
//! ([`caiclust_probe::Library::pulled_in_by`], and the packages that list
//! it among their [`caiclust_probe::PackageFacts::libraries`]), and from
//! every package that requires one of them (the distributions' declared
//! dependencies, [`caiclust_probe::PythonFacts::requires`]): a script that
//! imports CaImAn reaches scikit-learn's libgomp through it.

use std::collections::BTreeSet;

use caiclust_probe::{Facts, Library};

use crate::script::ScriptUsage;

/// How a library figures in the scripts' usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Use {
    /// No script is known: only the environment.
    Unknown,
    /// No package the scripts import reaches it.
    NotReached,
    /// Imported (so loaded), but not called both before the fork and in
    /// the workers.
    Loaded,
    /// Called in the parent before a fork and again in the workers.
    AcrossFork,
}

/// The packages (import names) that reach `lib`: those whose modules load
/// it, and every package that requires one of those, directly or not.
pub(crate) fn reaching_packages(facts: &Facts, lib: &Library) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = lib.pulled_in_by.iter().cloned().collect();
    set.extend(
        facts
            .packages
            .iter()
            .filter(|p| p.libraries.iter().any(|l| l == &lib.path))
            .map(|p| p.name.clone()),
    );
    with_dependents(facts, set)
}

/// `set` and every package that requires one of its packages, directly or
/// not (the distributions' declared dependencies).
pub(crate) fn with_dependents(facts: &Facts, mut set: BTreeSet<String>) -> BTreeSet<String> {
    let Some(requires) = facts.python.as_ref().map(|p| &p.requires) else {
        return set;
    };
    loop {
        let before = set.len();
        let more: Vec<String> = requires
            .iter()
            .filter(|(_, needs)| needs.iter().any(|n| set.contains(n)))
            .map(|(name, _)| name.clone())
            .collect();
        set.extend(more);
        if set.len() == before {
            return set;
        }
    }
}

/// How `lib` figures in `usage` (`None`: no script known).
pub(crate) fn use_of(facts: &Facts, lib: &Library, usage: Option<&ScriptUsage>) -> Use {
    let Some(usage) = usage else {
        return Use::Unknown;
    };
    let reaching = reaching_packages(facts, lib);
    if reaching.is_empty() {
        // Nothing records who loads it (a library found by a folder
        // scan): it may be loaded, never shown used.
        return Use::Loaded;
    }
    use_by(&reaching, usage)
}

/// How the packages `reaching` a runtime figure in `usage`.
pub(crate) fn use_by(reaching: &BTreeSet<String>, usage: &ScriptUsage) -> Use {
    let meets = |set: &BTreeSet<String>| set.iter().any(|p| reaching.contains(p));
    if meets(&usage.before_fork) && meets(&usage.in_workers) {
        Use::AcrossFork
    } else if !usage.unread_code.is_empty() {
        // The script's own modules or native libraries may run it on both
        // sides: unread.
        Use::Unknown
    } else if meets(&usage.imports) {
        Use::Loaded
    } else {
        Use::NotReached
    }
}

/// The packages of `usage` that reach `lib` in the parent before the fork
/// and in the workers, for the evidence of a finding.
pub(crate) fn used_by(
    facts: &Facts,
    lib: &Library,
    usage: &ScriptUsage,
) -> (Vec<String>, Vec<String>) {
    let reaching = reaching_packages(facts, lib);
    let pick = |set: &BTreeSet<String>| -> Vec<String> {
        set.iter()
            .filter(|p| reaching.contains(*p))
            .cloned()
            .collect()
    };
    (pick(&usage.before_fork), pick(&usage.in_workers))
}

/// Why use is unknown, for a finding's message: no script, or code the
/// scripts run that is not read.
pub(crate) fn why_unknown(usage: Option<&ScriptUsage>) -> String {
    match usage {
        Some(u) if !u.unread_code.is_empty() => format!(
            "the scripts run code that is not read here ({}), which may run it on both sides of the fork",
            u.unread_code.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => "nothing shows the code in use (check the scripts with `caiclust-check script.py`)"
            .to_string(),
    }
}
