//! Refusing a database on a network file system: SQLite's locks (POSIX
//! advisory locks, and the WAL index in shared memory) do not work across
//! the machines of an NFS or SMB share, so two processes could both hold
//! the write lock and a claim could lease a task twice.
//!
//! On Linux the mount table (`/proc/self/mountinfo`) names the file system
//! of the mount holding the database's directory; elsewhere nothing is
//! checked (see docs/sqlite.md).

use std::path::{Path, PathBuf};

/// File system types whose locks do not hold between machines.
const NETWORK: [&str; 14] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
    "gfs2",
    "ocfs2",
    "davfs",
    "fuse.sshfs",
];

/// The network file system type `dir` lies on, if any, per `mountinfo`
/// (the text of `/proc/self/mountinfo`): the mount whose mount point is the
/// longest prefix of `dir` decides.
pub(crate) fn network_fs(mountinfo: &str, dir: &Path) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        // "<id> <parent> <major:minor> <root> <mount point> <options> [optional
        // fields...] - <fs type> <source> <super options>"
        let mut fields = line.split(' ');
        let Some(mount_point) = fields.nth(4) else {
            continue;
        };
        let Some(fs_type) = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
        else {
            continue;
        };
        let mount_point = unescape(mount_point);
        if dir.starts_with(&mount_point) {
            let depth = mount_point.components().count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, fs_type));
            }
        }
    }
    best.map(|(_, fs_type)| fs_type)
        .filter(|fs_type| NETWORK.contains(fs_type))
        .map(str::to_owned)
}

/// A mount point as `mountinfo` writes it: space, tab, newline and
/// backslash as octal escapes.
fn unescape(field: &str) -> PathBuf {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let digits: String = chars.by_ref().take(3).collect();
        match u8::from_str_radix(&digits, 8) {
            Ok(byte) => out.push(char::from(byte)),
            Err(_) => {
                out.push('\\');
                out.push_str(&digits);
            }
        }
    }
    PathBuf::from(out)
}

/// The network file system the database at `location` would lie on, on
/// Linux (`None` elsewhere, or when the mount table cannot be read).
pub(crate) fn network_fs_of(location: &str) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let path = Path::new(location);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    network_fs(&mountinfo, &dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /mnt/share rw,relatime shared:20 - nfs4 fs:/export rw,vers=4.2
41 40 0:36 / /mnt/share/local rw - tmpfs tmpfs rw
42 22 0:37 / /mnt/my\\040files rw - cifs //srv/files rw
";

    #[test]
    fn the_deepest_mount_decides() {
        let at = |p: &str| network_fs(MOUNTINFO, Path::new(p));
        assert_eq!(at("/var/lib/app"), None);
        assert_eq!(at("/mnt/share/app").as_deref(), Some("nfs4"));
        assert_eq!(at("/mnt/share/local/app"), None, "a local mount inside");
        assert_eq!(at("/mnt/my files/app").as_deref(), Some("cifs"));
        assert_eq!(at("/mnt/shared"), None, "a prefix of a name is no parent");
    }

    #[test]
    fn the_local_test_directory_is_not_on_a_network_share() {
        let dir = std::env::temp_dir().join("tasks.db");
        assert_eq!(network_fs_of(&dir.to_string_lossy()), None);
    }
}
