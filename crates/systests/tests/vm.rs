//! VM tests: real images booted under QEMU (TCG, OVMF) through the harness.
//! Each test boots a throwaway overlay (or a copy, when it changes the image
//! before boot). Run by scripts/test.sh after it built the test images.

use std::path::Path;
use std::time::Duration;
use vmharness::Vm;

const SSH_WAIT: Duration = Duration::from_secs(600);
/// How long a boot-time unit gets to finish after SSH answers.
const UNIT_WAIT: Duration = Duration::from_secs(300);

use systests::{Scratch, blkid_uuid, cmdline_root_uuid};

/// Rewrites bootenv in a (copied) image's boot partition before it boots.
fn set_bootenv(image: &Path, slot: bootenv::Slot, upgrade_available: bool, bootcount: u32) {
    let mut disk = diskimage::Disk::open_rw(image).unwrap();
    let fs = diskimage::config::open_fat_partition(&mut disk, "resin-boot").unwrap();
    let mut block = bootenv::EnvBlock::parse(&fs.read_file("bootenv").unwrap()).unwrap();
    bootenv::BootEnv {
        resin_root_part: slot,
        upgrade_available,
        bootcount,
    }
    .apply_to(&mut block);
    fs.write_file("bootenv", &block.to_bytes().unwrap())
        .unwrap();
    fs.close().unwrap();
}

#[test]
fn default_image_boots_to_ssh_from_root_a() {
    let mut vm = Vm::builder("boots-to-ssh")
        .base_image(systests::test_image("dev"))
        .overlay_size(8 << 30)
        .start()
        .unwrap();
    let up = vm.wait_for_ssh(SSH_WAIT).unwrap();
    eprintln!("SSH answered {:.1} s after QEMU started", up.as_secs_f64());

    let os_release = vm.run_ok("cat /etc/os-release").unwrap();
    // The harness's commands share one SSH connection (the same client port) once one got
    // through.
    let connection = || vm.run_ok("echo $SSH_CONNECTION").unwrap();
    let (first, second) = (connection(), connection());
    assert_eq!(first, second, "two commands, two connections");
    for key in [
        "ID",
        "NAME",
        "VERSION",
        "VERSION_ID",
        "PRETTY_NAME",
        "MACHINE",
        "META_BALENA_VERSION",
        "SLUG",
        "VARIANT",
        "BALENA_BOARD_REV",
    ] {
        assert!(
            os_release
                .lines()
                .any(|l| l.starts_with(&format!("{key}="))),
            "{key} missing from /etc/os-release:\n{os_release}"
        );
    }
    assert!(
        os_release.lines().any(|l| l == "SLUG=\"qemux86-64\""),
        "SLUG not quoted:\n{os_release}"
    );
    assert!(
        os_release.lines().any(|l| l == "VARIANT=Development"),
        "{os_release}"
    );

    let fingerprint = vm.run("md5sum --quiet -c /balenaos.fingerprint").unwrap();
    assert!(
        fingerprint.success(),
        "fingerprint check failed: {}{}",
        fingerprint.stdout,
        fingerprint.stderr
    );

    let root_uuid = cmdline_root_uuid(&vm);
    assert_eq!(
        root_uuid,
        blkid_uuid(&vm, "/dev/disk/by-partlabel/resin-rootA"),
        "root= must name resin-rootA"
    );
    assert!(
        root_uuid.starts_with("ba1eadef-"),
        "first boot gives the root a balena UUID, got {root_uuid}"
    );
    for label in ["resin-rootB", "resin-state", "resin-data"] {
        let uuid = blkid_uuid(&vm, &format!("/dev/disk/by-partlabel/{label}"));
        assert!(uuid.starts_with("ba1eadef-"), "{label} UUID {uuid}");
    }
    assert!(blkid_uuid(&vm, "/dev/disk/by-partlabel/resin-boot").starts_with("BDEF-"));

    // Handed over by the root's initrd: sshd refuses keys under a world-writable /run.
    assert_eq!(
        vm.run_ok("stat -c %a /run").unwrap().trim(),
        "755",
        "/run mode"
    );
    let root_opts = vm.run_ok("findmnt -n -o OPTIONS /").unwrap();
    assert!(
        root_opts.split(',').any(|o| o == "ro"),
        "root must be read-only: {root_opts}"
    );
    let data_bytes: u64 = vm
        .run_ok("lsblk -bno SIZE /dev/disk/by-partlabel/resin-data")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        data_bytes > 4 << 30,
        "resin-data should have grown into the 8 GiB disk, is {data_bytes} bytes"
    );
    let header = vm
        .run_ok("dumpe2fs -h /dev/disk/by-partlabel/resin-data 2>/dev/null")
        .unwrap();
    let field = |name: &str| -> u64 {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs output:\n{header}"))
    };
    let fs_bytes = field("Block count:") * field("Block size:");
    assert!(
        fs_bytes + (8 << 20) >= data_bytes,
        "resin-data filesystem ({fs_bytes}) should fill its partition ({data_bytes})"
    );

    // Kernel modules: zstd-compressed, loaded from the root by udev (virtio_net is not in
    // the initramfs) and by modprobe; the device type's omitted trees are gone from the disk
    // and from the index.
    assert_eq!(
        vm.run_ok("modinfo -n virtio_net").unwrap().trim(),
        format!(
            "/lib/modules/{}/kernel/drivers/net/virtio_net.ko.zst",
            vm.run_ok("uname -r").unwrap().trim()
        )
    );
    vm.run_ok(
        "grep -qw ^virtio_net /proc/modules && modprobe -q dummy && grep -qw ^dummy /proc/modules",
    )
    .unwrap();
    assert_eq!(
        vm.run_ok(
            "cd /lib/modules/$(uname -r); find kernel -name '*.ko' | wc -l; \
             ls -d kernel/drivers/gpu kernel/sound 2>/dev/null | wc -l; \
             grep -c -e kernel/drivers/gpu/ -e kernel/sound/ modules.dep || true"
        )
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["0", "0", "0"],
        "plain modules, omitted trees, index entries of omitted trees"
    );

    assert!(
        vm.serial_contains("baleen-boot:"),
        "boot stage logged nothing on the console"
    );
    assert!(
        vm.serial_contains("kexec into slot A"),
        "boot stage did not kexec slot A"
    );
    vm.mark_passed();
}

