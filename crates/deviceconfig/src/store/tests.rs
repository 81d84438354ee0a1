use super::*;
use std::collections::BTreeMap;

const OLD: &[u8] = b"{\"hostname\": \"old\"}\n";
const NEW: &[u8] = b"{\"hostname\": \"new-and-longer\", \"country\": \"US\"}\n";

/// What a read returned: content, or `None` for "does not exist".
fn outcome(read: Result<Vec<u8>>) -> Option<Vec<u8>> {
    match read {
        Ok(bytes) => Some(bytes),
        Err(Error::NotFound { .. }) => None,
        Err(e) => panic!("unexpected error: {e}: {:?}", std::error::Error::source(&e)),
    }
}

fn text(content: &Option<Vec<u8>>) -> String {
    match content {
        Some(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        None => "absent".into(),
    }
}

/// One file of [`SimDir`], as the page cache and as the disk hold it.
#[derive(Debug, Clone)]
struct Slot {
    /// The content at the last flush that covered it (`None`: absent).
    disk: Option<Vec<u8>>,
    /// What reads see now.
    cache: Option<Vec<u8>>,
    /// Whether the presence (or absence) of `cache` is on disk.
    name_durable: bool,
    /// Whether the bytes of `cache` are on disk.
    data_durable: bool,
}

impl Slot {
    fn settled(content: Option<Vec<u8>>) -> Slot {
        Slot {
            disk: content.clone(),
            cache: content,
            name_durable: true,
            data_durable: true,
        }
    }

    /// Everything a power cut can leave under this name, worst cases
    /// included: unflushed directory changes lost, unflushed data lost,
    /// torn, or stale.
    fn after_power_cut(&self) -> Vec<Option<Vec<u8>>> {
        if self.name_durable && (self.cache.is_none() || self.data_durable) {
            return vec![self.cache.clone()];
        }
        let mut out = Vec::new();
        if !self.name_durable {
            // The directory still shows the last durable state, its
            // clusters possibly freed and reused already.
            out.push(self.disk.clone());
            if let Some(old) = &self.disk {
                out.push(Some(vec![0; old.len()]));
            }
        }
        match &self.cache {
            None => out.push(None),
            Some(new) => {
                out.push(Some(new.clone()));
                if let (false, Some(old)) = (self.name_durable, &self.disk) {
                    // The old entry's length over the new clusters.
                    out.push(Some(resized(new, old.len())));
                }
                if !self.data_durable {
                    out.push(Some(new[..new.len() / 2].to_vec()));
                    out.push(Some(Vec::new()));
                    out.push(Some(vec![0; new.len()]));
                    if let Some(old) = &self.disk {
                        // The entry update lost, or the new length over
                        // the old clusters.
                        out.push(Some(old.clone()));
                        out.push(Some(resized(old, new.len())));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn resized(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(len, 0);
    out
}

/// A directory on a FAT filesystem without a journal: writes sit in the
/// page cache until flushed, and the process "crashes" (every operation
/// fails) once `crash_after` changes have been made.
#[derive(Debug, Clone)]
struct SimDir {
    files: BTreeMap<String, Slot>,
    ops: usize,
    crash_after: usize,
    trace: Vec<String>,
}

impl SimDir {
    fn new(files: &[(&str, &[u8])]) -> Self {
        SimDir {
            files: files
                .iter()
                .map(|(name, bytes)| (name.to_string(), Slot::settled(Some(bytes.to_vec()))))
                .collect(),
            ops: 0,
            crash_after: usize::MAX,
            trace: Vec::new(),
        }
    }

    /// A new process on the same page cache, dying after `crash_after` changes.
    fn restarted(&self, crash_after: usize) -> Self {
        SimDir {
            ops: 0,
            crash_after,
            trace: Vec::new(),
            ..self.clone()
        }
    }

    /// Every state of the disk a power cut now can leave.
    fn power_cuts(&self) -> Vec<SimDir> {
        let mut states = vec![BTreeMap::new()];
        for (name, slot) in &self.files {
            let mut next = Vec::new();
            for state in &states {
                for content in slot.after_power_cut() {
                    let mut state = state.clone();
                    state.insert(name.clone(), Slot::settled(content));
                    next.push(state);
                }
            }
            states = next;
        }
        let empty = SimDir::new(&[]);
        states
            .into_iter()
            .map(|files| SimDir {
                files,
                ..empty.clone()
            })
            .collect()
    }

    fn names(&self) -> Vec<&str> {
        let present = self.files.iter().filter(|(_, slot)| slot.cache.is_some());
        present.map(|(name, _)| name.as_str()).collect()
    }

    fn describe(&self) -> String {
        let files = self.files.iter();
        let files = files.map(|(name, slot)| format!("{name}: {}", text(&slot.cache)));
        files.collect::<Vec<_>>().join(", ")
    }

    fn alive(&self) -> io::Result<()> {
        if self.ops >= self.crash_after {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }

    fn step(&mut self, op: String) -> io::Result<()> {
        self.alive()?;
        self.ops += 1;
        self.trace.push(op);
        Ok(())
    }

    fn slot(&mut self, name: &str) -> &mut Slot {
        let files = &mut self.files;
        files
            .entry(name.to_string())
            .or_insert_with(|| Slot::settled(None))
    }
}

impl Dir for SimDir {
    fn display(&self, name: &str) -> String {
        format!("sim/{name}")
    }

    fn exists(&mut self, name: &str) -> io::Result<bool> {
        self.alive()?;
        Ok(self.files.get(name).is_some_and(|s| s.cache.is_some()))
    }

    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.alive()?;
        Ok(self.files.get(name).and_then(|s| s.cache.clone()))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.step(format!("write {name}"))?;
        let slot = self.slot(name);
        // Truncating in place keeps a durable entry; creating makes a new one.
        slot.name_durable &= slot.cache.is_some();
        slot.cache = Some(bytes.to_vec());
        slot.data_durable = false;
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.step(format!("sync {name}"))?;
        let slot = self.slot(name);
        if slot.cache.is_none() {
            return Err(io::ErrorKind::NotFound.into());
        }
        // Data and the short entry; a new long name needs the directory flushed.
        slot.data_durable = true;
        if slot.name_durable {
            slot.disk = slot.cache.clone();
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.step(format!("remove {name}"))?;
        let slot = self.slot(name);
        if slot.cache.take().is_some() {
            slot.name_durable = false;
            slot.data_durable = true;
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.step("sync_dir".into())?;
        for slot in self.files.values_mut() {
            slot.name_durable = true;
            if slot.cache.is_none() || slot.data_durable {
                slot.disk = slot.cache.clone();
            }
        }
        Ok(())
    }
}

/// Where writes start: config.json present, absent, and present beside
/// the leftovers of an earlier write that never committed.
fn starts() -> Vec<(&'static str, SimDir, Option<&'static [u8]>)> {
    let other = b"{\"hostname\": \"other\"}\n";
    let line = checksum_line(CONFIG_JSON, other);
    vec![
        (
            "config.json present",
            SimDir::new(&[(CONFIG_JSON, OLD)]),
            Some(OLD),
        ),
        ("no config.json", SimDir::new(&[]), None),
        (
            "leftovers of a torn write",
            SimDir::new(&[
                (CONFIG_JSON, OLD),
                ("CONF587C.NEW", &other[..10]),
                ("CONF587C.SUM", &line),
            ]),
            Some(OLD),
        ),
    ]
}

/// Reads `dir` after a power cut: the result must be `old` or `new`,
/// recovery must leave only config.json, and a second read must agree.
fn check_recovery(mut dir: SimDir, old: Option<&[u8]>, context: &str) -> Option<Vec<u8>> {
    let before = dir.describe();
    let got = outcome(read_in(&mut dir, CONFIG_JSON));
    assert!(
        got.as_deref() == old || got.as_deref() == Some(NEW),
        "{context}, disk {before}: read returned {}",
        text(&got)
    );
    let expected_names: &[&str] = if got.is_some() { &[CONFIG_JSON] } else { &[] };
    assert_eq!(dir.names(), expected_names, "{context}, disk {before}");
    assert_eq!(outcome(read_in(&mut dir, CONFIG_JSON)), got, "{context}");
    got
}

#[test]
fn a_write_is_these_steps_and_an_unchanged_one_none() {
    let mut dir = SimDir::new(&[(CONFIG_JSON, OLD)]);
    assert!(write_in(&mut dir, CONFIG_JSON, NEW).unwrap());
    assert_eq!(
        dir.trace,
        [
            "write CONF587C.NEW",
            "sync CONF587C.NEW",
            "write CONF587C.SUM",
            "sync CONF587C.SUM",
            "sync_dir",
            "write config.json",
            "sync config.json",
            "sync_dir",
            "remove CONF587C.SUM",
            "remove CONF587C.NEW",
            "sync_dir",
        ]
    );
    assert_eq!(dir.names(), [CONFIG_JSON]);
    dir.trace.clear();
    assert!(!write_in(&mut dir, CONFIG_JSON, NEW).unwrap());
    assert!(dir.trace.is_empty(), "{:?}", dir.trace);
}

#[test]
fn side_files_have_upper_case_8_3_names_of_their_own() {
    assert_eq!(pending_name(CONFIG_JSON), "CONF587C.NEW");
    assert_eq!(checksum_name(CONFIG_JSON), "CONF587C.SUM");
    assert_eq!(pending_name("config.txt"), "CONFA9B5.NEW");
    assert_eq!(pending_name("ab"), "ABFB8E20.NEW");
    assert_eq!(pending_name("é.é"), "E223E00E.NEW");
}

#[test]
fn the_checksum_file_is_in_sha256sum_format() {
    assert_eq!(
        String::from_utf8(checksum_line(CONFIG_JSON, b"")).unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  CONF587C.NEW\n"
    );
}

/// The acceptance test: the write stopped after every step k, then every
/// state a power cut can leave, then a reading with recovery.
#[test]
fn a_power_cut_at_every_step_of_a_write_leaves_old_or_new() {
    for (start, dir, old) in starts() {
        let mut steps = 0;
        for k in 0.. {
            let mut writer = dir.restarted(k);
            let finished = write_in(&mut writer, CONFIG_JSON, NEW).is_ok();
            let cuts = writer.power_cuts();
            assert!(!cuts.is_empty());
            for cut in cuts {
                let context = format!("{start}, power cut after step {k}");
                let got = check_recovery(cut, old, &context);
                if finished {
                    assert_eq!(
                        got.as_deref(),
                        Some(NEW),
                        "{context}: a finished write is durable"
                    );
                }
            }
            if finished {
                steps = k;
                break;
            }
        }
        assert!(steps >= 11, "{start}: only {steps} steps");
    }
}

/// The writer's process dies after step k (its writes stay in the page
/// cache), a reader's recovery dies after its step j, then the power
/// fails. A read that returned is durable too.
#[test]
fn a_recovery_cut_short_at_every_step_still_leaves_old_or_new() {
    for (start, dir, old) in starts() {
        for k in 0.. {
            let mut writer = dir.restarted(k);
            let finished = write_in(&mut writer, CONFIG_JSON, NEW).is_ok();
            for j in 0.. {
                let mut reader = writer.restarted(j);
                let returned = match read_in(&mut reader, CONFIG_JSON) {
                    Ok(bytes) => Some(Some(bytes)),
                    Err(Error::NotFound { .. }) => Some(None),
                    Err(_) => None,
                };
                for cut in reader.power_cuts() {
                    let context = format!("{start}, writer died after {k}, reader after {j}");
                    let got = check_recovery(cut, old, &context);
                    if let Some(returned) = &returned {
                        assert_eq!(&got, returned, "{context}: what a read returned is durable");
                    }
                }
                if returned.is_some() {
                    break;
                }
            }
            if finished {
                break;
            }
        }
    }
}

fn boot(tmp: &tempfile::TempDir) -> PathBuf {
    let boot = tmp.path().join("boot");
    fs::create_dir_all(&boot).unwrap();
    boot
}

fn store(tmp: &tempfile::TempDir) -> Store {
    let lock = tmp.path().join("run/baleen/config.lock");
    Store::new(&boot(tmp), CONFIG_JSON, &lock)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn reading_a_missing_file_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(&tmp);
    let err = store.read().unwrap_err();
    assert!(err.is_not_found());
    let path = tmp.path().join("boot/config.json");
    assert_eq!(
        err.to_string(),
        format!("{} does not exist", path.display())
    );
    let err = store
        .update(|raw| Ok::<_, Error>(raw.to_vec()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} does not exist", path.display())
    );
}

#[test]
fn writes_replace_the_file_and_leave_nothing_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(&tmp);
    assert!(store.write(OLD).unwrap());
    assert!(store.write(NEW).unwrap());
    assert!(!store.write(NEW).unwrap(), "unchanged");
    assert_eq!(store.read().unwrap(), NEW);
    assert_eq!(store.path(), tmp.path().join("boot/config.json"));
    assert_eq!(listing(&tmp.path().join("boot")), [CONFIG_JSON]);
    assert_eq!(listing(&tmp.path().join("run/baleen")), ["config.lock"]);
}

#[test]
fn a_read_finishes_a_committed_write_and_discards_a_torn_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(&tmp);
    let boot = boot(&tmp);
    let put = |name: &str, bytes: &[u8]| fs::write(boot.join(name), bytes).unwrap();

    put(CONFIG_JSON, OLD);
    put("CONF587C.NEW", NEW);
    put("CONF587C.SUM", &checksum_line(CONFIG_JSON, NEW));
    assert_eq!(store.read().unwrap(), NEW);
    assert_eq!(fs::read(boot.join(CONFIG_JSON)).unwrap(), NEW);
    assert_eq!(listing(&boot), [CONFIG_JSON]);

    put("CONF587C.NEW", &OLD[..7]);
    put("CONF587C.SUM", &checksum_line(CONFIG_JSON, OLD));
    assert_eq!(store.read().unwrap(), NEW);
    assert_eq!(listing(&boot), [CONFIG_JSON]);

    put("CONF587C.NEW", OLD);
    assert_eq!(store.read().unwrap(), NEW, "no checksum, no commit");
    assert_eq!(listing(&boot), [CONFIG_JSON]);
}

#[test]
fn concurrent_updates_keep_each_others_keys() {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    const ROUNDS: u64 = 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = store(&tmp);
    store.write(b"{\"hostname\": \"kept\"}").unwrap();
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for key in ["a", "b"] {
            let (store, barrier) = (&store, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..ROUNDS {
                    // Count up: one lost update anywhere shows in the end.
                    let changed = store.update(|raw| -> Result<Vec<u8>, BoxError> {
                        let mut value: serde_json::Value = serde_json::from_slice(raw)?;
                        value[key] = (value[key].as_u64().unwrap_or(0) + 1).into();
                        Ok(serde_json::to_vec(&value)?)
                    });
                    assert!(changed.unwrap());
                }
            });
        }
    });
    let value: serde_json::Value = serde_json::from_slice(&store.read().unwrap()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"hostname": "kept", "a": ROUNDS, "b": ROUNDS})
    );
}

/// The same protocol on a real FAT filesystem, through `fatfs`.
mod fat {
    use super::super::*;
    use std::cell::RefCell;
    use std::io::{Cursor, Read, Seek, SeekFrom};
    use std::rc::Rc;

    use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions, ReadWriteSeek};

    /// FAT16 needs 4085 clusters; small ones make config.json span several.
    const IMAGE_BYTES: usize = 5 << 20;
    const CLUSTER_BYTES: u32 = 1024;

    fn content(hostname: &str, pad: usize) -> Vec<u8> {
        let pad = hostname.repeat(pad);
        format!("{{\"hostname\": \"{hostname}\", \"pad\": \"{pad}\"}}\n").into_bytes()
    }

    /// [`Dir`] over the root directory of a fatfs filesystem, dying after
    /// `crash_after` changes. fatfs writes through, so `sync` and
    /// `sync_dir` have nothing to flush.
    struct FatDir<S: ReadWriteSeek> {
        fs: FileSystem<S>,
        ops: usize,
        crash_after: usize,
    }

    impl<S: ReadWriteSeek> FatDir<S> {
        fn open(mut storage: S, crash_after: usize) -> Self {
            storage.seek(SeekFrom::Start(0)).unwrap();
            let fs = FileSystem::new(storage, FsOptions::new()).unwrap();
            FatDir {
                fs,
                ops: 0,
                crash_after,
            }
        }

        fn step(&mut self) -> io::Result<()> {
            if self.ops >= self.crash_after {
                return Err(io::Error::other("simulated crash"));
            }
            self.ops += 1;
            Ok(())
        }

        fn names(&self) -> Vec<String> {
            let entries = self.fs.root_dir().iter().map(|e| e.unwrap().file_name());
            entries.collect()
        }
    }

    impl<S: ReadWriteSeek> Dir for FatDir<S> {
        fn display(&self, name: &str) -> String {
            format!("{name} in the test image")
        }

        fn exists(&mut self, name: &str) -> io::Result<bool> {
            Ok(self.names().iter().any(|n| n == name))
        }

        fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
            let Some(mut file) = found(self.fs.root_dir().open_file(name))? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }

        fn write(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
            self.step()?;
            let mut file = self.fs.root_dir().create_file(name)?;
            file.truncate()?;
            file.write_all(bytes)?;
            file.flush()
        }

        fn sync(&mut self, _name: &str) -> io::Result<()> {
            self.step()
        }

        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.step()?;
            found(self.fs.root_dir().remove(name)).map(drop)
        }

        fn sync_dir(&mut self) -> io::Result<()> {
            self.step()
        }
    }

    /// A FAT16 image holding `config` as config.json.
    fn image_with(config: &[u8]) -> Vec<u8> {
        let mut image = Cursor::new(vec![0; IMAGE_BYTES]);
        let options = FormatVolumeOptions::new()
            .fat_type(FatType::Fat16)
            .bytes_per_cluster(CLUSTER_BYTES);
        fatfs::format_volume(&mut image, options).unwrap();
        let mut dir = FatDir::open(&mut image, usize::MAX);
        write_in(&mut dir, CONFIG_JSON, config).unwrap();
        drop(dir);
        image.into_inner()
    }

    /// Reads config.json from `image` with recovery; it must be `old`
    /// or `new`, and only config.json must be left.
    fn recovered(image: impl ReadWriteSeek, old: &[u8], new: &[u8], context: &str) -> Vec<u8> {
        let mut dir = FatDir::open(image, usize::MAX);
        let got = read_in(&mut dir, CONFIG_JSON)
            .unwrap_or_else(|e| panic!("{context}: {e}: {:?}", std::error::Error::source(&e)));
        assert!(
            got == old || got == new,
            "{context}: read {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(dir.names(), [CONFIG_JSON], "{context}");
        assert_eq!(read_in(&mut dir, CONFIG_JSON).unwrap(), got, "{context}");
        got
    }

    fn open_rw(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    /// The protocol on an image file, stopped after every step k and the
    /// filesystem dropped unfinished, then reopened and read.
    #[test]
    fn a_write_interrupted_after_every_step_on_a_fat_image_leaves_old_or_new() {
        let (old, new) = (content("old", 900), content("new", 1300));
        let base = image_with(&old);
        let file = tempfile::NamedTempFile::new().unwrap();
        for k in 0.. {
            fs::write(file.path(), &base).unwrap();
            let mut dir = FatDir::open(open_rw(file.path()), k);
            let finished = write_in(&mut dir, CONFIG_JSON, &new).is_ok();
            drop(dir);
            let context = format!("interrupted after step {k}");
            let got = recovered(open_rw(file.path()), &old, &new, &context);
            if finished {
                assert_eq!(got, new);
                assert_eq!(k, 11);
                break;
            }
        }
    }

    /// Where each device write went, and what it wrote, in order.
    type WriteLog = Rc<RefCell<Vec<(usize, Vec<u8>)>>>;

    /// Storage that logs every write fatfs makes.
    struct Recorder {
        image: Cursor<Vec<u8>>,
        writes: WriteLog,
    }

    impl Read for Recorder {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.image.read(buf)
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let at = self.image.position() as usize;
            let n = self.image.write(buf)?;
            self.writes.borrow_mut().push((at, buf[..n].to_vec()));
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for Recorder {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.image.seek(pos)
        }
    }

    /// A power cut between any two writes fatfs makes to the device, and
    /// in the middle of every write of several sectors.
    #[test]
    fn a_power_cut_at_every_device_write_on_a_fat_image_leaves_old_or_new() {
        let (old, new) = (content("old", 900), content("new", 1300));
        let base = image_with(&old);
        let writes = Rc::new(RefCell::new(Vec::new()));
        let recorder = Recorder {
            image: Cursor::new(base.clone()),
            writes: Rc::clone(&writes),
        };
        let mut dir = FatDir::open(recorder, usize::MAX);
        assert!(write_in(&mut dir, CONFIG_JSON, &new).unwrap());
        drop(dir);
        let writes = writes.take();
        assert!(writes.len() > 30, "{} writes", writes.len());

        let mut image = base;
        let mut torn_cuts = 0;
        for (m, (at, bytes)) in writes.iter().enumerate() {
            let context = format!("power cut before device write {m} of {}", writes.len());
            recovered(Cursor::new(image.clone()), &old, &new, &context);
            if bytes.len() > 512 {
                let mut torn = image.clone();
                let sectors = bytes.len().div_ceil(512) / 2 * 512;
                torn[*at..][..sectors].copy_from_slice(&bytes[..sectors]);
                recovered(Cursor::new(torn), &old, &new, &format!("{context}, torn"));
                torn_cuts += 1;
            }
            image[*at..][..bytes.len()].copy_from_slice(bytes);
        }
        assert!(torn_cuts > 0);
        let got = recovered(Cursor::new(image), &old, &new, "after the last write");
        assert_eq!(got, new);
    }
}
