//! Keeps a worker out of the server's data directory (every user's job history and kernel
//! sources) and token file, with Landlock (Linux 5.13 and later).
//!
//! Landlock rules only allow, so denying a path `D` means allowing everything else: from `/`
//! down to `D`, every entry beside the way to `D` gets all the handled rights, and the
//! directories on the way get none. What is beside the way when the worker starts stays
//! reachable (`/usr`, `/dev/nvidia*`, `/proc`, `/tmp`'s subdirectories…); an entry created
//! later directly in one of `D`'s ancestors is not.
//!
//! Raw system calls through `libc`: the kernel's interface is three calls and two structs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

// From <linux/landlock.h>.
const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;
const ACCESS_FS_EXECUTE: u64 = 1 << 0;
const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_FS_READ_FILE: u64 = 1 << 2;
/// Every right of ABI 1: execute, write, read, read dir, remove and make anything.
const ACCESS_FS_ABI1: u64 = (1 << 13) - 1;
/// ABI 2: linking or renaming a file into another directory.
const ACCESS_FS_REFER: u64 = 1 << 13;
/// ABI 3: truncating a file (unhandled, `truncate(2)` on the history would be allowed).
const ACCESS_FS_TRUNCATE: u64 = 1 << 14;
/// The rights that make sense on a file that is not a directory.
const FILE_RIGHTS: u64 =
    ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Why a worker runs without confinement.
#[derive(Debug)]
pub enum NotConfined {
    /// This kernel has no Landlock, or it is turned off or filtered out (a seccomp profile).
    Unavailable(io::Error),
    /// Landlock is there but the rules could not be made: the worker must not go on.
    Failed(anyhow::Error),
}

/// Denies this process (and every process and thread it starts later) all access to
/// `paths` (directories or files). Returns the Landlock ABI version it used. Call it before
/// any thread is started: only the calling thread is restricted.
pub fn deny(paths: &[PathBuf]) -> Result<i64, NotConfined> {
    let abi = abi_version().map_err(NotConfined::Unavailable)?;
    restrict(paths, abi).map_err(NotConfined::Failed)?;
    Ok(abi)
}

/// The Landlock ABI version of this kernel.
fn abi_version() -> io::Result<i64> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call reads no memory
    // and returns the version or -1.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(abi)
}

fn restrict(paths: &[PathBuf], abi: i64) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut denied = Vec::new();
    for path in paths {
        let canonical = match path.canonicalize() {
            // Gone since the server started (a token file removed): nothing to keep from us.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            found => found.with_context(|| {
                format!("cannot find {}, which is to be denied", path.display())
            })?,
        };
        anyhow::ensure!(
            canonical != Path::new("/"),
            "refusing to deny `/`: the worker could open nothing"
        );
        denied.push(canonical);
    }
    let mut handled = ACCESS_FS_ABI1;
    if abi >= 2 {
        handled |= ACCESS_FS_REFER;
    }
    if abi >= 3 {
        handled |= ACCESS_FS_TRUNCATE;
    }
    let attr = RulesetAttr {
        handled_access_fs: handled,
    };
    // SAFETY: `attr` is a live struct of the size passed; the call returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("landlock_create_ruleset");
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    allow_beside(&ruleset, Path::new("/"), &denied, handled)?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error()).context("prctl(PR_SET_NO_NEW_PRIVS)");
    }
    // SAFETY: restricts this thread with the ruleset fd we own; no memory is passed.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) } != 0 {
        return Err(io::Error::last_os_error()).context("landlock_restrict_self");
    }
    Ok(())
}

/// Allows everything in `dir` (an ancestor of something denied) except the ways to what is
/// denied, and goes down those ways.
fn allow_beside(
    ruleset: &OwnedFd,
    dir: &Path,
    denied: &[PathBuf],
    rights: u64,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if denied.contains(&path) {
            continue;
        }
        // What is denied is canonical, so an entry on the way to it is a real directory.
        if denied.iter().any(|d| d.starts_with(&path)) {
            allow_beside(ruleset, &path, denied, rights)?;
            continue;
        }
        allow(ruleset, &path, rights)
            .with_context(|| format!("cannot allow {}", path.display()))?;
    }
    Ok(())
}

/// Adds a rule that allows `rights` beneath `path`. A symbolic link gets none: what it
/// points to is allowed or not where it lies.
fn allow(ruleset: &OwnedFd, path: &Path, rights: u64) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path we own; O_PATH opens without reading anything.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // Gone since it was listed, or not ours to open: it stays denied.
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::EACCES) => Ok(()),
            _ => Err(e),
        };
    }
    // SAFETY: open just returned this descriptor to us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fstat writes into the zeroed struct we own.
    let mode = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat.st_mode & libc::S_IFMT
    };
    let allowed_access = match mode {
        libc::S_IFLNK => return Ok(()),
        libc::S_IFDIR => rights,
        _ => rights & FILE_RIGHTS,
    };
    let attr = PathBeneathAttr {
        allowed_access,
        parent_fd: fd.as_raw_fd(),
    };
    // SAFETY: `attr` is a live packed struct as <linux/landlock.h> declares it; the
    // ruleset and the path's fd are open descriptors we own.
    let added = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if added != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
