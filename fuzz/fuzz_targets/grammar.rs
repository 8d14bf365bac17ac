//! Rule words (split on spaces and NUL) for every action: the grammar never panics,
//! what it accepts the policy file's validation accepts, and the rule's command as
//! `show added` prints it parses back to the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::grammar::parse_rule;
use rampart::model::Action;
use rampart::observe::rule_command;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let words: Vec<String> = text
        .split([' ', '\0'])
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    for action in [Action::Allow, Action::Deny, Action::Reject, Action::Limit] {
        let Ok(parsed) = parse_rule(action, &words) else {
            continue;
        };
        for rule in &parsed.rules {
            assert!(rule.validate().is_ok(), "{words:?}: {:?}", rule.validate());
            let shown = rule_command(rule);
            // Comments are shown quoted; the rest are plain words.
            if rule.comment.is_none() {
                let again: Vec<String> = shown.split(' ').skip(1).map(String::from).collect();
                let back = parse_rule(action, &again).expect("a shown rule parses");
                assert!(back.rules.contains(rule), "{words:?} -> {shown}");
            }
        }
    }
});
