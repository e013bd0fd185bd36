//! A blob read from a file in pieces: the client streams files to the encoder without holding
//! them in memory. Kept out of the codec, which never touches the disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::codec::BlobSource;

/// A file read with positioned reads (`pread`): the blob is never held in memory.
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl BlobSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let read = crate::codec::stream::within(self.len, offset, buf);
        if read.is_empty() {
            return Ok(());
        }
        self.file.read_exact_at(read, offset)
    }
}
