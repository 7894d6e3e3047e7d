//! The log's promises: order, torn tails, snapshots, the lock, poisoning.

use serde_json::json;

use super::*;
use crate::db::Direction;

const WAIT: Duration = Duration::from_millis(50);

fn open(dir: &Path) -> StoreResult<(Journal, Vec<Record>)> {
    Journal::open(dir, &Options::default(), WAIT)
}

fn doc(id: &str, n: i64) -> Option<Arc<Document>> {
    match json!({ "_id": id, "n": n }) {
        serde_json::Value::Object(doc) => Some(Arc::new(doc)),
        _ => unreachable!(),
    }
}

fn put(collection: &str, id: &str, n: i64) -> Record {
    Record::Writes(vec![Write {
        collection: collection.to_owned(),
        id: id.to_owned(),
        doc: doc(id, n),
    }])
}

fn samples() -> Vec<Record> {
    let mut index = IndexSpec::new("wallets", "by_owner", &["owner", "currency"]).unique();
    index.fields[1].1 = Direction::Desc;
    vec![
        Record::CreateIndex(index),
        Record::Writes(vec![
            Write {
                collection: "wallets".to_owned(),
                id: "w1".to_owned(),
                doc: doc("w1", 10),
            },
            Write {
                collection: "ledger".to_owned(),
                id: "e1".to_owned(),
                doc: None,
            },
        ]),
        Record::DropIndex {
            collection: "wallets".to_owned(),
            name: "old".to_owned(),
        },
        put("wallets", "w2", 20),
    ]
}

fn append_all(journal: &mut Journal, records: &[Record]) {
    for record in records {
        journal.append(record).unwrap();
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Emits `records` as a snapshot's state.
fn emitting(records: Vec<Record>) -> WriteState {
    Box::new(move |sink| records.iter().try_for_each(sink))
}

#[test]
fn records_come_back_in_order_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, replayed) = open(dir.path()).unwrap();
    assert!(replayed.is_empty());
    append_all(&mut journal, &samples());
    drop(journal);

    let (_journal, replayed) = open(dir.path()).unwrap();

    assert_eq!(replayed, samples());
    assert!(segment_path(dir.path(), 1).exists());
}

#[test]
fn garbage_after_the_last_frame_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples()[..3]);
    drop(journal);
    let segment = segment_path(dir.path(), 1);
    let good = file_len(&segment);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(b"\x05\x00\x00\x00garbage").unwrap();
    drop(file);

    let (mut journal, replayed) = open(dir.path()).unwrap();
    assert_eq!(replayed, samples()[..3]);
    assert_eq!(file_len(&segment), good);
    journal.append(&samples()[3]).unwrap();
    drop(journal);

    let (_journal, replayed) = open(dir.path()).unwrap();
    assert_eq!(replayed, samples());
}

#[test]
fn a_frame_cut_short_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples()[..3]);
    drop(journal);
    let segment = segment_path(dir.path(), 1);
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(file_len(&segment) - 3).unwrap();
    drop(file);

    let (mut journal, replayed) = open(dir.path()).unwrap();
    assert_eq!(replayed, samples()[..2]);
    journal.append(&put("wallets", "w9", 9)).unwrap();
    drop(journal);

    let (_journal, replayed) = open(dir.path()).unwrap();
    assert_eq!(replayed[..2], samples()[..2]);
    assert_eq!(replayed[2..], [put("wallets", "w9", 9)]);
}

/// Flips a payload byte of the last frame of `path`.
fn corrupt_last_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_bad_checksum_in_the_last_frame_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples());
    drop(journal);
    corrupt_last_byte(&segment_path(dir.path(), 1));

    let (_journal, replayed) = open(dir.path()).unwrap();

    assert_eq!(replayed, samples()[..3]);
}

#[test]
fn a_bad_checksum_in_an_earlier_segment_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples());
    drop(journal);
    corrupt_last_byte(&segment_path(dir.path(), 1));
    File::create(segment_path(dir.path(), 2)).unwrap();

    let err = open(dir.path()).err().unwrap();

    assert!(
        matches!(&err, StoreError::Unavailable(msg) if msg.contains("corrupt")),
        "{err}"
    );
}

#[test]
fn a_missing_segment_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples());
    drop(journal);
    fs::rename(segment_path(dir.path(), 1), segment_path(dir.path(), 2)).unwrap();

    let err = open(dir.path()).err().unwrap();

    assert!(
        matches!(&err, StoreError::Unavailable(msg) if msg.contains("missing")),
        "{err}"
    );
}

#[test]
fn a_snapshot_replaces_the_segments_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        compact_after: 100,
        ..Options::default()
    };
    let (mut journal, _) = Journal::open(dir.path(), &options, WAIT).unwrap();
    append_all(&mut journal, &samples());
    assert!(journal.snapshot_due());
    let state = vec![samples()[0].clone(), put("wallets", "w1", 10)];

    journal.start_snapshot(emitting(state.clone())).unwrap();
    assert!(!journal.snapshot_due());
    journal.wait_for_snapshot();
    journal.append(&put("wallets", "w3", 30)).unwrap();
    let (snapshot, log) = journal.sizes();
    drop(journal);

    assert!(!segment_path(dir.path(), 1).exists());
    assert_eq!(snapshot, file_len(&dir.path().join(SNAPSHOT)));
    assert_eq!(log, file_len(&segment_path(dir.path(), 2)));
    let (_journal, replayed) = open(dir.path()).unwrap();
    assert_eq!(replayed[..2], state);
    assert_eq!(replayed[2..], [put("wallets", "w3", 30)]);
}