#[test]
fn trixie_image_boots_to_ssh() {
    let mut vm = Vm::builder("trixie")
        .base_image(systests::test_image("trixie"))
        .overlay_size(8 << 30)
        .start()
        .unwrap();
    vm.wait_for_ssh(SSH_WAIT).unwrap();
    let os_release = vm.run_ok("cat /etc/os-release").unwrap();
    assert!(
        os_release
            .lines()
            .any(|l| l == "BALEEN_DEBIAN_RELEASE=trixie"),
        "{os_release}"
    );
    let debian = vm.run_ok("cat /etc/debian_version").unwrap();
    assert!(
        debian.starts_with("13"),
        "Debian 13 (trixie) expected, got {debian}"
    );
    assert_eq!(
        cmdline_root_uuid(&vm),
        blkid_uuid(&vm, "/dev/disk/by-partlabel/resin-rootA")
    );
    let fingerprint = vm.run("md5sum --quiet -c /balenaos.fingerprint").unwrap();
    assert!(
        fingerprint.success(),
        "fingerprint check failed: {}{}",
        fingerprint.stdout,
        fingerprint.stderr
    );
    vm.mark_passed();
}

#[test]
fn empty_slot_b_with_update_pending_falls_back_to_a() {
    let scratch = Scratch::new("fallback");
    let image = scratch.copy_of("dev");
    set_bootenv(&image, bootenv::Slot::B, true, 0);
    let mut vm = Vm::builder("fallback")
        .disk(&image, vmharness::DiskFormat::Raw)
        .persist(true)
        .start()
        .unwrap();
    vm.wait_for_ssh(SSH_WAIT).unwrap();

    assert!(
        vm.serial_contains("trying the update, boot attempt 1 of 3"),
        "boot stage should count the update attempt"
    );
    assert!(
        vm.serial_contains("slot B cannot be booted"),
        "boot stage should find slot B unbootable"
    );
    assert!(
        vm.serial_contains("falling back to the previous OS"),
        "boot stage should fall back"
    );
    assert!(
        vm.serial_contains("kexec into slot A"),
        "boot stage should boot slot A"
    );
    assert_eq!(
        cmdline_root_uuid(&vm),
        blkid_uuid(&vm, "/dev/disk/by-partlabel/resin-rootA")
    );

    // The attempts were used up and persisted (B, 1, MAX_ATTEMPTS + 1); the running OS
    // (A) then repairs the bootenv after the fallback (baleen-update-boot.service, altboot).
    // The unit is not ordered before sshd: wait until it has run, or failed (then say why).
    let unit = "baleen-update-boot.service";
    let journal = |vm: &Vm| {
        vm.run(&format!(
            "systemctl status --no-pager {unit}; journalctl -b --no-pager -u {unit}"
        ))
        .map(|out| out.stdout)
        .unwrap_or_default()
    };
    match vm.wait_until(
        &format!("systemctl show -p ActiveState --value {unit} | grep -qx -e active -e failed"),
        UNIT_WAIT,
    ) {
        Ok(waited) => println!(
            "{unit} done {:.1} s after SSH answered",
            waited.as_secs_f64()
        ),
        Err(e) => panic!("{e}\n{}", journal(&vm)),
    }
    let state = vm
        .run_ok(&format!("systemctl show -p ActiveState --value {unit}"))
        .unwrap();
    assert_eq!(state.trim(), "active", "{unit}: {}", journal(&vm));
    let env = vm.run_ok("cat /mnt/boot/bootenv").unwrap();
    let block = bootenv::EnvBlock::parse(env.as_bytes()).unwrap();
    let env = bootenv::BootEnv::from_block(&block).unwrap();
    assert_eq!(env.resin_root_part, bootenv::Slot::A);
    assert!(!env.upgrade_available);
    assert_eq!(env.bootcount, 0, "bootcount after the altboot repair");
    vm.run_ok("test -e /mnt/state/rollback-altboot-triggered")
        .unwrap();

    // A second boot counts again and still comes back on A.
    vm.reboot_wait(SSH_WAIT).unwrap();
    assert_eq!(
        cmdline_root_uuid(&vm),
        blkid_uuid(&vm, "/dev/disk/by-partlabel/resin-rootA")
    );
    vm.mark_passed();
}

