//! Replays every input kept in `fuzz/corpus/<target>/` through its target on stable: what the fuzzer
//! explored (and any finding, once fixed and added to the corpus) is checked by the ordinary test run.

use std::path::Path;

#[test]
fn every_corpus_input_runs_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut total = 0;
    for target in roster_fuzz_targets::TARGETS {
        let dir = root.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        inputs.sort();
        for p in &inputs {
            let data = std::fs::read(p).expect("read a corpus input");
            assert!(roster_fuzz_targets::run(target, &data));
        }
        assert!(
            !inputs.is_empty() || target == "peer_frame",
            "no corpus for {target}"
        );
        total += inputs.len();
    }
    assert!(total > 0);
}
