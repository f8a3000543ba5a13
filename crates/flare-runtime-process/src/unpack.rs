//! A package becomes a directory of code: a single source file is copied,
//! a zip or tar.gz archive is unpacked — safely. No entry may leave the
//! directory (absolute paths, `..`), links are refused, and the number of
//! entries (files and directories) and the unpacked size are limited, so a
//! zip bomb is an error, not a full disk. A tar.gz is also limited in what
//! its decoder may produce (headers, long names and PAX records included),
//! so no header can take the server's memory. Errors name archive entries,
//! never paths on the host.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use flare_model::{Error, Result};

/// Limits on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_files: 10_000,
            max_bytes: 256 << 20,
        }
    }
}

/// What a package turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpacked {
    /// One source file, stored under this name.
    File(String),
    Archive,
}

/// An entry's name as an error message shows it: at most 200 characters
/// (a name can be 64 KiB long), control characters escaped.
fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().nth(200).is_some() {
        out.push_str("...");
    }
    out
}

/// Where entry `name` goes under `root`; `None` for the root itself (the
/// `./` entry of `tar czf app.tar.gz -C dir .`).
fn entry_path(root: &Path, name: &str) -> Result<Option<PathBuf>> {
    let relative = Path::new(name);
    let mut out = root.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(Error::invalid(format!(
                    "archive entry \"{}\" points outside the package",
                    shown(name)
                )));
            }
        }
    }
    Ok((out != root).then_some(out))
}

/// Where file entry `name` goes: a file needs a name.
fn file_path(root: &Path, name: &str) -> Result<PathBuf> {
    entry_path(root, name)?
        .ok_or_else(|| Error::invalid(format!("archive entry \"{}\" has no name", shown(name))))
}

struct Budget {
    limits: UnpackLimits,
    files: usize,
    bytes: u64,
}

impl Budget {
    /// Counts one entry, file or directory: inodes cost as much as bytes.
    fn entry(&mut self) -> Result<()> {
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(Error::invalid(format!(
                "archive has more than {} entries (files and directories)",
                self.limits.max_files
            )));
        }
        Ok(())
    }

    /// Copies at most the remaining budget; more is an error.
    fn copy(&mut self, reader: &mut impl Read, path: &Path, name: &str) -> Result<()> {
        let room = self.limits.max_bytes - self.bytes;
        let mut file = std::fs::File::create(path).map_err(|e| conflict(name, &e))?;
        let copied = std::io::copy(&mut reader.take(room + 1), &mut file)
            .map_err(|e| Error::invalid(format!("cannot unpack archive: {e}")))?;
        if copied > room {
            return Err(Error::invalid(format!(
                "archive unpacks to more than {} bytes",
                self.limits.max_bytes
            )));
        }
        self.bytes += copied;
        Ok(())
    }
}

/// An entry that cannot be written where the archive puts it: a file and a
/// directory of the same name, say. The package's fault, so a 400, and the
/// message names the entry, not the host path.
fn conflict(name: &str, e: &std::io::Error) -> Error {
    let why = match e.kind() {
        std::io::ErrorKind::AlreadyExists
        | std::io::ErrorKind::NotADirectory
        | std::io::ErrorKind::IsADirectory => {
            "clashes with another entry (a file and a directory of the same name?)".to_string()
        }
        kind => format!("cannot be unpacked ({kind})"),
    };
    Error::invalid(format!("archive entry \"{}\" {why}", shown(name)))
}

fn mkdirs(path: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| conflict(name, &e))
}

/// A reader that fails once more than `left` bytes have come through: the
/// cap on what a gzip stream may decompress to.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("archive decompresses to more than {} bytes", self.cap),
            ));
        }
        let room = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Room for tar headers, long names and PAX records on top of the files.
const HEADER_ROOM_PER_ENTRY: u64 = 2048;

fn unzip(bytes: &[u8], dest: &Path, budget: &mut Budget) -> Result<()> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::invalid(format!("invalid zip archive: {e}")))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| Error::invalid(format!("invalid zip archive: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| Error::invalid(format!("invalid zip entry name: {e}")))?
            .to_string();
        if entry.is_symlink() {
            return Err(Error::invalid(format!(
                "archive entry \"{}\" is a link; links are not allowed",
                shown(&name)
            )));
        }
        budget.entry()?;
        if entry.is_dir() {
            if let Some(path) = entry_path(dest, &name)? {
                mkdirs(&path, &name)?;
            }
            continue;
        }
        let path = file_path(dest, &name)?;
        if let Some(parent) = path.parent() {
            mkdirs(parent, &name)?;
        }
        budget.copy(&mut entry, &path, &name)?;
    }
    Ok(())
}

/// The largest GNU long name or PAX record an archive may carry. tar reads
/// such an entry whole into memory, so without this bound a small archive
/// of one huge "name" could take hundreds of MiB of the server's memory.
const MAX_METADATA_ENTRY: u64 = 64 << 10;

