//! `caiclust explain ID` and `caiclust rules`.

mod check_support;
use check_support::*;

#[test]
fn every_rule_is_explained_by_id_and_name() {
    for rule in caiclust_rules::all_rules() {
        let i = rule.info();
        for key in [
            i.id.to_string(),
            i.name.to_string(),
            i.id.to_ascii_lowercase(),
        ] {
            let o = run(CAICLUST, &["explain", &key]);
            assert_eq!(o.status.code(), Some(0), "{key}: {}", stderr(&o));
            let text = stdout(&o);
            assert!(
                text.starts_with(&format!("# {} {}\n", i.id, i.name)),
                "{text}"
            );
            assert!(text.contains(i.explanation.trim()), "{text}");
        }
    }
}

#[test]
fn unknown_rule_exits_2_with_close_names() {
    let o = run(CAICLUST, &["explain", "no-such-rule-xyz"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown rule 'no-such-rule-xyz'"),
        "{}",
        stderr(&o)
    );
    if let Some(first) = caiclust_rules::all_rules().first() {
        let name = first.info().name;
        let typo = &name[..name.len() - 1];
        let o = run(CAICLUST, &["explain", typo]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(name), "{}", stderr(&o));
    }
}

#[test]
fn rules_table_and_json() {
    let o = run(CAICLUST, &["rules"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.starts_with("ID"), "{text}");
    for rule in caiclust_rules::all_rules() {
        let i = rule.info();
        let line = text
            .lines()
            .find(|l| l.starts_with(i.id))
            .unwrap_or_else(|| panic!("{} missing", i.id));
        assert!(line.contains(i.name) && line.contains(i.summary), "{line}");
        assert!(line.contains(i.category.default_level().as_str()), "{line}");
    }
    let o = run(CAICLUST, &["rules", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = doc.as_array().unwrap();
    assert_eq!(rows.len(), caiclust_rules::all_rules().len());
    for (row, rule) in rows.iter().zip(caiclust_rules::all_rules()) {
        assert_eq!(row["id"], rule.info().id);
        assert_eq!(row["name"], rule.info().name);
        assert_eq!(
            row["default_level"],
            rule.info().category.default_level().as_str()
        );
    }
}
