//! Policy file bytes: the loader never panics; a policy it accepts compiles, renders,
//! and written out as rampart writes it reads back as the same policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::compile::compile;
use rampart::render::plan_text;
use rampart::store::{parse_policy, Serialized};

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = parse_policy(data) else {
        return;
    };
    let plan = compile(&policy);
    let _ = plan_text(&plan);
    let written = Serialized::of(&policy);
    let back = parse_policy(written.toml.as_bytes()).expect("rampart reads what it writes");
    assert_eq!(back, policy);
});
