//! Files in the config directory: created with fixed modes whatever the umask, written
//! atomically (a temporary file opened with `O_EXCL|O_NOFOLLOW`, fsync, rename, fsync of
//! the directory), and a directory others can write to is refused.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the config directory: only its owner (root) may enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file rampart writes there.
pub const FILE_MODE: u32 = 0o600;
/// `O_NOFOLLOW`: never open through a symbolic link planted in the directory.
const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();

/// Create the directory (and its parents) with [`DIR_MODE`], whatever the umask.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Why a path may not hold rampart's policy: another user owns it, or group or others
/// may write to it. None when it is safe.
pub fn unsafe_owner_or_mode(path: &Path) -> io::Result<Option<String>> {
    let meta = fs::metadata(path)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Ok(Some(format!(
            "it belongs to user {}, not to user {me} who runs rampart",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Ok(Some(format!(
            "group or others may write to it (mode {mode:04o})"
        )));
    }
    Ok(None)
}

/// Open (creating it if needed, mode [`FILE_MODE`]) a file that is never a symlink.
pub fn open_private(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    if write {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Write `bytes` to `path` atomically: a fresh temporary file beside it (`O_EXCL`, so a
/// planted file or link is never written through), renamed over `path`. `durable`:
/// also fsync the file before the rename and the directory after it (what must
/// survive a power cut; a process that is killed loses nothing written either way).
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("bad file name"))?;
    let tmp = dir.join(if name.starts_with('.') {
        format!("{name}.tmp")
    } else {
        format!(".{name}.tmp")
    });
    // A temporary file left by a killed command: remove it (never follows a link).
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create `path` with `bytes`, failing if it exists (never overwrites), and sync it.
pub fn write_new(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written?;
    sync_dir(dir)
}

/// Rename (not yet durable: see [`sync_dir`]).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// fsync a file's data.
pub fn sync_file(path: &Path) -> io::Result<()> {
    open_private(path, false)?.sync_data()
}

/// Remove a file if it is there, and sync the directory.
pub fn remove(dir: &Path, path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync a directory, so the renames in it survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Read a file that is never a symlink; None if it does not exist.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match open_private(path, false) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut f, &mut buf)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
