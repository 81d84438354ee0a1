//! The syscalls no safe crate wraps for us. Every unsafe block in the boot
//! stage lives here, each with its SAFETY argument; callers get safe functions
//! returning `std::io::Result`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target, fstype, data) = (
        cstr(source.as_bytes())?,
        cstr(target.as_os_str().as_bytes())?,
        cstr(fstype.as_bytes())?,
        cstr(data.as_bytes())?,
    );
    // SAFETY: all four pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    check(rc.into())
}

/// `umount2(2)`.
pub fn umount(target: &Path) -> io::Result<()> {
    let target = cstr(target.as_os_str().as_bytes())?;
    // SAFETY: `target` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), 0) }.into())
}

/// `finit_module(2)`: loads a kernel module from an open file.
pub fn finit_module(module: &File) -> io::Result<()> {
    let params = cstr(b"")?;
    // SAFETY: the fd is open for the duration of the call, params is a valid empty string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            module.as_raw_fd(),
            params.as_ptr(),
            0,
        )
    };
    check(rc)
}

/// `kexec_file_load(2)`: stages `kernel` (and `initrd`, if any) with `cmdline`.
pub fn kexec_file_load(kernel: &File, initrd: Option<&File>, cmdline: &str) -> io::Result<()> {
    const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;
    let cmdline = cstr(cmdline.as_bytes())?;
    let (initrd_fd, flags) = match initrd {
        Some(f) => (f.as_raw_fd(), 0),
        None => (-1, KEXEC_FILE_NO_INITRAMFS),
    };
    // The length passed includes the terminating NUL, as the syscall requires.
    let len = cmdline.as_bytes_with_nul().len() as libc::c_ulong;
    // SAFETY: the fds are open for the duration of the call; cmdline points to
    // `len` readable bytes ending in NUL.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_fd,
            len,
            cmdline.as_ptr(),
            flags,
        )
    };
    check(rc)
}

/// `reboot(2)` into the staged kexec kernel. Returns only on failure.
pub fn reboot_kexec() -> io::Error {
    // SAFETY: plain syscall without pointers; on success it does not return.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_KEXEC) };
    io::Error::last_os_error()
}

/// `reboot(2)`: restarts the machine. Returns only on failure.
pub fn reboot_restart() -> io::Error {
    // SAFETY: plain syscall without pointers; on success it does not return.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_RESTART) };
    io::Error::last_os_error()
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::sync() }
}

/// `BLKGETSIZE64`: the size of a block device in bytes.
pub fn block_device_size(dev: &File) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x80081272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to `size`.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    check(rc.into())?;
    Ok(size)
}

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `BLKPG_RESIZE_PARTITION`: tells the kernel partition `number` of `disk`
/// now spans `length` bytes from `start`. Unlike re-reading the whole table,
/// this works while other partitions of the disk are mounted.
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    const BLKPG: libc::c_ulong = 0x1269;
    const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads one blkpg_ioctl_arg whose data points to one
    // blkpg_partition of datalen bytes; both live on this stack frame for the call.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg as *mut BlkpgIoctlArg) };
    check(rc.into())
}

/// Waits up to `timeout` for input on stdin (the console); true if some arrived.
pub fn console_input_within(timeout: std::time::Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut fds, 1, ms) };
    rc > 0 && fds.revents & libc::POLLIN != 0
}
