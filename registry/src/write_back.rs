//! Write-behind for blobs being downloaded: asks the kernel to start writing a just-written
//! range to disk now, so dirty pages do not pile up and the fsync before the rename has little
//! left to flush. The download then runs at the speed of the slower of network and disk instead
//! of network first, disk after.

use std::fs::File;

/// Starts write-back of `len` bytes at `offset` of `file` without waiting for it. Best effort:
/// the fsync before the rename is the one that counts, so errors are ignored.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "sync_file_range has no safe wrapper in libc, nix or rustix"
)]
pub fn start(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `file`), and
    // sync_file_range reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Elsewhere the kernel's own write-back and the final fsync do the work.
#[cfg(not(target_os = "linux"))]
pub fn start(_file: &File, _offset: u64, _len: u64) {}