/// A pass over the archive's headers (tar's raw mode: long names and PAX
/// records are not read, only skipped) that refuses metadata entries past
/// [`MAX_METADATA_ENTRY`] before the real pass would hold one in memory.
fn check_metadata(bytes: &[u8], cap: u64) -> Result<()> {
    let invalid = |e: std::io::Error| Error::invalid(format!("invalid tar.gz archive: {e}"));
    let mut archive = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(bytes),
        left: cap,
        cap,
    });
    let entries = archive.entries().map_err(invalid)?.raw(true);
    for entry in entries {
        let entry = entry.map_err(invalid)?;
        let kind = entry.header().entry_type();
        let metadata = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let size = entry.header().entry_size().map_err(invalid)?;
        if metadata && size > MAX_METADATA_ENTRY {
            return Err(Error::invalid(format!(
                "archive has a long name or PAX record of {size} bytes, over the limit of {MAX_METADATA_ENTRY}"
            )));
        }
    }
    Ok(())
}

fn untar_gz(bytes: &[u8], dest: &Path, budget: &mut Budget) -> Result<()> {
    let cap = budget.limits.max_bytes
        + HEADER_ROOM_PER_ENTRY * u64::try_from(budget.limits.max_files).unwrap_or(u64::MAX);
    check_metadata(bytes, cap)?;
    let mut archive = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(bytes),
        left: cap,
        cap,
    });
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid(format!("invalid tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::invalid(format!("invalid tar.gz archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| Error::invalid(format!("invalid tar.gz entry: {e}")))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        budget.entry()?;
        if kind.is_dir() {
            if let Some(path) = entry_path(dest, &name)? {
                mkdirs(&path, &name)?;
            }
            continue;
        }
        if !kind.is_file() {
            return Err(Error::invalid(format!(
                "archive entry \"{}\" is not a regular file or directory (links are not allowed)",
                shown(&name)
            )));
        }
        let path = file_path(dest, &name)?;
        if let Some(parent) = path.parent() {
            mkdirs(parent, &name)?;
        }
        budget.copy(&mut entry, &path, &name)?;
    }
    Ok(())
}

/// Makes everything readable by the sandbox's unprivileged user.
fn open_up(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::internal(format!("cannot read an unpacked directory: {e}")))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            open_up(&path)?;
        } else {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        }
    }
    Ok(())
}

