//! Replays every input committed under `fuzz/corpus/<target>/` through the same entry point the
//! coverage-guided targets use (`pulsar_autoscaler::fuzzing`), so an input that once crashed a
//! parser or broke one of its properties stays fixed in the ordinary `cargo test`.

use std::path::Path;

use pulsar_autoscaler::fuzzing::{self, TARGETS};

fn corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    for target in TARGETS {
        assert!(
            !corpus(target).is_empty(),
            "fuzz/corpus/{target} holds no input"
        );
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            text.contains(&format!("run(\"{target}\"")),
            "{}",
            source.display()
        );
    }
    assert!(!fuzzing::run("no-such-target", b""));
}

#[test]
fn every_corpus_input_replays_cleanly() {
    let mut replayed = 0;
    for target in TARGETS {
        for file in corpus(target) {
            let data = std::fs::read(&file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| fuzzing::run(target, &data));
            assert!(
                matches!(outcome, Ok(true)),
                "{target}: {} fails; reproduce with `cargo fuzz run {target} {}`",
                file.display(),
                file.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}