#[test]
fn the_next_snapshot_waits_for_the_log_to_outgrow_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        compact_after: 100,
        ..Options::default()
    };
    let (mut journal, _) = Journal::open(dir.path(), &options, WAIT).unwrap();
    let big: Vec<Record> = (0..50)
        .map(|n| put("wallets", &format!("w{n}"), n))
        .collect();
    journal.start_snapshot(emitting(big)).unwrap();
    journal.wait_for_snapshot();
    let (snapshot, _) = journal.sizes();
    assert!(snapshot > 1_000, "the snapshot is {snapshot} bytes");

    // Past `compact_after`, but not yet past the snapshot.
    append_all(&mut journal, &samples());
    assert!(!journal.snapshot_due());
    while journal.sizes().1 < snapshot {
        journal.append(&put("wallets", "w0", 1)).unwrap();
    }
    assert!(journal.snapshot_due());
}

#[test]
fn a_segment_left_behind_by_a_crash_is_not_replayed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples());
    let covered = fs::read(segment_path(dir.path(), 1)).unwrap();
    journal.start_snapshot(emitting(samples())).unwrap();
    journal.wait_for_snapshot();
    journal.append(&put("wallets", "w3", 30)).unwrap();
    drop(journal);
    // As if the process died between the rename and the deletion.
    fs::write(segment_path(dir.path(), 1), covered).unwrap();

    let (_journal, replayed) = open(dir.path()).unwrap();

    assert_eq!(replayed[..4], samples());
    assert_eq!(replayed[4..], [put("wallets", "w3", 30)]);
    assert!(!segment_path(dir.path(), 1).exists());
}

#[test]
fn a_failed_snapshot_leaves_the_log_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    append_all(&mut journal, &samples());

    journal
        .start_snapshot(Box::new(|sink| {
            sink(&samples()[0])?;
            Err(io::Error::other("state went away"))
        }))
        .unwrap();
    journal.wait_for_snapshot();
    journal.append(&put("wallets", "w3", 30)).unwrap();
    drop(journal);

    assert!(!dir.path().join(SNAPSHOT).exists());
    assert!(!dir.path().join(SNAPSHOT_TMP).exists());
    let (_journal, replayed) = open(dir.path()).unwrap();
    assert_eq!(replayed[..4], samples());
    assert_eq!(replayed[4..], [put("wallets", "w3", 30)]);
}

#[test]
fn a_stray_temporary_snapshot_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(SNAPSHOT_TMP), b"half a snapshot").unwrap();

    let (_journal, replayed) = open(dir.path()).unwrap();

    assert!(replayed.is_empty());
    assert!(!dir.path().join(SNAPSHOT_TMP).exists());
}

#[test]
fn a_corrupt_snapshot_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    journal.start_snapshot(emitting(samples())).unwrap();
    journal.wait_for_snapshot();
    drop(journal);
    corrupt_last_byte(&dir.path().join(SNAPSHOT));

    let err = open(dir.path()).err().unwrap();

    assert!(
        matches!(&err, StoreError::Unavailable(msg) if msg.contains("corrupt")),
        "{err}"
    );
}

#[test]
fn a_second_open_waits_for_the_lock_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path()).unwrap();

    let started = Instant::now();
    let err = open(dir.path()).err().unwrap();

    assert!(started.elapsed() >= WAIT);
    assert!(
        matches!(&err, StoreError::Unavailable(msg) if msg.contains("in use")),
        "{err}"
    );
    drop(first);
    assert!(open(dir.path()).is_ok());
}

#[test]
fn a_failed_append_poisons_the_journal_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path()).unwrap();
    assert!(!journal.poisoned());
    append_all(&mut journal, &samples()[..2]);

    journal.fail_next_append = true;
    assert!(journal.append(&samples()[2]).is_err());

    assert!(journal.poisoned());
    assert!(matches!(
        journal.append(&samples()[3]),
        Err(StoreError::Unavailable(_))
    ));
    assert!(journal.start_snapshot(emitting(Vec::new())).is_err());
    drop(journal);
    let (mut journal, replayed) = open(dir.path()).unwrap();
    assert!(!journal.poisoned());
    assert_eq!(replayed, samples()[..2]);
    journal.append(&samples()[2]).unwrap();
}

#[test]
fn appends_are_synced_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync_interval: Duration::from_millis(1),
        ..Options::default()
    };
    let (mut journal, _) = Journal::open(dir.path(), &options, WAIT).unwrap();

    journal.append(&samples()[0]).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while journal.shared.dirty.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!journal.shared.dirty.load(Ordering::Acquire));
    assert!(!journal.poisoned());
}
