//! The binary as a user runs it: exit codes, messages and the chat REPL fed
//! from a pipe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn colloquy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_colloquy"));
    c.current_dir(root())
        .env_remove("COLLOQUY_SNAPSHOT_KEY")
        .env_remove("RUST_LOG");
    c
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn chat(data: &Path, user: &str, now: &str, lines: &str) -> Output {
    let mut child = colloquy()
        .args([
            "chat",
            "--bot",
            "bots/shoe-store",
            "--user",
            user,
            "--now",
            now,
            "--data",
        ])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn colloquy chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn check_accepts_the_example_bots() {
    let out = colloquy()
        .args(["check", "bots/shoe-store", "bots/pizza-shop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ok: shoe-store 1.0.0") && stdout.contains("ok: pizza-shop 1.0.0"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        2,
        "one summary line per bot: {stdout}"
    );
}

#[test]
fn check_accepts_every_sample_config() {
    let configs: Vec<PathBuf> = std::fs::read_dir(root().join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(!configs.is_empty(), "config/ holds the sample configs");
    let out = colloquy().arg("check").args(&configs).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), configs.len());
}

#[test]
fn check_reports_file_line_and_field_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bot.yaml"),
        "bot: {name: b, version: '1', fallback: fallback}\nresponses: {fallback: sorry}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    std::fs::write(
        dir.path().join("flows/f.yaml"),
        "flows:\n  f:\n    steps:\n      - ask: colour\n        prompt: fallback\n",
    )
    .unwrap();
    let out = colloquy().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("flows/f.yaml:4: flows.f.steps[0].ask: unknown slot `colour`"),
        "{stderr}"
    );
    assert!(stderr.contains("1 error"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\nthreads = 4\n",
    )
    .unwrap();
    let out = colloquy()
        .arg("check")
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.toml:3: server.threads: unknown field `threads`"),
        "{}",
        text(&out.stderr)
    );

    let out = colloquy().args(["check", "no/such/bot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no/such/bot"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn chat_remembers_the_model_across_sessions_and_restarts() {
    let data = tempfile::tempdir().unwrap();
    let day1 = chat(
        data.path(),
        "alice",
        "2026-01-01T10:00:00Z",
        "你好\n星云跑鞋有40码吗\n",
    );
    assert!(day1.status.success(), "{}", text(&day1.stderr));
    let out = text(&day1.stdout);
    assert!(
        out.contains("> 星云跑鞋有40码吗\n星云跑鞋 40 码有货"),
        "{out}"
    );

    let day2 = chat(
        data.path(),
        "alice",
        "2026-01-02T10:00:00Z",
        "那款鞋还有 39 码吗?\n",
    );
    assert!(day2.status.success(), "{}", text(&day2.stderr));
    let out = text(&day2.stdout);
    assert!(out.contains("星云跑鞋 39 码有货"), "{out}");
    assert!(!out.contains("哪一款"), "{out}");

    // Another user shares nothing with alice.
    let other = chat(
        data.path(),
        "bob",
        "2026-01-02T10:00:00Z",
        "那款鞋还有 39 码吗?\n",
    );
    assert!(
        text(&other.stdout).contains("哪一款"),
        "{}",
        text(&other.stdout)
    );
}

/// A data directory from before the event log holds its conversations in
/// SQLite: it is refused with the setting that keeps serving it, never
/// opened as if it were empty.
#[test]
fn an_sqlite_data_directory_is_not_taken_for_an_empty_one() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("colloquy.db"), b"").unwrap();
    let out = chat(data.path(), "alice", "2026-01-01T10:00:00Z", "你好\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("holds an SQLite store") && err.contains("backend = \"sqlite\""),
        "{err}"
    );
    assert!(!data.path().join("events").exists(), "nothing was created");
}

#[test]
fn chat_rejects_a_bad_user_id_and_time() {
    let data = tempfile::tempdir().unwrap();
    let out = colloquy()
        .args(["chat", "--user", "a/b", "--data"])
        .arg(data.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--user: user id contains '/'"),
        "{}",
        text(&out.stderr)
    );
    let out = colloquy()
        .args(["chat", "--now", "yesterday"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("RFC 3339"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn nlu_eval_scores_a_tsv_data_set_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.tsv");
    let test = dir.path().join("test.tsv");
    let json = dir.path().join("report.json");
    let mut t = String::new();
    for (intent, words) in [
        ("weather", ["weather", "rain", "sunny", "forecast"]),
        ("music", ["play", "song", "music", "album"]),
    ] {
        for a in words {
            for b in words {
                t.push_str(&format!("{a} {b} please\t{intent}\n"));
            }
        }
    }
    std::fs::write(&train, &t).unwrap();
    std::fs::write(
        &test,
        "forecast rain\tweather\nplay the album\tmusic\nqwzx vbnm\toos\n",
    )
    .unwrap();
    let out = colloquy()
        .args(["nlu", "eval", "--train"])
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("in-scope accuracy"),
        "{}",
        text(&out.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["test_examples"], 3);
    assert_eq!(report["in_scope_accuracy"], 1.0);
    assert!(report["classifications_per_second"].as_f64().unwrap() > 0.0);

    std::fs::write(&test, "fine\tweather\nno tab here\n").unwrap();
    let out = colloquy()
        .args(["nlu", "eval", "--train"])
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("test.tsv:2"),
        "{}",
        text(&out.stderr)
    );
}
