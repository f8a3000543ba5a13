//! Packages written as zips the same way everywhere (`flare build` on a
//! user's machine, a server-side build): sorted entries, fixed times and
//! modes, so the same files give the same digest and nothing is uploaded
//! or stored twice.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Which entries of a tree go into a zip.
pub struct Select<'a> {
    /// Entries (at any depth) whose names it admits; a directory left out
    /// is left out whole.
    pub keep: &'a dyn Fn(&str) -> bool,
    pub links: Links,
}

/// What a symbolic link in the tree becomes (npm links `file:`
/// dependencies into node_modules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Left out.
    Skip,
    /// What it points at, when that is inside the tree (what a sandboxed
    /// build made must not point the server at its own files); else left
    /// out.
    Inside,
    /// What it points at, wherever that is (a user's own project).
    Follow,
}

/// How deep a tree may go: a link to a directory above it is a loop.
const MAX_DEPTH: usize = 64;

/// Zips the files under `root` into `out`, after the in-memory files of
/// `first`. Links and anything else that is not a file are left out.
pub fn zip_dir(root: &Path, out: &Path, first: &[(&str, &[u8])]) -> std::io::Result<()> {
    let select = Select {
        keep: &|_| true,
        links: Links::Skip,
    };
    zip_tree(root, out, first, &select)
}

/// [`zip_dir`] of the entries `select` admits.
pub fn zip_tree(
    root: &Path,
    out: &Path,
    first: &[(&str, &[u8])],
    select: &Select,
) -> std::io::Result<()> {
    fn walk(
        dir: &Path,
        base: &Path,
        real_base: &Path,
        select: &Select,
        depth: usize,
        files: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(std::io::Error::other(format!(
                "{} is more than {MAX_DEPTH} directories deep (a link loop?)",
                dir.strip_prefix(base).unwrap_or(dir).display()
            )));
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !(select.keep)(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let mut kind = entry.file_type()?;
            if kind.is_symlink() {
                let followed = match select.links {
                    Links::Skip => false,
                    Links::Follow => true,
                    Links::Inside => {
                        std::fs::canonicalize(&path).is_ok_and(|real| real.starts_with(real_base))
                    }
                };
                if !followed {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(target) => kind = target.file_type(),
                    // Dangling: nothing to put in.
                    Err(_) => continue,
                }
            }
            if kind.is_dir() {
                walk(&path, base, real_base, select, depth + 1, files)?;
            } else if kind.is_file() {
                files.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
            }
        }
        Ok(())
    }
    let real_root = std::fs::canonicalize(root)?;
    let mut files = Vec::new();
    walk(root, root, &real_root, select, 0, &mut files)?;
    files.sort();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out)?);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, data) in first {
        zip.start_file(*name, options)
            .map_err(std::io::Error::other)?;
        zip.write_all(data)?;
    }
    for file in files {
        let name = file.to_string_lossy().replace('\\', "/");
        zip.start_file(name, options)
            .map_err(std::io::Error::other)?;
        zip.write_all(&std::fs::read(root.join(&file))?)?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}
