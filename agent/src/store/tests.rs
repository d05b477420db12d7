use super::*;
use crate::disk::SimulatedFaults;
use mesh_protocol::{NodeId, TaskSpec};

fn record(n: u32) -> TaskRecord {
    let spec = TaskSpec::builder("img").build().unwrap();
    TaskRecord::new(
        TaskId::new(format!("t{n}")).unwrap(),
        spec,
        NodeId::new("n").unwrap(),
        n as u64,
        0,
    )
}

/// A record whose spec carries `marker` in its environment.
fn record_with(n: u32, marker: &str) -> TaskRecord {
    let spec = TaskSpec::builder("img")
        .env(format!("MARK={}", marker.repeat(400)))
        .build()
        .unwrap();
    TaskRecord::new(
        TaskId::new(format!("t{n}")).unwrap(),
        spec,
        NodeId::new("n").unwrap(),
        n as u64,
        0,
    )
}

fn ids(v: &[TaskRecord]) -> Vec<String> {
    v.iter().map(|r| r.id.to_string()).collect()
}

/// Writes raw bytes under `key`, as a record no agent can read.
fn put_raw(s: &Store, table: TableDefinition<&str, &[u8]>, key: &str, bytes: &[u8]) {
    let tx = s.db().unwrap().begin_write().unwrap();
    tx.open_table(table).unwrap().insert(key, bytes).unwrap();
    tx.commit().unwrap();
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        s.put(&record(1)).unwrap();
        s.put_all([&record(2), &record(3)]).unwrap();
        let mut r = record(1);
        r.kill(5).unwrap();
        s.put(&r).unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    let loaded = s.load().unwrap();
    assert!(loaded.set_aside.is_empty());
    assert_eq!(loaded.records.len(), 3);
    assert!(loaded.records[0].kill_requested);
}

#[test]
fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path()).unwrap();
    let b = Store::open(dir.path());
    assert!(b.is_err());
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        s.put(&record(1)).unwrap();
        let tx = s.db().unwrap().begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("format", FORMAT + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    let e = Store::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("format"), "{e}");
}

#[test]
fn forgotten_tasks_and_copies_stay_gone_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        s.put_all([&record(1), &record(2)]).unwrap();
        s.put_copy(&record(3)).unwrap();
        s.put_copy(&record(4)).unwrap();
        let id = |n: u32| TaskId::new(format!("t{n}")).unwrap();
        s.forget(&[id(1)], &[id(3), id(9)]).unwrap();
    }
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(ids(&loaded.records), ["t2"]);
    assert_eq!(ids(&loaded.copies), ["t4"]);
}

#[test]
fn in_memory_works() {
    let mut s = Store::in_memory().unwrap();
    s.put(&record(7)).unwrap();
    assert_eq!(s.load().unwrap().records.len(), 1);
}

/// A record (or copy) that does not decode is moved to `set-aside/`, the
/// others load, and it is still named at the next start, when it is no
/// longer in the store.
#[test]
fn a_record_that_does_not_decode_is_set_aside_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        s.put_all([&record(1), &record(3)]).unwrap();
        s.put_copy(&record(4)).unwrap();
        put_raw(&s, TASKS, "t2", b"\xff\xffnot a record");
        put_raw(&s, COPIES, "t5", b"\xff\xff");
        put_raw(&s, TASKS, "not/an id", b"\xff");
        let loaded = s.load().unwrap();
        assert_eq!(ids(&loaded.records), ["t1", "t3"]);
        assert_eq!(ids(&loaded.copies), ["t4"]);
        assert_eq!(loaded.set_aside, ["6e6f742f616e206964", "t2"]);
    }
    let aside = dir.path().join(SET_ASIDE);
    assert_eq!(
        std::fs::read(aside.join("task.t2.record")).unwrap(),
        b"\xff\xffnot a record"
    );
    assert!(aside.join("copy.t5.record").exists());
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(ids(&loaded.records), ["t1", "t3"]);
    assert_eq!(loaded.set_aside, ["6e6f742f616e206964", "t2"]);
}