/// `baleen run`, as the README's main command uses it: boots the image with
/// the SSH forward, ends when the guest powers off, leaves the image untouched.
#[test]
fn baleen_run_boots_the_image_and_ends_with_the_guest() {
    let image = systests::test_image("dev");
    let before = std::fs::metadata(&image).unwrap().modified().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut run = std::process::Command::new(systests::baleen_bin())
        .args(["run", "--ssh-port", &port.to_string()])
        .arg(&image)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ssh = vmharness::Ssh::new("127.0.0.1", port);
    let deadline = std::time::Instant::now() + SSH_WAIT;
    let os_release = loop {
        match ssh.run("cat /etc/os-release", Duration::from_secs(30)) {
            Ok(out) if out.success() => break out.stdout,
            _ if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_secs(2)),
            other => {
                let _ = run.kill();
                panic!(
                    "no SSH on 127.0.0.1:{port} from `baleen run` within {SSH_WAIT:?}: {other:?}"
                );
            }
        }
    };
    assert!(os_release.contains("SLUG=\"qemux86-64\""), "{os_release}");
    let _ = ssh.run("systemctl poweroff", Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = run.kill();
            panic!("`baleen run` did not end after the guest powered off");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "`baleen run` failed: {stderr}");
    let log_dir = std::env::temp_dir().join(format!("baleen-run-{}", run.id()));
    assert!(
        !log_dir.exists(),
        "the throwaway overlay {} was left behind",
        log_dir.display()
    );
    assert_eq!(
        std::fs::metadata(&image).unwrap().modified().unwrap(),
        before,
        "the image itself was written"
    );
}

/// A development image whose root cannot be booted says why on the console
/// and offers the boot stage's shell instead of hanging.
#[test]
fn unbootable_development_image_drops_to_a_shell() {
    let scratch = Scratch::new("no-kernel");
    let image = scratch.copy_of("dev");
    let parts = diskimage::read_partition_table(&image).unwrap();
    let root_a = diskimage::find_partition(&parts, "resin-rootA", &image)
        .unwrap()
        .clone();
    let target = format!("{}?offset={}", image.display(), root_a.offset_bytes);
    let removed = systests::run(
        std::process::Command::new("debugfs")
            .args(["-w", "-R", "rm /boot/vmlinuz"])
            .arg(&target),
    );
    assert!(removed.success(), "debugfs: {removed}");

    let mut vm = Vm::builder("no-kernel")
        .disk(&image, vmharness::DiskFormat::Raw)
        .persist(true)
        .start()
        .unwrap();
    vm.wait_for_serial("baleen-boot: [", SSH_WAIT).unwrap();
    // Wait for the whole message (a partial serial line also matches): it
    // names the slot and why there is nothing to fall back to.
    vm.wait_for_serial(
        "FAILED: no bootable root: slot A cannot be booted and no update is pending",
        Duration::from_secs(300),
    )
    .unwrap();
    assert!(
        vm.serial_contains("/boot/vmlinuz not found in the root"),
        "the cause is logged"
    );
    // It offers a shell on the console, and reboots when nobody takes it (an unattended
    // device must come back: an update on trial only falls back after its boot attempts).
    let offered = vm.serial_mark();
    vm.wait_for_serial(
        "development image: press Enter within 30 s for a shell",
        Duration::from_secs(60),
    )
    .unwrap();
    vm.wait_for_serial_after(offered, "started, baleen", Duration::from_secs(300))
        .unwrap();
    vm.power_cut().unwrap();
    vm.mark_passed();
}
