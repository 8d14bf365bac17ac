//! Backups of the policy file (`reset` makes one): named after the time, as UFW names
//! its own (`policy.toml.20261201_064857`), and never written over: a second backup in
//! the same second gets `_2`, then `_3`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::files;

/// Most backups made in one second before giving up.
const MAX_SAME_SECOND: u32 = 1000;

/// Write `bytes` as a new backup of `policy` (in `dir`); returns its path.
pub fn write(dir: &Path, policy: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.{}", policy.display(), utc_stamp(secs));
    for n in 1..=MAX_SAME_SECOND {
        let path = PathBuf::from(if n == 1 {
            base.clone()
        } else {
            format!("{base}_{n}")
        });
        match files::write_new(dir, &path, bytes) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{MAX_SAME_SECOND} backups named {base} exist already"
    )))
}

/// `YYYYMMDD_HHMMSS` in UTC for seconds since the epoch.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}_{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_dates() {
        assert_eq!(utc_stamp(0), "19700101_000000");
        assert_eq!(utc_stamp(951_782_400), "20000229_000000");
        assert_eq!(utc_stamp(1_796_107_737), "20261201_064857");
    }
}