/// A record that cannot be moved aside (the disk is full) stays in the
/// store and is still named, so its containers are left alone; in memory
/// too.
#[test]
fn a_record_that_cannot_be_moved_aside_is_still_named() {
    let dir = tempfile::tempdir().unwrap();
    let faults = SimulatedFaults::new("");
    let mut s = Store::open_on(dir.path(), Disk::with_faults(faults.clone())).unwrap();
    s.put(&record(1)).unwrap();
    put_raw(&s, TASKS, "t2", b"\xff\xff");
    faults.set_full(true);
    let loaded = s.load().unwrap();
    assert_eq!(ids(&loaded.records), ["t1"]);
    assert_eq!(loaded.set_aside, ["t2"]);
    assert!(!dir.path().join(SET_ASIDE).join("task.t2.record").exists());

    let mut m = Store::in_memory().unwrap();
    put_raw(&m, TASKS, "t3", b"\xff");
    assert_eq!(m.load().unwrap().set_aside, ["t3"]);
}

/// A set-aside path that is not a directory (a file) cannot be read: an
/// error, not a start that forgets what was set aside.
#[test]
fn a_set_aside_path_that_cannot_be_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SET_ASIDE), b"a file").unwrap();
    let e = Store::open(dir.path())
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains(SET_ASIDE) && e.contains("does not start"), "{e}");
}

/// A store whose records cannot be read (a bad sector under one of them)
/// is an error as a whole, naming the file and what to do: not an empty
/// store. (redb reads every page when it opens the file, so the error
/// comes at open.)
#[test]
fn a_store_that_cannot_be_read_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        for n in 0..20 {
            s.put(&record(n)).unwrap();
        }
        s.put(&record_with(99, "BADSECTOR")).unwrap();
    }
    let faults = SimulatedFaults::new("tasks.redb");
    faults.set_bad_sector(Some(b"BADSECTOR"));
    let e = Store::open_on(dir.path(), Disk::with_faults(faults))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tasks.redb") && e.contains("does not start") && e.contains("Input/output"),
        "{e}"
    );
}

/// A full disk: writes are errors, nothing half-written is read back, and
/// once there is room the store (reopened) takes writes again.
#[test]
fn a_failed_write_is_an_error_and_the_store_recovers_when_the_disk_does() {
    let dir = tempfile::tempdir().unwrap();
    let faults = SimulatedFaults::new("tasks.redb");
    let mut s = Store::open_on(dir.path(), Disk::with_faults(faults.clone())).unwrap();
    s.put(&record(1)).unwrap();
    faults.set_full(true);
    let e = s.put(&record(2)).unwrap_err().to_string();
    assert!(
        e.contains("tasks.redb") && e.contains("No space left"),
        "{e}"
    );
    assert!(s.put_copy(&record(3)).is_err());
    faults.set_full(false);
    s.put(&record(4)).unwrap();
    drop(s);
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(ids(&loaded.records), ["t1", "t4"]);
    assert!(loaded.copies.is_empty());
}

#[test]
fn a_format_7_store_is_migrated_and_its_tasks_belong_to_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = record(1);
    running.kill(5).unwrap();
    running.keeper = Some(NodeId::new("k").unwrap());
    let copy = record(2);
    {
        let s = Store::open(dir.path()).unwrap();
        put_raw(&s, TASKS, "t1", &v7::encode(&running));
        put_raw(&s, COPIES, "t2", &v7::encode(&copy));
        let tx = s.db().unwrap().begin_write().unwrap();
        tx.open_table(META).unwrap().insert("format", 7).unwrap();
        tx.commit().unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(s.format().unwrap(), FORMAT);
    let loaded = s.load().unwrap();
    assert!(loaded.set_aside.is_empty());
    assert_eq!(loaded.records, [running]);
    assert_eq!(loaded.records[0].owner.as_str(), "unknown");
    assert_eq!(loaded.records[0].spec.pull, Default::default());
    assert_eq!(loaded.copies, [copy]);
    drop(s);
    // Migrated once: a reopen reads the current format as it is.
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap().records.len(), 1);
}

#[test]
fn an_owner_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let alice = mesh_protocol::UserName::new("alice").unwrap();
    Store::open(dir.path())
        .unwrap()
        .put(&record(1).owned_by(alice.clone()))
        .unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap().records[0].owner, alice);
}