/// Unpacks `bytes` into `dest` (which must not exist yet). A package that
/// is not a zip or gzip archive is one source file named `file_name`.
pub fn unpack(
    bytes: &[u8],
    dest: &Path,
    file_name: &str,
    limits: UnpackLimits,
) -> Result<Unpacked> {
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::internal(format!("cannot create the package directory: {e}")))?;
    let mut budget = Budget {
        limits,
        files: 0,
        bytes: 0,
    };
    let result = if bytes.starts_with(b"PK\x03\x04") {
        unzip(bytes, dest, &mut budget).map(|()| Unpacked::Archive)
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        untar_gz(bytes, dest, &mut budget).map(|()| Unpacked::Archive)
    } else {
        std::fs::write(dest.join(file_name), bytes)
            .map(|()| Unpacked::File(file_name.to_string()))
            .map_err(|e| Error::internal(format!("cannot write package: {e}")))
    };
    match result {
        Ok(unpacked) => {
            open_up(dest)?;
            Ok(unpacked)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(dest);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            for (name, data) in entries {
                zip.start_file(*name, options).unwrap();
                zip.write_all(data).unwrap();
            }
            zip.finish().unwrap();
        }
        buf.into_inner()
    }

    #[test]
    fn single_files_and_zips_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let out = unpack(
            b"def main(): return 'hi'\n",
            &dir.path().join("a"),
            "main.py",
            UnpackLimits::default(),
        )
        .unwrap();
        assert_eq!(out, Unpacked::File("main.py".into()));
        assert!(dir.path().join("a/main.py").is_file());

        let zip = zip_of(&[
            ("app/__init__.py", b""),
            ("app/handler.py", b"def handler(r): return 'x'"),
        ]);
        assert_eq!(
            unpack(
                &zip,
                &dir.path().join("b"),
                "main.py",
                UnpackLimits::default()
            )
            .unwrap(),
            Unpacked::Archive
        );
        assert!(dir.path().join("b/app/handler.py").is_file());
    }

    #[test]
    fn traversal_bombs_and_too_many_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let evil = zip_of(&[("../evil.py", b"x")]);
        let err = unpack(&evil, &dir.path().join("a"), "m", UnpackLimits::default()).unwrap_err();
        assert!(
            err.message.contains("outside the package"),
            "{}",
            err.message
        );
        assert!(!dir.path().join("evil.py").exists());
        assert!(!dir.path().join("a").exists(), "nothing is left behind");

        let bomb = zip_of(&[("zeros", &vec![0u8; 2 << 20])]);
        let limits = UnpackLimits {
            max_files: 10,
            max_bytes: 1 << 20,
        };
        let err = unpack(&bomb, &dir.path().join("b"), "m", limits).unwrap_err();
        assert!(
            err.message.contains("more than 1048576 bytes"),
            "{}",
            err.message
        );
        assert!(bomb.len() < 20_000, "the bomb is small: {}", bomb.len());

        let many: Vec<(String, &[u8])> = (0..11).map(|i| (format!("f{i}"), &b"x"[..])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let err = unpack(&zip_of(&many), &dir.path().join("c"), "m", limits).unwrap_err();
        assert!(
            err.message.contains("more than 10 entries"),
            "{}",
            err.message
        );
    }

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        build(&mut builder);
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn long_names_and_pax_records_are_bounded_and_names_in_errors_short() {
        for kind in [tar::EntryType::GNULongName, tar::EntryType::XHeader] {
            let bytes = tar_gz(|b| {
                let size = MAX_METADATA_ENTRY + 512;
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(kind);
                header.set_size(size);
                header.set_cksum();
                let data = vec![b'a'; usize::try_from(size).unwrap()];
                b.append(&header, &data[..]).unwrap();
            });
            let dir = tempfile::tempdir().unwrap();
            let err =
                unpack(&bytes, &dir.path().join("a"), "m", UnpackLimits::default()).unwrap_err();
            assert!(
                err.message.contains("long name or PAX record"),
                "{}",
                err.message
            );
            assert!(!dir.path().join("a").exists());
        }
        // A long name within the bound on an entry that is refused: the
        // message shows a short, escaped piece of it.
        let name = format!("{}\x1b", "x".repeat(10_000));
        let bytes = tar_gz(|b| {
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            b.append_link(&mut link, &name, "target").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&bytes, &dir.path().join("a"), "m", UnpackLimits::default()).unwrap_err();
        assert!(
            err.message.contains("not a regular file"),
            "{}",
            err.message
        );
        assert!(err.message.len() < 400, "{}", err.message.len());
    }

    #[test]
    fn a_standard_tarball_with_a_dot_entry_unpacks() {
        // What `tar czf app.tar.gz -C dir .` writes: "./" first.
        let bytes = tar_gz(|b| {
            let mut dir = tar::Header::new_gnu();
            dir.set_entry_type(tar::EntryType::Directory);
            dir.set_size(0);
            dir.set_mode(0o755);
            b.append_data(&mut dir, "./", std::io::empty()).unwrap();
            let mut file = tar::Header::new_gnu();
            file.set_size(2);
            file.set_mode(0o644);
            b.append_data(&mut file, "./main.py", &b"x\n"[..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let out = unpack(&bytes, &dir.path().join("a"), "m", UnpackLimits::default()).unwrap();
        assert_eq!(out, Unpacked::Archive);
        assert!(dir.path().join("a/main.py").is_file());
    }

    #[test]
    fn directories_count_toward_the_entry_limit() {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            for i in 0..11 {
                zip.add_directory(format!("d{i}/"), zip::write::SimpleFileOptions::default())
                    .unwrap();
            }
            zip.finish().unwrap();
        }
        let limits = UnpackLimits {
            max_files: 10,
            max_bytes: 1 << 20,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(buf.get_ref(), &dir.path().join("a"), "m", limits).unwrap_err();
        assert!(
            err.message.contains("more than 10 entries"),
            "{}",
            err.message
        );
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn a_file_and_a_directory_of_one_name_is_a_clear_400() {
        let zip = zip_of(&[("app", b"x"), ("app/main.py", b"y")]);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&zip, &dir.path().join("a"), "m", UnpackLimits::default()).unwrap_err();
        assert_eq!(err.code, flare_model::ErrorCode::InvalidArgument);
        assert!(err.message.contains("\"app/main.py\""), "{}", err.message);
        assert!(
            !err.message.contains(&*dir.path().to_string_lossy()),
            "no host path: {}",
            err.message
        );
    }

    #[test]
    fn tar_long_names_far_past_the_budget_are_refused() {
        // A GNU long name far past the budget: refused at its header,
        // before the tar reader holds it.
        let long = "a/".repeat(1 << 20);
        let bytes = tar_gz(|b| {
            let mut file = tar::Header::new_gnu();
            file.set_size(1);
            file.set_mode(0o644);
            b.append_data(&mut file, format!("{long}f"), &b"x"[..])
                .unwrap();
        });
        let limits = UnpackLimits {
            max_files: 10,
            max_bytes: 1 << 20,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&bytes, &dir.path().join("a"), "m", limits).unwrap_err();
        assert!(
            err.message.contains("long name or PAX record"),
            "{}",
            err.message
        );
    }

    #[test]
    fn tar_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "link", "/etc/shadow")
            .unwrap();
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        let err = unpack(&bytes, &dir.path().join("a"), "m", UnpackLimits::default()).unwrap_err();
        assert!(
            err.message.contains("links are not allowed"),
            "{}",
            err.message
        );
    }
}
